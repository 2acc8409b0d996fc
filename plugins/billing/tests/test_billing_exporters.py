"""Stripe, OpenMeter and Lago exporters against loopback fakes, alone and through the outbox relay."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pluggy
import pytest
from bigrag_billing.plugin import exporter_class, register_billing_exporters
from billing_fakes import API_KEY, FakeLago, FakeOpenMeter, FakeStripe, LoopbackService
from sqlalchemy import select

from bigrag_mcp import hookspecs
from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.services.outbox import OutboxRelay, billing_row_id, enqueue_billing, new_event_id
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import OutboxEvent
from bigrag_mcp.testing.relay import Crash, CrashAfterSend, FakeClock, temporary_database
from bigrag_mcp.types import BillingEvent, BillingExporter, BillingExporterFactory

pytestmark = pytest.mark.anyio

FAKES: dict[str, type[LoopbackService]] = {"stripe": FakeStripe, "openmeter": FakeOpenMeter, "lago": FakeLago}
FACTORIES: dict[str, BillingExporterFactory] = {}
register_billing_exporters(FACTORIES.__setitem__)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=sorted(FAKES))
def service(request: pytest.FixtureRequest) -> Iterator[tuple[str, LoopbackService]]:
    fake = FAKES[request.param]()
    yield request.param, fake
    fake.stop()


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with temporary_database(tmp_path) as database:
        yield database


def exporter_for(kind: str, fake: LoopbackService, **overrides: Any) -> BillingExporter:
    config = {"base_url": fake.base_url, "api_key": API_KEY, "customers": {"acme": "cus_acme"}}  # the default timeout
    return FACTORIES[kind](config | overrides)


def billing_event(value: float = 3.0, *, tenant: str | None = "acme", age: timedelta = timedelta(0)) -> BillingEvent:
    stamp = datetime.now(UTC).replace(microsecond=0) - age
    return BillingEvent(new_event_id(), "query", value, stamp, collection="docs", tenant=tenant, properties={"k": "v"})


async def enqueue(db: Database, count: int, target: str) -> list[BillingEvent]:
    events = [billing_event(float(i + 1)) for i in range(count)]
    async with db.session() as s:
        for event in events:
            enqueue_billing(s, event, [target])
    return events


async def pending(db: Database) -> list[OutboxEvent]:
    async with db.session() as s:
        return list((await s.scalars(select(OutboxEvent).where(OutboxEvent.status == "pending"))).all())


def booked_ids(kind: str, fake: LoopbackService) -> list[str]:
    return [record["id"] for record in fake.books.values()] if kind == "openmeter" else list(fake.books)


async def test_stripe_sends_a_form_encoded_meter_event_and_reads_duplicates() -> None:
    fake = FakeStripe()
    exporter = exporter_for("stripe", fake, events={"query": "bigrag_queries"})
    event, fractional = billing_event(3.0), billing_event(2.5)
    try:
        assert (await exporter.send(event)).status == "sent"
        assert (await exporter.send(fractional)).status == "sent"
        again = await exporter.send(event)
    finally:
        await exporter.close()
        fake.stop()
    assert fake.books[event.id] == {
        "event_name": "bigrag_queries",
        "payload[stripe_customer_id]": "cus_acme",
        "payload[value]": "3",
        "identifier": event.id,
        "timestamp": str(int(event.timestamp.timestamp())),
    }
    assert fake.books[fractional.id]["payload[value]"] == "2.5"
    assert again.status == "duplicate" and event.id in again.detail


async def test_openmeter_sends_a_cloudevent_and_duplicates_are_dropped_by_the_service() -> None:
    fake = FakeOpenMeter()
    exporter = exporter_for("openmeter", fake, source="bigrag-test", customer_template="org-{tenant}", customers={})
    event = billing_event(3.0)
    try:
        assert (await exporter.send(event)).status == "sent"
        assert (await exporter.send(event)).status == "sent"
    finally:
        await exporter.close()
        fake.stop()
    assert fake.books == {
        f"bigrag-test\x00{event.id}": {
            "specversion": "1.0",
            "type": "query",
            "id": event.id,
            "source": "bigrag-test",
            "subject": "org-acme",
            "time": event.timestamp.isoformat().replace("+00:00", "Z"),
            "data": {"k": "v", "value": 3.0, "collection": "docs", "tenant": "acme"},
        }
    }
    assert fake.duplicates == 1


async def test_lago_sends_an_event_and_only_a_repeated_transaction_id_is_a_duplicate() -> None:
    fake = FakeLago()
    exporter = exporter_for("lago", fake, events={"query": "queries"}, customers={"docs": "sub_docs"})
    event = billing_event(3.0, tenant=None)
    try:
        assert (await exporter.send(event)).status == "sent"
        assert (await exporter.send(event)).status == "duplicate"
        unnamed = exporter_for("lago", fake, events={"query": ""}, customers={"docs": "sub_docs"})
        refused = await unnamed.send(billing_event())
        await unnamed.close()
    finally:
        await exporter.close()
        fake.stop()
    assert fake.books[event.id] == {
        "transaction_id": event.id,
        "external_subscription_id": "sub_docs",
        "code": "queries",
        "timestamp": int(event.timestamp.timestamp()),
        "properties": {"k": "v", "value": 3.0, "collection": "docs"},
    }
    assert refused.status == "failed" and "value_is_mandatory" in refused.detail


async def test_flaky_service_books_every_event_exactly_once(db: Database, service: tuple[str, LoopbackService]) -> None:
    kind, fake = service
    events = await enqueue(db, 5, kind)
    fake.script = ["429", "500", "timeout"]
    clock = FakeClock()
    exporter = exporter_for(kind, fake, timeout=0.5)  # the scripted timeout hangs until released: give up soon
    relay = OutboxRelay(db, {kind: exporter}, None, clock=clock, send_timeout=5)
    try:
        first = await relay.run_once()
        assert (first.retried, first.deferred) == (1, 4)
        (throttled,) = [r for r in await pending(db) if r.attempts == 1]
        assert throttled.next_attempt_at.replace(tzinfo=UTC) == clock.now + timedelta(seconds=7)  # Retry-After
        for _ in range(6):
            clock.advance(3600)
            await relay.run_once()
    finally:
        await exporter.close()
    assert await pending(db) == []
    assert sorted(booked_ids(kind, fake)) == sorted(e.id for e in events)
    assert fake.duplicates == 1  # the event whose answer timed out was sent again and not counted again
    assert (await relay.status())["totals"] == {"pending": 0, "sent": 5, "parked": 0}


async def test_nothing_is_lost_while_the_service_is_down(db: Database, service: tuple[str, LoopbackService]) -> None:
    kind, fake = service
    fake.down()
    events = await enqueue(db, 5, kind)
    clock = FakeClock()
    exporter = exporter_for(kind, fake)
    relay = OutboxRelay(db, {kind: exporter}, None, clock=clock)
    try:
        for _ in range(3):
            stats = await relay.run_once()
            assert (stats.retried, stats.deferred) == (1, 4)
            clock.advance(3600)
        tried = [r for r in await pending(db) if r.attempts]
        assert tried and all("could not reach the receiver" in (r.last_error or "") for r in tried)
        fake.up()
        assert (await relay.run_once()).sent == 5
    finally:
        await exporter.close()
    assert sorted(booked_ids(kind, fake)) == sorted(e.id for e in events)
    assert fake.duplicates == 0


async def test_a_crash_after_sending_is_not_counted_twice(db: Database, service: tuple[str, LoopbackService]) -> None:
    kind, fake = service
    (event,) = await enqueue(db, 1, kind)
    clock = FakeClock()
    exporter = exporter_for(kind, fake)
    try:
        with pytest.raises(Crash):
            await OutboxRelay(db, {kind: CrashAfterSend(exporter)}, None, clock=clock).run_once()
        clock.advance(600)  # the dead relay's lease runs out
        stats = await OutboxRelay(db, {kind: exporter}, None, clock=clock).run_once()
    finally:
        await exporter.close()
    assert stats.claimed == 1 and stats.sent + stats.duplicate == 1
    assert fake.requests == 2 and booked_ids(kind, fake) == [event.id]
    async with db.session() as s:
        row = await s.get(OutboxEvent, billing_row_id(event.id, kind))
    assert row is not None and (row.status, row.attempts) == ("sent", 2)


async def test_rows_park_after_max_attempts_and_replay(db: Database, service: tuple[str, LoopbackService]) -> None:
    kind, fake = service
    (event,) = await enqueue(db, 1, kind)
    fake.script = ["500"] * 3
    clock = FakeClock()
    exporter = exporter_for(kind, fake)
    relay = OutboxRelay(db, {kind: exporter}, None, clock=clock, max_attempts=3)
    try:
        for _ in range(3):
            await relay.run_once()
            clock.advance(3600)
        status = await relay.status()
        assert status["totals"]["parked"] == 1
        assert status["parked"][0]["last_error"].startswith("HTTP 500")
        assert await relay.replay(parked=True) == 1
        assert (await relay.run_once()).sent == 1
    finally:
        await exporter.close()
    assert booked_ids(kind, fake) == [event.id] and fake.requests == 4


async def test_permanent_failures_park_at_once_and_never_log_the_key(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeStripe()
    unmapped, stale = billing_event(tenant="globex"), billing_event(age=timedelta(days=36))
    async with db.session() as s:
        for event in (unmapped, stale):
            enqueue_billing(s, event, ["stripe"])
        enqueue_billing(s, billing_event(), ["stripe-wrong-key"])
    exporters = {
        "stripe": exporter_for("stripe", fake, customer_template=None),
        "stripe-wrong-key": exporter_for("stripe", fake, api_key="sk_test_wrong_key_456"),
    }
    relay = OutboxRelay(db, exporters, None, clock=FakeClock())
    try:
        assert (await relay.run_once()).parked == 3
    finally:
        for exporter in exporters.values():
            await exporter.close()
        fake.stop()
    errors = {row["target"] + ":" + row["last_error"] for row in (await relay.status())["parked"]}
    assert "stripe:Stripe accepts meter events from the past 35 days only" in errors
    assert any("no customer for tenant='globex'" in e for e in errors)
    assert any(e.startswith("stripe-wrong-key:HTTP 401") for e in errors)
    assert fake.requests == 1 and fake.books == {}
    assert API_KEY not in caplog.text and "sk_test_wrong_key_456" not in caplog.text


def test_config_is_validated_without_echoing_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidArgument, match="api_key") as leaked:
        FACTORIES["stripe"]({"api_key": ["sk_live_SECRET_VALUE"]})
    assert "sk_live_SECRET_VALUE" not in str(leaked.value)
    for bad in ({"base_url": "ftp://x", "api_key": "k"}, {"api_key": "k", "colour": "red"}, {}):
        with pytest.raises(InvalidArgument):
            FACTORIES["lago"](bad)
    with pytest.raises(InvalidArgument, match="customer_template"):
        FACTORIES["openmeter"]({"customer_template": "{user}"})

    monkeypatch.setenv("STRIPE_KEY_FOR_TEST", "sk_from_env")
    exporter = FACTORIES["stripe"]({"api_key_env": "STRIPE_KEY_FOR_TEST"})
    assert exporter.client.headers["Authorization"] == "Bearer sk_from_env"  # type: ignore[attr-defined]
    assert "Authorization" not in FACTORIES["openmeter"]({}).client.headers  # type: ignore[attr-defined]


def test_the_plugin_is_found_through_its_entry_point() -> None:
    manager = pluggy.PluginManager("bigrag")
    manager.add_hookspecs(hookspecs)
    manager.load_setuptools_entrypoints("bigrag", name="billing")
    found: dict[str, BillingExporterFactory] = {}
    manager.hook.register_billing_exporters(register=found.__setitem__)
    assert set(found) == {"stripe", "openmeter", "lago"}
    assert all(exporter_class(name).name == name for name in found)  # each registered under its exporter's name
