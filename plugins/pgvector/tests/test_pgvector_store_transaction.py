"""Store and index in one Postgres database: the index rows are written in the store's own transaction, so a
write, delete, offboarding or collection delete that fails anywhere leaves both as they were, with no repair."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import pytest
from bigrag_pgvector import PgvectorBackend, PgvectorSettings
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from bigrag_mcp.errors import NotFound
from bigrag_mcp.services import collections, documents, offboarding, search
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.store.models import Chunk, Document

pytestmark = pytest.mark.anyio


class Boom(Exception):
    """The injected failure."""


async def index_rows(rt: Runtime, session: AsyncSession | None = None) -> list[tuple[str, str]]:
    """(tenant, id) of every vector row: as the store's transaction `session` sees them, else as committed."""
    backend: PgvectorBackend = rt.backend  # type: ignore[assignment]
    async with AsyncExitStack() as stack:
        conn = await session.connection() if session else await stack.enter_async_context(backend._engine.connect())
        tables = await conn.scalars(
            text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                "AND table_name LIKE 'bigrag_pgvector_cosine_%'"
            )
        )
        rows: list[tuple[str, str]] = []
        for table in tables.all():
            rows += [(t, i) for t, i in await conn.execute(text(f"SELECT tenant, id FROM public.{table}"))]
    return sorted(rows)


async def store_rows(rt: Runtime) -> tuple[int, int]:
    """(documents, chunks) the store holds."""
    async with rt.db.session() as session:
        docs = await session.scalar(select(func.count()).select_from(Document))
        chunks = await session.scalar(select(func.count()).select_from(Chunk))
    return int(docs or 0), int(chunks or 0)


def fail_before_commit(rt: Runtime, monkeypatch: pytest.MonkeyPatch, target: Any, name: str) -> dict[str, Any]:
    """Make `target.name(session, ...)`, a step after the index write inside the store transaction, note the index
    rows as that transaction sees them and as committed, then fail. The result also collects repair attempts."""
    original = getattr(target, name)
    seen: dict[str, Any] = {"repairs": []}

    async def failing(session: AsyncSession, *args: Any, **kwargs: Any) -> Any:
        await original(session, *args, **kwargs)
        seen["inside"], seen["outside"] = await index_rows(rt, session), await index_rows(rt)
        raise Boom

    async def repair(*args: Any) -> None:
        seen["repairs"].append(args)

    monkeypatch.setattr(target, name, failing)
    monkeypatch.setattr(rt.index, "_repair", repair)
    return seen


async def shared(rt: Runtime) -> None:
    await collections.create(rt, name="notes", tenant_field="tenant_id")
    await documents.upload(rt, "notes", text="Acme refunds take five business days.", metadata={"tenant_id": "acme"})


async def test_the_backend_joins_only_a_store_in_its_own_database(
    shared_rt: Runtime, postgres_url: str, store_url: str
) -> None:
    backend: PgvectorBackend = shared_rt.backend  # type: ignore[assignment]
    async with shared_rt.db.engine.connect() as conn:
        view = backend.joined(conn)
        assert isinstance(view, PgvectorBackend) and view._store is conn and backend._store is None
    other = create_async_engine(PgvectorSettings(url=postgres_url).async_url())
    sqlite = create_async_engine("sqlite+aiosqlite://")
    try:
        for engine in (other, sqlite):
            async with engine.connect() as conn:
                assert backend.joined(conn) is None
    finally:
        await other.dispose()
        await sqlite.dispose()


