"""The SQLite fast path's prepared statements: the same rows and stored values as SQLAlchemy, the async path as
fallback; a query's usage row never makes it wait for another writer."""

from __future__ import annotations

import signal
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import anyio
import pytest
from conftest import server_env
from sqlalchemy import bindparam, func, select

from bigrag_mcp.limits.fastpath import Prepared, read
from bigrag_mcp.services import admin, collections, documents, ledger, search
from bigrag_mcp.services.ledger import Activity
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.services.usage import usage_row
from bigrag_mcp.settings import Settings
from bigrag_mcp.store.models import Chunk, Collection, UsageEvent, bulk_insert

pytestmark = pytest.mark.anyio


async def seeded(rt: Runtime) -> None:
    await collections.create(rt, name="docs", tenant_field="tenant_id")
    await documents.upload(rt, "docs", text="alpha one", metadata={"tenant_id": "acme", "n": 1, "tags": ["x"]})
    await documents.upload(rt, "docs", text="alpha two", metadata={"tenant_id": "globex"}, filename="two.md")


async def test_a_prepared_read_returns_what_the_statement_returns_through_sqlalchemy(rt: Runtime) -> None:
    await seeded(rt)
    prepared = Prepared(
        select(Chunk.record_id, Chunk.text, Chunk.chunk_index, Chunk.page)
        .where(Chunk.tenant == bindparam("tenant"), Chunk.chunk_index == 0)
        .order_by(Chunk.record_id)
    )
    assert rt.fast is not None
    fast = rt.fast.fetch(prepared, {"tenant": "acme"})
    slow = await read(None, rt.db, prepared, {"tenant": "acme"})  # no fast path: a session of the store
    assert fast is not None and len(fast) == 1
    assert [tuple(row) for row in fast] == [tuple(row) for row in slow]
    assert fast[0][1] == "alpha one"


async def test_a_prepared_read_keeps_the_statements_own_literals(rt: Runtime) -> None:
    await seeded(rt)
    prepared = Prepared(select(Collection.name).where(Collection.name == "docs"))
    assert rt.fast is not None and rt.fast.fetch(prepared, {}) == [("docs",)]
    with pytest.raises(KeyError):  # a parameter the caller must give is never silently None
        rt.fast.fetch(Prepared(select(Collection.name).where(Collection.name == bindparam("name"))), {})


async def test_a_prepared_write_stores_what_sqlalchemy_would_store(rt: Runtime) -> None:
    """Parameters go through their columns' bind processors: a datetime and a boolean read back as written."""
    row = usage_row(operation="query", collection="docs", tenant="acme", embedding_tokens=3, tokens_estimated=True,
                    created_at=datetime(2026, 3, 1, 12, 30, 15, 250_000, tzinfo=UTC))
    assert rt.fast is not None
    assert rt.fast.write(Prepared(bulk_insert(UsageEvent), tuple(row)), row)
    async with rt.db.session() as session:
        stored = (await session.scalars(select(UsageEvent))).one()
    assert stored.created_at == row["created_at"] and stored.tokens_estimated is True
    assert (stored.operation, stored.tenant, stored.embedding_tokens) == ("query", "acme", 3)


def test_only_plain_types_may_be_read_raw() -> None:
    """SQLite hands JSON and datetimes over unprocessed, so a raw row would differ from SQLAlchemy's: refused."""
    with pytest.raises(TypeError, match="metadata"):
        Prepared(select(Chunk.record_id, Chunk.metadata_))
    with pytest.raises(TypeError, match="created_at"):
        Prepared(select(Chunk.record_id, Chunk.created_at))


async def test_search_rows_are_the_same_on_the_fast_path_and_off_it(rt: Runtime) -> None:
    await seeded(rt)
    fast = await search.search(rt, "docs", "alpha", filters={"tenant_id": "acme"})
    rt.fast, saved = None, rt.fast
    try:
        slow = await search.search(rt, "docs", "alpha", filters={"tenant_id": "acme"})
    finally:
        rt.fast = saved
    assert [row.model_dump(exclude={"score"}) for row in fast.results] == [
        row.model_dump(exclude={"score"}) for row in slow.results
    ]
    (row,) = fast.results
    assert row.metadata == {"tenant_id": "acme", "n": 1, "tags": ["x"]} and row.text == "alpha one"


COUNT_USAGE = Prepared(select(func.count()).select_from(UsageEvent))


