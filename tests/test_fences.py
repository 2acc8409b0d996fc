"""Offboarding fences the tenant: a write in flight when it runs does not commit, later writes are refused until re-admitted."""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from conftest import VEC, Gate, call, mcp_session, refused, server_env
from sqlalchemy import func, select

from bigrag_mcp.services import documents
from bigrag_mcp.services.collections import load
from bigrag_mcp.services.fences import list_fences, readmit
from bigrag_mcp.services.index import partition_of
from bigrag_mcp.services.keys import create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings
from bigrag_mcp.store.models import AuditEntry, Chunk, Document
from bigrag_mcp.types import SearchRequest

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]


async def rows(rt: Runtime, tenant: str) -> int:
    async with rt.db.session() as s:
        docs = await s.scalar(select(func.count()).select_from(Document).where(Document.tenant == tenant))
        chunks = await s.scalar(select(func.count()).select_from(Chunk).where(Chunk.tenant == tenant))
    return int(docs or 0) + int(chunks or 0)


async def upload_across_offboarding(rt: Runtime, gate: Gate, key: str, collection: str, tenant: str, **upload: Any) -> str:
    """Start an upload, hold it inside its embedding step, offboard the tenant, release it; the upload's error text."""
    outcome: dict[str, Any] = {}

    async def uploading() -> None:
        async with mcp_session(rt, key) as uploader:
            outcome["result"] = await uploader.call_tool("documents_upload", {"collection": collection, **upload})

    gate.armed = True
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(uploading)
        await gate.entered.wait()
        async with mcp_session(rt, key) as admin:
            off = await call(admin, "tenants_offboard", collection=collection, tenant=tenant)
        assert not off["already_offboarded"]
        gate.release.set()
    gate.armed = False
    result = outcome["result"]
    assert result.is_error, f"the upload committed after offboarding: {result.structured_content}"
    return str(result.content[0].text)


@pytest.fixture
async def gated_admin(gated: tuple[Runtime, Gate]) -> AsyncIterator[tuple[Any, str]]:
    """An admin MCP session on the gated runtime, and its key."""
    rt, _ = gated
    _, secret = await create_key(rt.db, name="admin", scopes=["*:*"])
    async with mcp_session(rt, secret) as client:
        yield client, secret


async def test_upload_in_flight_in_a_shared_collection_does_not_survive_offboarding(
    gated: tuple[Runtime, Gate], gated_admin: tuple[Any, str], settings: Settings
) -> None:
    rt, gate = gated
    admin, key = gated_admin
    await call(admin, "collections_create", collection="shared", tenant_field="tenant_id", embedding_provider="gated")
    await call(admin, "documents_upload", collection="shared", text="acme early notes", metadata={"tenant_id": "acme"})
    await call(admin, "documents_upload", collection="shared", text="globex notes", metadata={"tenant_id": "globex"})

    error = await upload_across_offboarding(
        rt, gate, key, "shared", "acme", text="acme late notes", metadata={"tenant_id": "acme"}
    )
    assert error.startswith("permission_denied: tenant 'acme' of collection 'shared' was offboarded"), error
    assert "bigrag-mcp tenants readmit shared acme" in error
    assert await rows(rt, "acme") == 0  # neither the early document nor the late one
    shared = await load(rt, "shared")
    assert await rt.backend.search(partition_of(shared, "acme"), SearchRequest(top_k=10, vector=VEC)) == []

    calls = gate.calls
    later = await refused(admin, "documents_upload", collection="shared", text="acme again", metadata={"tenant_id": "acme"})
    assert later.startswith("permission_denied") and gate.calls == calls  # refused before any embedding
    upsert = await refused(admin, "vectors_upsert", collection="shared", vectors=[{"id": "v", "vector": VEC, "metadata": {"tenant_id": "acme"}}])
    assert upsert.startswith("permission_denied")
    assert await rows(rt, "acme") == 0
    await call(admin, "documents_upload", collection="shared", text="globex more", metadata={"tenant_id": "globex"})

    assert [(f.collection, f.tenant, f.whole_collection) for f in await list_fences(rt)] == [("shared", "acme", False)]
    done = await anyio.run_process(
        [sys.executable, "-m", "bigrag_mcp", "tenants", "readmit", "shared", "acme"], env=server_env(settings), check=True
    )
    assert json.loads(done.stdout) == {"collection": "shared", "tenant": "acme", "readmitted": 1}
    async with rt.db.session() as s:
        audited = list(await s.scalars(select(AuditEntry.action).where(AuditEntry.resource_id == "acme")))
    assert audited[-2:] == ["tenant.offboarded", "tenant.readmitted"]
    await call(admin, "documents_upload", collection="shared", text="acme is back", metadata={"tenant_id": "acme"})
    assert await rows(rt, "acme") == 2


async def test_upload_in_flight_to_a_tenant_collection_does_not_survive_offboarding(
    gated: tuple[Runtime, Gate], gated_admin: tuple[Any, str]
) -> None:
    rt, gate = gated
    admin, key = gated_admin
    await call(admin, "collections_create", collection="tenant_acme", embedding_provider="gated")
    error = await upload_across_offboarding(rt, gate, key, "tenant_acme", "acme", text="acme private notes")
    assert error.startswith("permission_denied: tenant 'acme' of collection 'tenant_acme' was offboarded"), error
    async with rt.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(Document)) == 0
        assert await s.scalar(select(func.count()).select_from(Chunk)) == 0

    await call(admin, "collections_create", collection="tenant_acme", embedding_provider="gated")  # the name is free again
    assert (await refused(admin, "documents_upload", collection="tenant_acme", text="x")).startswith("permission_denied")
    assert (await readmit(rt, "tenant_acme", "acme")).readmitted == 1
    await call(admin, "documents_upload", collection="tenant_acme", text="a new customer's notes")


async def test_the_fence_is_checked_again_inside_the_write_transaction(
    gated: tuple[Runtime, Gate], gated_admin: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offboarding commits after the upload's write began (past the fence check at its start): it still fails."""
    rt, _ = gated
    admin, key = gated_admin
    await call(admin, "collections_create", collection="shared", tenant_field="tenant_id", embedding_provider="gated")
    inside, release = anyio.Event(), anyio.Event()
    real, calls = documents._existing, []

    async def held(*args: Any) -> Any:
        """The upload's look for the same content inside its write runs after the write's fence check (the look
        before the work is on the fast path, or in a session of its own on Postgres)."""
        caller = inspect.currentframe().f_back  # type: ignore[union-attr]
        calls.append(caller.f_code.co_name if caller else None)
        found = await real(*args)
        if calls[-1] == "_write":
            inside.set()
            await release.wait()
        return found

    monkeypatch.setattr(documents, "_existing", held)
    outcome: dict[str, Any] = {}

    async def uploading() -> None:
        async with mcp_session(rt, key) as uploader:
            outcome["result"] = await uploader.call_tool(
                "documents_upload", {"collection": "shared", "text": "acme late notes", "metadata": {"tenant_id": "acme"}}
            )

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(uploading)
        await inside.wait()
        async with mcp_session(rt, key) as other:
            await call(other, "tenants_offboard", collection="shared", tenant="acme")
        release.set()
    assert outcome["result"].is_error and outcome["result"].content[0].text.startswith("permission_denied")
    assert await rows(rt, "acme") == 0
