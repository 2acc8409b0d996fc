"""The outbox and its relay: transactional enqueue, at-least-once delivery, leases, parking and replay."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import select

from bigrag_mcp.default_plugins.jsonl_billing import JsonlExporter, register_billing_exporters
from bigrag_mcp.errors import InvalidArgument, NotFound
from bigrag_mcp.services.outbox import (
    OutboxRelay,
    billing_row_id,
    build_exporters,
    enqueue_billing,
    event_from_payload,
    new_event_id,
)
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import OutboxEvent
from bigrag_mcp.testing.relay import Crash, CrashAfterSend, FakeClock
from bigrag_mcp.types import BillingEvent, BillingExporterFactory, DeliveryResult

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]


class ScriptedExporter:
    """Answers from a script (then "sent"), and keeps books deduplicated by event id like a real receiver."""

    name = "scripted"

    def __init__(self, script: list[DeliveryResult | Exception] | None = None) -> None:
        self.script = list(script or [])
        self.calls: list[str] = []
        self.books: dict[str, float] = {}

    async def send(self, event: BillingEvent) -> DeliveryResult:
        self.calls.append(event.id)
        await anyio.lowlevel.checkpoint()  # let a concurrent relay interleave here
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, Exception):
                raise step
            return step
        if event.id in self.books:
            return DeliveryResult("duplicate")
        self.books[event.id] = event.value
        return DeliveryResult("sent")

    async def close(self) -> None:
        return None


def billing_event(value: float = 1.0, **kw: Any) -> BillingEvent:
    return BillingEvent(id=new_event_id(), event="query", value=value, timestamp=datetime.now(UTC), tenant="acme", **kw)


async def enqueue(db: Database, count: int, exporters: list[str]) -> list[BillingEvent]:
    events = [billing_event(float(i)) for i in range(count)]
    async with db.session() as s:
        for event in events:
            enqueue_billing(s, event, exporters)
    return events


async def rows(db: Database) -> list[OutboxEvent]:
    async with db.session() as s:
        return list((await s.scalars(select(OutboxEvent).order_by(OutboxEvent.id))).all())


def tear_last_write(path: Path, record: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(record)


def jsonl_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()]


async def test_enqueue_commits_and_rolls_back_with_the_callers_transaction(db: Database) -> None:
    event = billing_event(3.0, collection="docs", properties={"model": "m"})
    with pytest.raises(RuntimeError):
        async with db.session() as s:
            enqueue_billing(s, event, ["jsonl", "stripe"])
            raise RuntimeError("the billable work failed")
    assert await rows(db) == []

    async with db.session() as s:
        enqueue_billing(s, event, ["jsonl", "stripe", "jsonl"])
    stored = await rows(db)
    assert sorted(r.id for r in stored) == sorted(
        [billing_row_id(event.id, "jsonl"), billing_row_id(event.id, "stripe")]
    )
    assert {(r.kind, r.target, r.status, r.attempts) for r in stored} == {
        ("billing", "jsonl", "pending", 0),
        ("billing", "stripe", "pending", 0),
    }
    assert event_from_payload(stored[0].payload) == event


async def test_enqueue_refuses_ids_no_exporter_can_send(db: Database) -> None:
    async with db.session() as s:
        with pytest.raises(InvalidArgument):
            enqueue_billing(s, BillingEvent(id="x" * 101, event="query", value=1, timestamp=datetime.now()), ["jsonl"])


async def test_relay_delivers_each_event_once_to_a_jsonl_file(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "billing.jsonl"
    events = await enqueue(db, 5, ["jsonl"])
    relay = OutboxRelay(db, {"jsonl": JsonlExporter(path)}, None, clock=FakeClock())

    stats = await relay.run_once()
    assert (stats.claimed, stats.sent) == (5, 5)
    assert (await relay.run_once()).claimed == 0
    assert sorted(jsonl_ids(path)) == sorted(e.id for e in events)
    assert all(r.status == "sent" and r.sent_at is not None for r in await rows(db))


async def test_a_crash_between_send_and_mark_resends_the_same_key_and_counts_once(db: Database, tmp_path: Path) -> None:
    path = tmp_path / "billing.jsonl"
    (event,) = await enqueue(db, 1, ["jsonl"])
    clock = FakeClock()
    crashing = OutboxRelay(db, {"jsonl": CrashAfterSend(JsonlExporter(path))}, None, clock=clock)
    with pytest.raises(Crash):
        await crashing.run_once()
    (row,) = await rows(db)
    assert (row.status, row.attempts) == ("pending", 1)

    restarted = OutboxRelay(db, {"jsonl": JsonlExporter(path)}, None, clock=clock)  # a new process re-reads the file
    assert (await restarted.run_once()).claimed == 0  # the dead relay's lease still holds the row
    clock.advance(restarted.lease.total_seconds() + 1)
    stats = await restarted.run_once()
    assert (stats.claimed, stats.duplicate) == (1, 1)
    assert jsonl_ids(path) == [event.id]
    assert (await rows(db))[0].status == "sent"


async def test_retries_honour_retry_after_then_back_off_exponentially(db: Database) -> None:
    await enqueue(db, 1, ["x"])
    clock = FakeClock()
    exporter = ScriptedExporter(
        [DeliveryResult("retry", "HTTP 429", retry_after=7), DeliveryResult("retry", "HTTP 500"), OSError("reset")]
    )
    relay = OutboxRelay(db, {"x": exporter}, None, clock=clock, base_delay=10, max_delay=3600)

    assert (await relay.run_once()).retried == 1
    (row,) = await rows(db)
    assert row.next_attempt_at.replace(tzinfo=UTC) == clock.now + timedelta(seconds=7)
    assert row.last_error == "HTTP 429"

    clock.advance(6)
    assert (await relay.run_once()).claimed == 0  # not before Retry-After
    clock.advance(1)
    assert (await relay.run_once()).retried == 1  # attempt 2 -> backoff 20 s
    (row,) = await rows(db)
    assert row.next_attempt_at.replace(tzinfo=UTC) == clock.now + timedelta(seconds=20)

    clock.advance(20)
    assert (await relay.run_once()).retried == 1  # attempt 3 raised -> backoff 40 s
    (row,) = await rows(db)
    assert row.last_error == "OSError: reset"
    clock.advance(40)
    assert (await relay.run_once()).sent == 1
    assert len(exporter.books) == 1 and len(exporter.calls) == 4


async def test_rows_park_after_max_attempts_show_in_status_and_replay(db: Database) -> None:
    events = await enqueue(db, 2, ["x"])
    clock = FakeClock()
    always_down = ScriptedExporter([DeliveryResult("retry", "HTTP 503: down")] * 6)
    relay = OutboxRelay(db, {"x": always_down}, None, clock=clock, max_attempts=3, base_delay=1, max_delay=1)
    for _ in range(6):  # one row per run while the target is failing: 3 attempts each
        await relay.run_once()
        clock.advance(5)

    status = await relay.status()
    assert status["totals"] == {"pending": 0, "sent": 0, "parked": 2}
    assert status["by_target"] == [{"kind": "billing", "target": "x", "pending": 0, "sent": 0, "parked": 2}]
    assert {p["id"] for p in status["parked"]} == {billing_row_id(e.id, "x") for e in events}
    assert {(p["attempts"], p["last_error"]) for p in status["parked"]} == {(3, "HTTP 503: down")}
    assert (await relay.run_once()).claimed == 0  # parked rows are left alone

    with pytest.raises(InvalidArgument):
        await relay.replay()
    with pytest.raises(NotFound):
        await relay.replay(["bil_nope"])
    assert await relay.replay(parked=True) == 2
    assert (await relay.run_once()).sent == 2
    assert set(always_down.books) == {e.id for e in events}
    assert (await relay.status())["totals"] == {"pending": 0, "sent": 2, "parked": 0}


async def test_a_failed_answer_parks_at_once(db: Database) -> None:
    await enqueue(db, 1, ["x"])
    relay = OutboxRelay(
        db, {"x": ScriptedExporter([DeliveryResult("failed", "no customer for tenant acme")])}, None, clock=FakeClock()
    )
    assert (await relay.run_once()).parked == 1
    assert (await relay.status())["parked"][0]["last_error"] == "no customer for tenant acme"


async def test_a_failing_target_defers_its_other_rows_but_not_other_targets(db: Database) -> None:
    await enqueue(db, 3, ["down", "up"])
    relay = OutboxRelay(
        db,
        {"down": ScriptedExporter([DeliveryResult("retry", "HTTP 500")]), "up": ScriptedExporter()},
        None,
        clock=FakeClock(),
    )
    stats = await relay.run_once()
    assert (stats.retried, stats.deferred, stats.sent) == (1, 2, 3)
    (retrying,) = (await relay.status())["retrying"]
    assert (retrying["target"], retrying["attempts"], retrying["last_error"]) == ("down", 1, "HTTP 500")
    attempts = Counter((r.target, r.attempts) for r in await rows(db))
    assert attempts == Counter({("down", 1): 1, ("down", 0): 2, ("up", 1): 3})


async def test_rows_for_an_unconfigured_exporter_stay_pending(db: Database) -> None:
    await enqueue(db, 1, ["gone"])
    relay = OutboxRelay(db, {"x": ScriptedExporter()}, None, clock=FakeClock())
    assert (await relay.run_once()).claimed == 0
    assert (await relay.status())["due"] == 1


async def test_two_relays_never_send_the_same_row(db: Database, tmp_path: Path) -> None:
    await enqueue(db, 40, ["x"])
    exporter = ScriptedExporter()
    clock = FakeClock()
    other_db = Database(db.url)  # a second replica: its own engine on the same store
    relays = [
        OutboxRelay(db, {"x": exporter}, None, clock=clock),
        OutboxRelay(other_db, {"x": exporter}, None, clock=clock),
    ]
    try:
        async with anyio.create_task_group() as tg:
            for relay in relays:
                tg.start_soon(relay.run_once)
    finally:
        await other_db.close()
    assert Counter(exporter.calls).most_common(1)[0][1] == 1
    assert len(exporter.calls) == 40
    assert all(r.status == "sent" and r.attempts == 1 for r in await rows(db))


async def test_a_hung_exporter_is_cut_off_and_retried(db: Database) -> None:
    class Hung(ScriptedExporter):
        async def send(self, event: BillingEvent) -> DeliveryResult:
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

    await enqueue(db, 1, ["x"])
    relay = OutboxRelay(db, {"x": Hung()}, None, clock=FakeClock(), send_timeout=0.05)
    assert (await relay.run_once()).retried == 1
    assert (await rows(db))[0].last_error == "no answer within 0.05 s"


async def test_run_forever_sends_and_stops_when_asked(db: Database) -> None:
    stop = anyio.Event()

    class StopsAfterFirst(ScriptedExporter):
        async def send(self, event: BillingEvent) -> DeliveryResult:
            result = await super().send(event)
            stop.set()
            return result

    await enqueue(db, 1, ["x"])
    exporter = StopsAfterFirst()
    with anyio.fail_after(10):
        await OutboxRelay(db, {"x": exporter}, None, clock=FakeClock()).run_forever(stop, interval=3600)
    assert len(exporter.books) == 1


async def test_build_exporters_maps_targets_to_registered_factories(tmp_path: Path) -> None:
    factories: dict[str, BillingExporterFactory] = {}
    register_billing_exporters(factories.__setitem__)
    exporters = build_exporters(
        {
            "audit-copy": {"exporter": "jsonl", "path": str(tmp_path / "a.jsonl")},
            "jsonl": {"path": str(tmp_path / "b")},
        },
        factories,
    )
    assert {k: v.name for k, v in exporters.items()} == {"audit-copy": "jsonl", "jsonl": "jsonl"}
    with pytest.raises(InvalidArgument, match="not installed"):
        build_exporters({"stripe": {}}, factories)
    with pytest.raises(InvalidArgument, match="path"):
        build_exporters({"jsonl": {}}, factories)


async def test_jsonl_exporter_indexes_existing_ids_and_survives_a_torn_write(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    first, second, third = billing_event(), billing_event(), billing_event()
    assert (await JsonlExporter(path).send(first)).status == "sent"
    tear_last_write(path, json.dumps({"id": second.id}).encode())  # a crash mid-write: the record, no newline
    reopened = JsonlExporter(path)
    assert (await reopened.send(first)).status == "duplicate"
    assert (await reopened.send(second)).status == "duplicate"
    assert (await reopened.send(third)).status == "sent"
    assert jsonl_ids(path) == [first.id, second.id, third.id]

    other_process = JsonlExporter(path)
    fourth = billing_event()
    assert (await reopened.send(fourth)).status == "sent"
    assert (await other_process.send(fourth)).status == "duplicate"  # re-reads what the other writer appended
