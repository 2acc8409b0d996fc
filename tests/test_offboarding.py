"""Offboarding through the MCP tool: nothing of the tenant is left in the store, the index, its keys or future usage."""

from __future__ import annotations

import pytest
from conftest import call, mcp_session, refused
from sqlalchemy import func, select

from bigrag_mcp.services.collections import load
from bigrag_mcp.services.index import partition_of
from bigrag_mcp.services.keys import authenticate, create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.store.models import Chunk, Document, OutboxEvent
from bigrag_mcp.types import SearchRequest

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]
VEC = [0.0, 1.0, 0.0, 0.0]


async def rows_of(rt: Runtime, tenant: str) -> int:
    async with rt.db.session() as s:
        docs = await s.scalar(select(func.count()).select_from(Document).where(Document.tenant == tenant))
        chunks = await s.scalar(select(func.count()).select_from(Chunk).where(Chunk.tenant == tenant))
    return int(docs or 0) + int(chunks or 0)


async def test_shared_collection_offboarding_removes_every_trace(rt: Runtime, admin) -> None:
    await call(admin, "collections_create", collection="shared", tenant_field="tenant_id", dimension=4)
    await call(admin, "webhooks_create", url="https://hooks.example.test/offboarded", events=["tenant.offboarded"])
    for tenant in ("acme", "globex"):
        for i in range(3):
            await call(admin, "documents_upload", collection="shared", text=f"{tenant} fact number {i}", metadata={"tenant_id": tenant})
        await call(admin, "vectors_upsert", collection="shared", vectors=[{"id": "v1", "vector": VEC, "text": tenant, "metadata": {"tenant_id": tenant}}])
    _, acme_key = await create_key(rt.db, name="acme", scopes=["query:read"], collection="shared", tenant="acme")
    _, globex_key = await create_key(rt.db, name="globex", scopes=["query:read"], collection="shared", tenant="globex")

    result = await call(admin, "tenants_offboard", collection="shared", tenant="acme")
    assert (result["documents_removed"], result["vectors_removed"], result["keys_revoked"]) == (3, 4, 1)
    assert result["pattern"] == "shared_collection" and not result["already_offboarded"]

    assert await rows_of(rt, "acme") == 0 and await rows_of(rt, "globex") == 3 + 4  # documents + chunks
    shared = await load(rt, "shared")
    leftover = await rt.backend.search(partition_of(shared, "acme"), SearchRequest(top_k=50, vector=VEC))
    assert leftover == []  # the index partition is gone, not only the store rows
    assert await authenticate(rt.db, acme_key) is None and await authenticate(rt.db, globex_key) is not None
    assert (await call(admin, "query", collection="shared", query="fact", filters={"tenant_id": "acme"}))["results"] == []
    assert len((await call(admin, "query", collection="shared", query="fact", top_k=50, filters={"tenant_id": "globex"}))["results"]) == 4

    async with rt.db.session() as s:
        hooks = [e.payload for e in await s.scalars(select(OutboxEvent).where(OutboxEvent.kind == "webhook"))]
    assert [(h["type"], h["data"]["tenant"]) for h in hooks] == [("tenant.offboarded", "acme")]
    audit = await call(admin, "audit_list", action="tenant.offboarded")
    assert [(r["resource_id"], r["tenant"]) for r in audit["rows"]] == [("acme", "acme")]

    again = await call(admin, "tenants_offboard", collection="shared", tenant="acme")
    assert again["already_offboarded"] and again["documents_removed"] == again["keys_revoked"] == 0
    usage = await call(admin, "usage_get", collection="shared", tenant="acme")
    before = usage["queries_total"]
    await call(admin, "query", collection="shared", query="fact", filters={"tenant_id": "globex"})
    assert (await call(admin, "usage_get", collection="shared", tenant="acme"))["queries_total"] == before


async def test_collection_per_tenant_offboarding_drops_the_collection_and_its_keys(rt: Runtime, admin) -> None:
    await call(admin, "collections_create", collection="tenant_acme")
    await call(admin, "documents_upload", collection="tenant_acme", text="acme private notes")
    _, key = await create_key(rt.db, name="acme", scopes=["query:read", "collection:read"], collection="tenant_acme")
    async with mcp_session(rt, key) as acme:
        assert (await call(acme, "query", collection="tenant_acme", query="notes"))["results"]
        result = await call(admin, "tenants_offboard", collection="tenant_acme", tenant="acme")
        assert result["collection_dropped"] and result["keys_revoked"] == 1 and result["documents_removed"] == 1
        assert (await refused(acme, "query", collection="tenant_acme", query="notes")).startswith("permission_denied")
    assert await rows_of(rt, "") == 0
    assert (await refused(admin, "collections_get", collection="tenant_acme")).startswith("not_found")
    assert (await call(admin, "tenants_offboard", collection="tenant_acme", tenant="acme"))["already_offboarded"]
