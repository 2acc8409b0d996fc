"""The per-call path: how many SQL statements a query reads, and caches that still see every change at once."""

from __future__ import annotations

import asyncio
import contextvars
from datetime import UTC, datetime, timedelta

import pytest
from conftest import ALL, call, mcp_session, refused
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.policy import Principal
from bigrag_mcp.services import collections, documents, lookups, search
from bigrag_mcp.services.keys import KeyState, create_key, revoke_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings
from bigrag_mcp.store.models import ApiKey

pytestmark = pytest.mark.anyio
MAX_STATEMENTS = 5


async def seeded(rt: Runtime) -> None:
    await collections.create(rt, name="docs", tenant_field="tenant_id")
    for i in range(3):
        await documents.upload(rt, "docs", text=f"alpha note {i}", metadata={"tenant_id": "acme"})


async def test_a_service_query_reads_at_most_five_statements(rt: Runtime, statements: list[str]) -> None:
    await seeded(rt)
    await search.search(rt, "docs", "alpha", filters={"tenant_id": "acme"})  # loads the partition
    statements.clear()
    result = await search.search(rt, "docs", "alpha", filters={"tenant_id": "acme"})
    assert len(result.results) == 3
    assert len(statements) <= MAX_STATEMENTS, statements
    assert sum(s.lstrip().upper().startswith("INSERT INTO USAGE_EVENTS") for s in statements) == 1


async def test_an_mcp_query_with_its_key_check_reads_at_most_five_statements(
    rt: Runtime, admin_key: str, statements: list[str]
) -> None:
    await seeded(rt)
    async with mcp_session(rt, admin_key) as client:
        await call(client, "query", collection="docs", query="alpha", filters={"tenant_id": "acme"})
        statements.clear()
        answer = await call(client, "query", collection="docs", query="alpha", filters={"tenant_id": "acme"})
        assert len(answer["results"]) == 3
        assert len(statements) <= MAX_STATEMENTS, statements
        revision_reads = [s for s in statements if "store_revision" in s.lower() and s.lstrip().upper().startswith("SELECT")]
        assert len(revision_reads) == 1, statements  # the gate's read serves the key, the policy and the service
        statements.clear()
        await client.list_tools()
        assert len(statements) == 1, statements  # the revision; the key comes from the cache


async def test_revocation_in_one_process_stops_the_key_on_the_next_call_in_another(rt: Runtime, settings: Settings) -> None:
    other = await Runtime.open(settings)
    try:
        await seeded(rt)
        info, secret = await create_key(rt.db, name="reader", scopes=["query:read"])
        async with mcp_session(other, secret) as client:
            await call(client, "query", collection="docs", query="alpha", filters={"tenant_id": "acme"})
            await call(client, "query", collection="docs", query="alpha", filters={"tenant_id": "acme"})  # cached now
            await revoke_key(rt.db, info.id)
            assert (await refused(client, "query", collection="docs", query="alpha", filters={"tenant_id": "acme"})).startswith(
                "permission_denied"
            )
    finally:
        await other.close()


async def test_a_collection_recreated_by_another_process_is_seen_on_the_next_call(rt: Runtime, settings: Settings) -> None:
    other = await Runtime.open(settings)
    try:
        await seeded(rt)
        assert len((await search.search(other, "docs", "alpha", filters={"tenant_id": "acme"})).results) == 3
        await collections.delete(rt, "docs")
        with pytest.raises(Exception, match="not_found"):
            await search.search(other, "docs", "alpha", filters={"tenant_id": "acme"})
        await collections.create(rt, name="docs")  # no tenant field this time
        await documents.upload(rt, "docs", text="alpha again")
        rows = (await search.search(other, "docs", "alpha")).results
        assert [r.text for r in rows] == ["alpha again"]
    finally:
        await other.close()


async def test_bulk_key_updates_bump_the_revision_and_last_used_does_not(rt: Runtime) -> None:
    info, secret = await create_key(rt.db, name="k", scopes=ALL)
    start = datetime.now(UTC)
    assert await rt.lookups.principal(secret, now=start) is not None  # writes last_used_at
    before = await rt.lookups.read_revision()
    assert await rt.lookups.principal(secret, now=start + timedelta(minutes=2)) is not None  # and again
    assert await rt.lookups.read_revision() == before
    async with rt.db.session() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == info.id).values(revoked_at=start))
    assert await rt.lookups.read_revision() == before + 1
    assert await rt.lookups.principal(secret, now=start + timedelta(minutes=3)) is None


async def test_last_used_is_written_at_most_once_a_minute_from_the_cache(
    rt: Runtime, admin_key: str, statements: list[str]
) -> None:
    start = datetime.now(UTC) + timedelta(hours=1)
    writes = lambda: [s for s in statements if s.lstrip().upper().startswith("UPDATE API_KEYS")]
    await rt.lookups.principal(admin_key, now=start)
    assert len(writes()) == 1
    await rt.lookups.principal(admin_key, now=start + timedelta(seconds=59))
    assert len(writes()) == 1
    await rt.lookups.principal(admin_key, now=start + timedelta(seconds=61))
    assert len(writes()) == 2


async def test_an_expired_cached_key_is_refused_by_the_clock(rt: Runtime) -> None:
    expires = datetime.now(UTC) + timedelta(days=1)
    _, secret = await create_key(rt.db, name="k", scopes=ALL, expires_at=expires)
    assert await rt.lookups.principal(secret, now=expires - timedelta(seconds=1)) is not None
    assert await rt.lookups.principal(secret, now=expires) is None


async def test_a_rolled_back_key_change_leaves_the_revision(rt: Runtime) -> None:
    before = await rt.lookups.read_revision()
    with pytest.raises(RuntimeError):
        async with rt.db.session() as session:
            await session.execute(update(ApiKey).values(name="x"))
            raise RuntimeError("abort")
    assert await rt.lookups.read_revision() == before


async def test_served_tool_listings_follow_the_key_on_every_call(rt: Runtime) -> None:
    info, secret = await create_key(rt.db, name="reader", scopes=["query:read", "collection:read"])
    async with mcp_session(rt, secret) as client:
        first = {t.name for t in (await client.list_tools()).tools}
        assert {"query", "collections_list"} <= first and "documents_upload" not in first
        assert {t.name for t in (await client.list_tools()).tools} == first  # served from the serialized listing
        await revoke_key(rt.db, info.id)
        assert (await client.list_tools()).tools == []


async def test_a_lookup_that_raced_a_revocation_does_not_cache_what_it_read(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    info, secret = await create_key(rt.db, name="k", scopes=ALL)
    original = lookups.key_state
    raced: list[Principal | None] = []

    async def read_then_revoke(session: AsyncSession, presented: str) -> KeyState | None:
        state = await original(session, presented)  # the row as it was before the revocation
        if not raced:
            raced.append(None)
            await revoke_key(rt.db, info.id)
            later = asyncio.get_running_loop().create_task(rt.lookups.principal(secret), context=contextvars.Context())
            raced[0] = await later  # a call that starts after the revocation
        return state

    monkeypatch.setattr(lookups, "key_state", read_then_revoke)
    async with rt.lookups.call():
        assert await rt.lookups.principal(secret) is not None  # it started before the revocation
    assert raced == [None]  # (set by the later call's answer)
    assert await rt.lookups.principal(secret) is None  # the stale row was not cached
