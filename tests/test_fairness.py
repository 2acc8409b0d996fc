"""One tenant cannot starve the others: writes are bounded per key and per tenant, CPU work runs off the event loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from conftest import Gate, call, mcp_session, refused

from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.services import documents
from bigrag_mcp.services.keys import create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings

pytestmark = pytest.mark.anyio
SCOPES = ["document:upload", "vector:write", "query:read"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """One write at a time per key and per tenant."""
    return settings.model_copy(update={"write_concurrency": 1})


async def test_writes_are_bounded_per_key_and_per_tenant_and_others_keep_flowing(gated: tuple[Runtime, Gate]) -> None:
    rt, gate = gated
    _, admin_key = await create_key(rt.db, name="admin", scopes=["*:*"])
    async with mcp_session(rt, admin_key) as admin:
        await call(admin, "collections_create", collection="shared", tenant_field="tenant_id", embedding_provider="gated")
    _, app = await create_key(rt.db, name="app", scopes=SCOPES, collection="shared")  # writes for any tenant
    _, acme_too = await create_key(rt.db, name="acme", scopes=SCOPES, collection="shared", tenant="acme")
    _, globex = await create_key(rt.db, name="globex", scopes=SCOPES, collection="shared", tenant="globex")
    gate.armed, gate.marker = True, "HOLD"
    held: dict[str, Any] = {}

    async def hold() -> None:
        async with mcp_session(rt, app) as client:
            held["result"] = await call(
                client, "documents_upload", collection="shared", text="HOLD acme's big upload", metadata={"tenant_id": "acme"}
            )

    async with mcp_session(rt, app) as a1, mcp_session(rt, acme_too) as a2, mcp_session(rt, globex) as g:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(hold)
            await gate.entered.wait()
            busy_key = await refused(a1, "documents_upload", collection="shared", text="initech", metadata={"tenant_id": "initech"})
            assert busy_key.startswith("limit_exceeded: this API key already has 1 writes in progress")
            busy_tenant = await refused(a2, "vectors_upsert", collection="shared", vectors=[{"id": "v", "vector": [1, 0, 0, 0], "metadata": {}}])
            assert busy_tenant.startswith("limit_exceeded: tenant 'acme' of collection 'shared' already has 1 writes")
            await call(g, "documents_upload", collection="shared", text="globex flows")  # another tenant is not held up
            await call(g, "query", collection="shared", query="globex")
            gate.release.set()
        assert held["result"]["document"]["chunk_count"] == 1
        await call(a1, "documents_upload", collection="shared", text="initech", metadata={"tenant_id": "initech"})  # free again


class ThreadProbe:
    """A document loader that notes which thread it runs on."""

    def __init__(self) -> None:
        self.threads: dict[str, bool] = {}

    def note(self, step: str) -> None:
        self.threads[step] = threading.current_thread() is threading.main_thread()

    @hookimpl
    def register_document_loaders(self, register: Callable[..., None]) -> None:
        def load(data: bytes, *, filename: str | None, mime_type: str) -> str:
            self.note("loading")
            return data.decode()

        load.in_process = True  # type: ignore[attr-defined]  # a closure: it runs in a worker thread, not the loader host
        register("text/x-probe", load)


async def test_loading_chunking_and_schema_validation_run_off_the_event_loop(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = ThreadProbe()
    for step, name in (("chunking", "chunk_text"), ("schema validation", "check_metadata")):
        real = getattr(documents, name)

        def noted(*args: Any, _real: Callable[..., Any] = real, _step: str = step, **kwargs: Any) -> Any:
            probe.note(_step)
            return _real(*args, **kwargs)

        monkeypatch.setattr(documents, name, noted)
    rt = await Runtime.open(settings, plugins=(probe,))
    try:
        _, key = await create_key(rt.db, name="admin", scopes=["*:*"])
        async with mcp_session(rt, key) as admin:
            await call(admin, "collections_create", collection="c", metadata_schema={"type": "object"})
            await call(admin, "documents_upload", collection="c", content_base64="aGVsbG8gd29ybGQ=", mime_type="text/x-probe")
    finally:
        await rt.close()
    assert probe.threads == {"loading": False, "chunking": False, "schema validation": False}  # none on the loop's thread