async def test_an_upload_failing_after_the_index_write_leaves_neither(
    shared_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await shared(shared_rt)
    before, stored = await index_rows(shared_rt), await store_rows(shared_rt)
    seen = fail_before_commit(shared_rt, monkeypatch, shared_rt.index, "record")
    with pytest.raises(Boom):
        await documents.upload(shared_rt, "notes", text="Globex refunds take thirty days.", metadata={"tenant_id": "globex"})
    assert [t for t, _ in seen["inside"]] == ["acme", "globex"] and seen["outside"] == before  # written, not committed
    assert await index_rows(shared_rt) == before and await store_rows(shared_rt) == stored
    assert seen["repairs"] == []
    monkeypatch.undo()
    await documents.upload(shared_rt, "notes", text="Globex refunds take thirty days.", metadata={"tenant_id": "globex"})
    assert {t for t, _ in await index_rows(shared_rt)} == {"acme", "globex"}
    hits = await search.search(shared_rt, "notes", "refunds", filters={"tenant_id": "globex"})
    assert [r.text for r in hits.results] == ["Globex refunds take thirty days."]


async def test_a_failing_index_write_leaves_no_store_rows(shared_rt: Runtime) -> None:
    await shared(shared_rt)
    before, stored = await index_rows(shared_rt), await store_rows(shared_rt)
    async with shared_rt.db.session() as session:
        table = await session.scalar(
            text("SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'bigrag_pgvector_cosine_%'")
        )
        await session.execute(
            text(
                "CREATE FUNCTION public.refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'index write refused'; END $$"
            )
        )
        await session.execute(
            text(f"CREATE TRIGGER refuse BEFORE INSERT ON public.{table} FOR EACH ROW EXECUTE FUNCTION public.refuse()")
        )
    with pytest.raises(DBAPIError, match="index write refused"):
        await documents.upload(shared_rt, "notes", text="Globex refunds take thirty days.", metadata={"tenant_id": "globex"})
    assert await index_rows(shared_rt) == before and await store_rows(shared_rt) == stored


async def test_a_delete_failing_before_commit_keeps_both(shared_rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    await shared(shared_rt)
    doc = (await documents.list_page(shared_rt, "notes", tenant="acme")).documents[0]
    before, stored = await index_rows(shared_rt), await store_rows(shared_rt)
    seen = fail_before_commit(shared_rt, monkeypatch, shared_rt.index, "record")
    with pytest.raises(Boom):
        await documents.delete_many(shared_rt, "notes", [doc.id], tenant="acme")
    assert seen["inside"] == [] and seen["outside"] == before and seen["repairs"] == []
    assert await index_rows(shared_rt) == before and await store_rows(shared_rt) == stored
    monkeypatch.undo()
    await documents.delete_many(shared_rt, "notes", [doc.id], tenant="acme")
    assert await index_rows(shared_rt) == [] and await store_rows(shared_rt) == (0, 0)


async def test_offboarding_failing_before_commit_keeps_both(shared_rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    await shared(shared_rt)
    await documents.upload(shared_rt, "notes", text="Globex refunds take thirty days.", metadata={"tenant_id": "globex"})
    before, stored = await index_rows(shared_rt), await store_rows(shared_rt)
    seen = fail_before_commit(shared_rt, monkeypatch, shared_rt.limits, "forget")  # after the index rows went
    with pytest.raises(Boom):
        await offboarding.offboard(shared_rt, "notes", "acme")
    assert [t for t, _ in seen["inside"]] == ["globex"] and seen["outside"] == before
    assert await index_rows(shared_rt) == before and await store_rows(shared_rt) == stored
    monkeypatch.undo()
    done = await offboarding.offboard(shared_rt, "notes", "acme")
    assert done.vectors_removed == 1
    assert {t for t, _ in await index_rows(shared_rt)} == {"globex"} and await store_rows(shared_rt) == (1, 1)


async def test_a_collection_delete_failing_before_commit_keeps_both(
    shared_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await shared(shared_rt)
    before, stored = await index_rows(shared_rt), await store_rows(shared_rt)
    seen = fail_before_commit(shared_rt, monkeypatch, shared_rt.ledger, "record")  # the audit entry follows the drop
    with pytest.raises(Boom):
        await collections.delete(shared_rt, "notes")
    assert seen["inside"] == [] and seen["outside"] == before
    assert await index_rows(shared_rt) == before and await store_rows(shared_rt) == stored
    monkeypatch.undo()
    await collections.delete(shared_rt, "notes")
    assert await index_rows(shared_rt) == [] and await store_rows(shared_rt) == (0, 0)
    with pytest.raises(NotFound):
        await collections.get(shared_rt, "notes")


async def lock_waiters(rt: Runtime) -> int:
    """How many sessions of the store's database wait for a lock."""
    async with rt.db.engine.connect() as conn:
        found = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return int(found or 0)


async def test_a_write_and_an_offboarding_of_one_tenant_queue_instead_of_deadlocking(
    shared_rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await shared(shared_rt)
    original = shared_rt.index.record
    written, resume = asyncio.Event(), asyncio.Event()

    async def paused(*args: Any) -> int:
        written.set()  # the index rows are written and locked; the store's log entry is next
        await resume.wait()
        return await original(*args)

    monkeypatch.setattr(shared_rt.index, "record", paused)
    upload = asyncio.create_task(
        documents.upload(shared_rt, "notes", text="Acme invoices are due monthly.", metadata={"tenant_id": "acme"})
    )
    await written.wait()
    monkeypatch.setattr(shared_rt.index, "record", original)
    offboard = asyncio.create_task(offboarding.offboard(shared_rt, "notes", "acme"))
    while not await lock_waiters(shared_rt):  # the offboarding waits for the write's transaction
        assert not offboard.done(), offboard
        await asyncio.sleep(0.01)
    resume.set()
    await upload
    done = await offboard
    assert done.documents_removed == 2  # the write committed first, so the offboarding removed it too
    assert await index_rows(shared_rt) == [] and await store_rows(shared_rt) == (0, 0)
