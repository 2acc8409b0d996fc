"""Deleting a collection revokes the keys pinned to it, so they never read the next collection that takes the name."""

from __future__ import annotations

import pytest
from conftest import call, mcp_session, refused
from sqlalchemy import select

from bigrag_mcp.services.keys import authenticate, create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.store.models import OutboxEvent

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]


async def test_deleting_a_collection_revokes_its_pinned_keys(rt: Runtime, admin) -> None:
    await call(admin, "webhooks_create", url="https://hooks.example.test/deleted", events=["collection.deleted"])
    await call(admin, "collections_create", collection="support")
    await call(admin, "collections_create", collection="other")
    await call(admin, "documents_upload", collection="support", text="the old customer's notes")
    _, pinned = await create_key(rt.db, name="old customer", scopes=["query:read", "collection:read"], collection="support")
    _, elsewhere = await create_key(rt.db, name="other customer", scopes=["query:read"], collection="other")
    async with mcp_session(rt, pinned) as old:
        assert (await call(old, "query", collection="support", query="notes"))["results"]
        await call(admin, "collections_delete", collection="support")
        await call(admin, "collections_create", collection="support")
        await call(admin, "documents_upload", collection="support", text="the new customer's secret plans")
        assert (await refused(old, "query", collection="support", query="plans")).startswith("permission_denied")
        assert (await refused(old, "collections_get", collection="support")).startswith("permission_denied")
    assert await authenticate(rt.db, pinned) is None
    assert await authenticate(rt.db, elsewhere) is not None  # keys pinned to other collections keep working

    async with rt.db.session() as s:
        hooks = [e.payload for e in await s.scalars(select(OutboxEvent).where(OutboxEvent.kind == "webhook"))]
    assert [(h["type"], h["data"]["collection"], h["data"]["keys_revoked"]) for h in hooks] == [("collection.deleted", "support", 1)]
    audit = await call(admin, "audit_list", action="collection.deleted")
    assert [r["metadata"]["keys_revoked"] for r in audit["rows"]] == [1]