@contextmanager
def write_lock_held(rt: Runtime) -> Iterator[None]:
    """Another connection holds the store's write lock (as an upload's transaction does while it indexes)."""
    holder = sqlite3.connect(rt.db.url.split("///", 1)[1], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.rollback()
        holder.close()


def usage_rows(rt: Runtime) -> int:
    assert rt.fast is not None
    found = rt.fast.fetch(COUNT_USAGE, {})  # a read: in WAL mode it never waits for the writer
    assert found is not None
    return int(found[0][0])


async def test_queries_do_not_wait_for_another_writers_lock_and_their_usage_lands_after_it(rt: Runtime) -> None:
    await seeded(rt)
    before = usage_rows(rt)
    with write_lock_held(rt):
        # without the waiting rows each query's usage write would wait for the lock (busy_timeout, 30 s)
        with anyio.fail_after(10):
            for _ in range(3):
                assert (await search.search(rt, "docs", "alpha", filters={"tenant_id": "acme"})).results
        assert usage_rows(rt) == before  # answered while their usage rows wait
    report = await admin.usage(rt, collection="docs")  # flushes this process's waiting rows first
    assert usage_rows(rt) == before + 3 and report.queries_total == 3


async def test_closing_the_runtime_writes_the_usage_rows_still_waiting(settings: Settings) -> None:
    rt = await Runtime.open(settings)
    await seeded(rt)
    before = usage_rows(rt)
    with write_lock_held(rt):
        await search.search(rt, "docs", "alpha", filters={"tenant_id": "acme"})
    await rt.close()
    again = await Runtime.open(settings)
    try:
        assert usage_rows(again) == before + 1
    finally:
        await again.close()


async def test_usage_rows_wait_in_memory_up_to_a_bound_then_the_caller_writes_its_own(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await collections.create(rt, name="docs")
    activity = Activity.of("query", await collections.load(rt, "docs"))
    monkeypatch.setattr(ledger, "MAX_WAITING", 2)
    with write_lock_held(rt):
        assert [rt.ledger.record_now(ledger.OPERATOR, activity) for _ in range(3)] == [True, True, False]
    await rt.ledger.flush()
    assert usage_rows(rt) == 2


DIES_WHILE_ROWS_WAIT = """
import asyncio, os, signal, sqlite3
from bigrag_mcp.services import search
from bigrag_mcp.services.runtime import Runtime

async def main():
    rt = await Runtime.open()
    holder = sqlite3.connect(rt.db.url.split("///", 1)[1], isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another writer's transaction, as an upload's
    for _ in range(3):
        assert (await search.search(rt, "docs", "alpha", filters={"tenant_id": "acme"})).results
    os.kill(os.getpid(), signal.SIGKILL)  # a crash: no close, no flush

asyncio.run(main())
"""


def spool_files(rt: Runtime) -> list[str]:
    assert rt.ledger.spool is not None
    folder = rt.ledger.spool.folder
    return sorted(path.suffix for path in folder.iterdir()) if folder.exists() else []


async def test_usage_rows_waiting_when_the_process_dies_are_recovered_once_by_the_next_to_open_the_store(
    rt: Runtime, settings: Settings
) -> None:
    await seeded(rt)
    before = usage_rows(rt)
    with anyio.fail_after(120):
        died = await anyio.run_process([sys.executable, "-c", DIES_WHILE_ROWS_WAIT], env=server_env(settings), check=False)
    assert died.returncode == -signal.SIGKILL
    assert usage_rows(rt) == before and spool_files(rt) == [".jsonl", ".lock"]  # answered, their rows in the spool
    for _ in range(2):  # the first to open the store recovers them; the next finds nothing left
        again = await Runtime.open(settings)
        await again.close()
        assert usage_rows(rt) == before + 3 and spool_files(rt) == []
    report = await admin.usage(rt, collection="docs")
    assert report.queries_total == 3


async def test_a_spool_whose_rows_were_committed_before_its_process_died_is_not_counted_twice(
    rt: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await seeded(rt)
    before = usage_rows(rt)
    spool = rt.ledger.spool
    assert spool is not None
    monkeypatch.setattr(spool, "keep", lambda rows: None)  # the process dies after the commit, before this
    with write_lock_held(rt):
        for _ in range(2):
            await search.search(rt, "docs", "alpha", filters={"tenant_id": "acme"})
    await rt.ledger.flush()
    assert usage_rows(rt) == before + 2  # committed, and still in the spool
    with write_lock_held(rt):
        await search.search(rt, "docs", "alpha", filters={"tenant_id": "acme"})  # waits: in the spool only
    with (spool.folder / f"{spool._name}.jsonl").open("ab") as torn:
        torn.write(b'{"created_at": "2026-')  # the crash cut the last line short
    rt.ledger._waiting.clear()
    spool.close(clean=False)  # the process is gone: its lock is free, its files stay
    again = await Runtime.open(settings)
    await again.close()
    assert usage_rows(rt) == before + 3 and spool_files(rt) == []
    assert "skipped line 4" in caplog.text


async def test_a_running_processs_spool_is_left_to_it(rt: Runtime, settings: Settings) -> None:
    await seeded(rt)
    before = usage_rows(rt)
    with write_lock_held(rt):
        await search.search(rt, "docs", "alpha", filters={"tenant_id": "acme"})
        other = await Runtime.open(settings)  # another process opening the store while this one's row waits
        assert usage_rows(rt) == before and spool_files(rt) == [".jsonl", ".lock"]
    await rt.ledger.flush()
    await other.close()
    assert usage_rows(rt) == before + 1
    await rt.ledger.close()  # a clean close leaves no spool behind
    assert spool_files(rt) == []


async def test_a_usage_row_that_cannot_be_spooled_is_left_to_its_call_to_write(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await collections.create(rt, name="docs")
    activity = Activity.of("query", await collections.load(rt, "docs"))

    def disk_full(row: dict[str, object]) -> None:
        raise OSError(28, "No space left on device")

    assert rt.ledger.spool is not None
    monkeypatch.setattr(rt.ledger.spool, "append", disk_full)
    with write_lock_held(rt):
        assert rt.ledger.record_now(ledger.OPERATOR, activity) is False  # never a row only in memory
    assert not rt.ledger._waiting
