"""The audit log: hash chain and its verification against raw edits, concurrency, redaction, listing."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import anyio
import pytest
from sqlalchemy import text

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.services.audit import GENESIS_HASH, append_audit, audit_safely, list_audit, verify_chain
from bigrag_mcp.store.db import Database

pytestmark = pytest.mark.both_stores


@pytest.fixture
def url(db: Database) -> str:
    return db.url


async def append(db: Database, **fields: Any) -> None:
    async with db.session() as session:
        await append_audit(session, **{"actor_key_id": "key1", "action": "collection.created",
                                       "resource_type": "collection", **fields})


async def fill(db: Database, count: int) -> None:
    for i in range(count):
        await append(db, resource_id=f"c{i}")


async def sql(db: Database, statement: str, **params: Any) -> list[Any]:
    async with db.engine.begin() as conn:
        result = await conn.execute(text(statement), params)
        return list(result.all()) if result.returns_rows else []


@pytest.mark.anyio
async def test_rows_chain_from_genesis_with_the_documented_hash(db: Database) -> None:
    await append(db, resource_id="docs", tenant="acme", request_id="req-1", metadata={"b": 1, "a": [1.5, "x"]})
    await append(db, action="api_key.revoked", resource_type="api_key", outcome="denied", reason="not allowed")

    page = await list_audit(db)
    second, first = page.rows
    raw = {row.id: row for row in await sql(db, "SELECT id, prev_hash, entry_hash FROM audit_log")}
    assert raw[1].prev_hash == GENESIS_HASH and raw[2].prev_hash == raw[1].entry_hash
    canonical = (
        '{"action":"collection.created","actor_key_id":"key1","created_at":"'
        + first.created_at.isoformat(timespec="microseconds")
        + '","id":1,"metadata":{"a":[1.5,"x"],"b":1},"outcome":"allowed","prev_hash":"' + GENESIS_HASH
        + '","reason":null,"request_id":"req-1","resource_id":"docs","resource_type":"collection","tenant":"acme"}'
    )
    assert first.created_at.isoformat().endswith("+00:00")
    assert raw[1].entry_hash == hashlib.sha256((GENESIS_HASH + canonical).encode()).hexdigest()
    assert (second.outcome, second.reason, second.actor_key_id) == ("denied", "not allowed", "key1")

    result = await verify_chain(db)
    assert (result.ok, result.rows_checked, result.head_id, result.head_hash) == (True, 2, 2, raw[2].entry_hash)


@pytest.mark.anyio
async def test_empty_log_verifies(db: Database) -> None:
    result = await verify_chain(db)
    assert (result.ok, result.rows_checked, result.head_hash) == (True, 0, None)


@pytest.mark.anyio
@pytest.mark.parametrize(("column", "value"), [
    ("action", "'collection.read'"), ("outcome", "'denied'"), ("metadata", "'{\"injected\": true}'"),
    ("created_at", "'2020-01-01 00:00:00.000000'"), ("tenant", "'globex'"), ("prev_hash", "'" + "1" * 64 + "'"),
])
async def test_edited_row_is_named(db: Database, column: str, value: str) -> None:
    await fill(db, 5)
    await sql(db, f"UPDATE audit_log SET {column} = {value} WHERE id = 3")
    result = await verify_chain(db)
    assert (result.ok, result.bad_row_id, result.rows_checked) == (False, 3, 2)
    assert result.problem == ("inserted" if column == "prev_hash" else "changed")


@pytest.mark.anyio
async def test_edit_with_recomputed_hash_breaks_the_next_link(db: Database) -> None:
    await fill(db, 4)
    await sql(db, "UPDATE audit_log SET entry_hash = :h WHERE id = 2", h="f" * 64)
    result = await verify_chain(db)
    assert (result.ok, result.bad_row_id) == (False, 2)  # its own hash no longer matches its content
    assert result.problem == "changed"


@pytest.mark.anyio
async def test_removed_rows_are_detected(db: Database) -> None:
    await fill(db, 6)
    await sql(db, "DELETE FROM audit_log WHERE id = 4")
    result = await verify_chain(db)
    assert (result.ok, result.problem, result.bad_row_id, result.rows_checked) == (False, "removed", 5, 3)

    await sql(db, "DELETE FROM audit_log WHERE id = 1")
    result = await verify_chain(db)
    assert (result.problem, result.bad_row_id, result.rows_checked) == ("removed", 2, 0)


def forged(row_id: int, prev_hash: str, entry_hash: str) -> str:
    return ("INSERT INTO audit_log (id, created_at, actor_key_id, action, resource_type, outcome, metadata, prev_hash,"
            f" entry_hash) VALUES ({row_id}, '2030-01-01 00:00:00.000000', 'evil', 'api_key.created', 'api_key',"
            f" 'allowed', '{{}}', '{prev_hash}', '{entry_hash}')")


@pytest.mark.anyio
async def test_inserted_rows_are_detected(db: Database) -> None:
    await fill(db, 3)
    head = (await verify_chain(db)).head_hash
    assert head is not None
    await sql(db, forged(4, head, "a" * 64))  # links to the head but its hash is made up
    result = await verify_chain(db)
    assert (result.ok, result.bad_row_id, result.rows_checked) == (False, 4, 3)

    await sql(db, "DELETE FROM audit_log WHERE id = 4")
    await sql(db, forged(4, "b" * 64, "c" * 64))
    result = await verify_chain(db)
    assert (result.problem, result.bad_row_id) == ("inserted", 4)

    await sql(db, "DELETE FROM audit_log WHERE id = 4")
    await sql(db, forged(0, GENESIS_HASH, "d" * 64))  # slipped in before the first row
    result = await verify_chain(db)
    assert (result.problem, result.bad_row_id, result.rows_checked) == ("inserted", 0, 0)


@pytest.mark.anyio
async def test_forged_row_with_valid_hash_but_skipped_id_is_inserted(db: Database) -> None:
    await fill(db, 2)
    async with db.session() as session:  # a genuine append, then moved to an id no append would use
        await append_audit(session, actor_key_id="k", action="x.y", resource_type="t")
    row = (await sql(db, "SELECT * FROM audit_log WHERE id = 3"))[0]
    await sql(db, "DELETE FROM audit_log WHERE id = 3")
    await sql(db, forged(9, row.prev_hash, row.entry_hash))
    result = await verify_chain(db)
    assert (result.ok, result.bad_row_id) == (False, 9)


@pytest.mark.anyio
async def test_verification_walks_past_batch_boundaries(db: Database) -> None:
    await fill(db, 7)
    assert (await verify_chain(db, batch=2)).rows_checked == 7
    await sql(db, "UPDATE audit_log SET resource_id = 'other' WHERE id = 6")
    result = await verify_chain(db, batch=2)
    assert (result.bad_row_id, result.problem, result.head_id) == (6, "changed", 5)


@pytest.mark.anyio
async def test_concurrent_appends_from_two_engines_keep_one_chain(db: Database, url: str) -> None:
    other = Database(url)  # a second engine on the same file, as a second server process would have
    failures: list[str] = []

    async def one(target: Database, i: int) -> None:
        try:
            await append(target, resource_id=f"r{i}")
        except Exception as exc:  # noqa: BLE001 - collected so every racer finishes and the test reports them all
            failures.append(repr(exc)[:200])

    try:
        async with anyio.create_task_group() as group:
            for i in range(40):
                group.start_soon(one, db if i % 2 else other, i)
    finally:
        await other.close()
    assert failures == []
    result = await verify_chain(db)
    assert (result.ok, result.rows_checked, result.head_id) == (True, 40, 40)
    assert sorted(str(row.resource_id) for row in (await list_audit(db, limit=500)).rows) == sorted(
        f"r{i}" for i in range(40))


@pytest.mark.anyio
async def test_append_commits_with_the_callers_work_or_not_at_all(db: Database) -> None:
    await fill(db, 1)
    with pytest.raises(RuntimeError):
        async with db.session() as session:
            await append_audit(session, actor_key_id="k", action="collection.deleted", resource_type="collection")
            raise RuntimeError("the delete failed")
    await fill(db, 1)
    result = await verify_chain(db)
    assert (result.ok, result.rows_checked) == (True, 2)
    assert [r.action for r in (await list_audit(db)).rows] == ["collection.created", "collection.created"]


@pytest.mark.anyio
async def test_secrets_and_control_characters_never_reach_the_store(db: Database) -> None:
    await append(
        db, actor_key_id="brg_actor", resource_id="brg_live_SECRETA", reason="bad key brg_live_SECRETB refused\nagain",
        request_id="r\x1b[31m1\u202e", tenant="ac\x00me",
        metadata={"note": "used brg_live_SECRETC", "api_key": "plain-SECRETD", "nested": {"Client-Secret": "SECRETE"},
                  "list": ["brg_SECRETF", 3, None, float("nan")], "brg_SECRETG": 1},
    )
    dump = json.dumps([list(row) for row in await sql(db, "SELECT * FROM audit_log")], default=str)
    assert "SECRET" not in dump and "brg_" not in dump
    row = (await list_audit(db)).rows[0]
    assert (row.reason, row.request_id, row.tenant) == ("bad key [REDACTED] refusedagain", "r[31m1", "acme")
    assert row.metadata["list"] == ["[REDACTED]", 3, None, "nan"] and row.metadata["api_key"] == "[REDACTED]"
    assert (await verify_chain(db)).ok


@pytest.mark.anyio
async def test_audit_safely_logs_instead_of_raising(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    assert await audit_safely(db, actor_key_id="k", action="query.denied", resource_type="collection", outcome="denied")
    await sql(db, "DROP TABLE audit_log")
    with caplog.at_level(logging.ERROR, logger="bigrag_mcp.services.audit"):
        stored = await audit_safely(db, actor_key_id="k", action="query.denied", resource_type="collection",
                                    outcome="denied", reason="key brg_live_SECRET was refused")
    assert stored is False
    assert "audit append failed" in caplog.text and "query.denied" in caplog.text
    assert "SECRET" not in caplog.text


@pytest.mark.anyio
async def test_bad_outcome_is_refused(db: Database) -> None:
    with pytest.raises(ValueError):
        await append(db, outcome="maybe")


SPECS = [
    {"actor_key_id": f"k{i % 3}", "action": ("collection.created", "document.uploaded")[i % 2],
     "resource_type": ("collection", "document")[i % 2], "resource_id": f"r{i % 4}",
     "tenant": "acme" if i % 3 == 0 else None, "outcome": "denied" if i % 5 == 0 else "allowed"}
    for i in range(23)
]


@pytest.mark.anyio
async def test_cursor_paging_returns_every_row_once_newest_first(db: Database) -> None:
    for spec in SPECS:
        await append(db, **spec)
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await list_audit(db, limit=5, cursor=cursor)
        seen += [row.id for row in page.rows]
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list(range(23, 0, -1)) and pages == 5

    filtered: list[int] = []
    cursor = None
    while True:
        page = await list_audit(db, action="document.uploaded", limit=2, cursor=cursor)
        filtered += [row.id for row in page.rows]
        if not (cursor := page.next_cursor):
            break
    assert filtered == [i + 1 for i in reversed(range(23)) if i % 2]


@pytest.mark.anyio
@pytest.mark.parametrize(("field", "value"), [
    ("actor_key_id", "k1"), ("action", "collection.created"), ("resource_type", "document"),
    ("resource_id", "r2"), ("tenant", "acme"),
])
async def test_each_filter_is_exact(db: Database, field: str, value: str) -> None:
    for spec in SPECS:
        await append(db, **spec)
    only: dict[str, Any] = {field: value}
    rows = (await list_audit(db, limit=500, **only)).rows
    assert [row.id for row in rows] == [i + 1 for i in reversed(range(23)) if SPECS[i][field] == value]
    assert rows and all(getattr(row, field) == value for row in rows)


@pytest.mark.anyio
async def test_time_range_since_inclusive_until_exclusive(db: Database) -> None:
    await fill(db, 5)
    times = {row.id: row.created_at for row in (await list_audit(db)).rows}
    assert len(set(times.values())) == 5
    between = await list_audit(db, since=times[2], until=times[4])
    assert [row.id for row in between.rows] == [3, 2]
    naive = await list_audit(db, since=times[4].replace(tzinfo=None))  # naive times are read as UTC
    assert [row.id for row in naive.rows] == [5, 4]
    combined = await list_audit(db, since=times[1], until=times[5], resource_id="c2")
    assert [row.id for row in combined.rows] == [3]


@pytest.mark.anyio
async def test_listing_arguments_are_checked(db: Database) -> None:
    await fill(db, 2)
    for bad in ({"limit": 0}, {"limit": 501}, {"cursor": "not-a-cursor"}, {"cursor": "YXVkaXQ6eA"}):
        with pytest.raises(InvalidArgument):
            await list_audit(db, **bad)
    times = [row.created_at for row in (await list_audit(db)).rows]
    with pytest.raises(InvalidArgument):
        await list_audit(db, since=times[0], until=times[1])
