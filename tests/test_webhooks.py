"""Webhooks: subscriptions, signed deliveries through the outbox to a loopback receiver, and verification."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from bigrag_mcp.errors import InvalidArgument, NotFound
from bigrag_mcp.services.outbox import OutboxRelay
from bigrag_mcp.services.webhooks import (
    WebhookSender,
    create_webhook,
    delete_webhook,
    enqueue_webhook_event,
    list_webhooks,
    raw_body,
    sign,
    verify_signature,
)
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import OutboxEvent
from bigrag_mcp.testing.relay import FakeClock

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]


class Receiver:
    """A webhook endpoint that checks signatures like a careful receiver and deduplicates by delivery id."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.secret = ""
        self.failures_left = 0
        self.requests: list[dict[str, str]] = []
        self.books: dict[str, bytes] = {}  # delivery id -> body, counted once
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(dict(self.headers.items()))
                ok = verify_signature(
                    receiver.secret,
                    self.headers["X-BigRAG-Timestamp"],
                    body,
                    self.headers["X-BigRAG-Signature"],
                    now=receiver.clock(),
                )
                if not ok:
                    self.send_response(401)
                elif receiver.failures_left:
                    receiver.failures_left -= 1
                    self.send_response(500)
                else:
                    receiver.books.setdefault(self.headers["X-BigRAG-Delivery"], body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def receiver(clock: FakeClock) -> Iterator[Receiver]:
    server = Receiver(clock)
    yield server
    server.stop()


async def test_create_validates_and_shows_the_secret_only_once(db: Database) -> None:
    async with db.session() as s:
        created = await create_webhook(s, "https://app.example/hooks", ["collection.*", "tenant.offboarded"])
        chosen = await create_webhook(s, "http://127.0.0.1:9/h", ["document.uploaded"], secret="s" * 20, allow_private=True)
    assert created.secret is not None and created.secret.startswith("whsec_") and len(created.secret) > 30
    assert chosen.secret == "s" * 20
    assert created.as_dict()["secret"] == created.secret

    async with db.session() as s:
        listed = await list_webhooks(s)
    assert [(w.id, w.events) for w in listed] == [
        (created.id, ["collection.*", "tenant.offboarded"]),
        (chosen.id, ["document.uploaded"]),
    ]
    assert all(w.secret is None and "secret" not in w.as_dict() for w in listed)

    bad = [
        ("ftp://x/y", ["collection.*"], None),
        ("https:///nohost", ["collection.*"], None),
        ("https://x", [], None),
        ("https://x", ["collection.updated"], None),
        ("https://x", ["*"], None),
        ("https://x", ["collection.*"], "short"),
    ]
    for url, events, secret in bad:
        with pytest.raises(InvalidArgument):
            async with db.session() as s:
                await create_webhook(s, url, events, secret=secret)

    async with db.session() as s:
        assert (await delete_webhook(s, created.id)).id == created.id
    with pytest.raises(NotFound):
        async with db.session() as s:
            await delete_webhook(s, created.id)


async def test_events_fan_out_to_matching_subscriptions_inside_the_transaction(db: Database) -> None:
    async with db.session() as s:
        everything = await create_webhook(s, "https://a.example/h", ["collection.*", "document.*", "tenant.offboarded"])
        uploads = await create_webhook(s, "https://b.example/h", ["document.uploaded"])
        await create_webhook(s, "https://c.example/h", ["collection.created"])

    with pytest.raises(RuntimeError):
        async with db.session() as s:
            await enqueue_webhook_event(s, "document.uploaded", {"document_id": "d1"})
            raise RuntimeError("upload failed")
    async with db.session() as s:
        assert (await s.scalars(select(OutboxEvent))).all() == []
        ids = await enqueue_webhook_event(s, "document.uploaded", {"document_id": "d1"})
        with pytest.raises(InvalidArgument):
            await enqueue_webhook_event(s, "document.*", {})
    async with db.session() as s:
        queued = (await s.scalars(select(OutboxEvent))).all()
    assert sorted(r.id for r in queued) == sorted(ids)
    assert {r.target for r in queued} == {everything.id, uploads.id}
    assert {r.kind for r in queued} == {"webhook"}
    assert queued[0].payload["id"] == queued[1].payload["id"]  # one event id, one delivery id per subscription
    assert queued[0].payload["data"] == {"document_id": "d1"}


async def test_deliveries_are_signed_retried_and_counted_once(db: Database, receiver: Receiver, clock: FakeClock) -> None:
    async with db.session() as s:
        hook = await create_webhook(s, receiver.url, ["tenant.offboarded"], allow_private=True)
        (delivery_id,) = await enqueue_webhook_event(s, "tenant.offboarded", {"collection": "shared", "tenant": "acme"})
    assert hook.secret is not None
    receiver.secret = hook.secret
    receiver.failures_left = 1
    sender = WebhookSender(db, clock=clock, allow_private=True)
    relay = OutboxRelay(db, {}, sender, clock=clock, base_delay=30)
    try:
        assert (await relay.run_once()).retried == 1
        clock.now += timedelta(seconds=30)
        assert (await relay.run_once()).sent == 1
        assert await relay.replay([delivery_id]) == 1  # the receiver says it lost it: send it again
        assert (await relay.run_once()).sent == 1
    finally:
        await relay.close()

    assert len(receiver.requests) == 3
    assert {r["X-BigRAG-Delivery"] for r in receiver.requests} == {delivery_id}
    assert {r["X-BigRAG-Event"] for r in receiver.requests} == {"tenant.offboarded"}
    assert list(receiver.books) == [delivery_id]
    async with db.session() as s:
        row = await s.get(OutboxEvent, delivery_id)
    assert row is not None and receiver.books[delivery_id] == raw_body(row.payload)


async def test_a_deleted_webhook_parks_its_queued_deliveries(db: Database, receiver: Receiver, clock: FakeClock) -> None:
    async with db.session() as s:
        hook = await create_webhook(s, receiver.url, ["collection.*"], allow_private=True)
        await enqueue_webhook_event(s, "collection.deleted", {"collection": "c"})
        await delete_webhook(s, hook.id)
    sender = WebhookSender(db, clock=clock, allow_private=True)
    relay = OutboxRelay(db, {}, sender, clock=clock)
    try:
        assert (await relay.run_once()).parked == 1
    finally:
        await relay.close()
    assert receiver.requests == []
    assert (await relay.status())["parked"][0]["last_error"] == f"webhook {hook.id} was deleted"


def test_signature_verifies_and_tampering_fails() -> None:
    secret, body = "whsec_test_secret_value", b'{"type":"collection.created"}'
    now = datetime(2026, 5, 1, tzinfo=UTC)
    stamp = int(now.timestamp())
    signature = sign(secret, stamp, body)
    assert verify_signature(secret, str(stamp), body, signature, now=now)
    assert verify_signature(secret, stamp, body, signature.upper(), now=now + timedelta(seconds=299))
    assert not verify_signature(secret, stamp, body + b" ", signature, now=now)
    assert not verify_signature(secret, stamp + 1, body, signature, now=now)
    assert not verify_signature("whsec_other_secret_val", stamp, body, signature, now=now)
    assert not verify_signature(secret, stamp, body, signature, now=now + timedelta(seconds=301))
    assert not verify_signature(secret, "not-a-number", body, signature, now=now)


@pytest.mark.sqlite_only  # address checks, nothing of the store's
@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/h", "http://localhost/h", "http://10.1.2.3/h", "http://169.254.169.254/latest", "http://[::1]/h", "http://[::ffff:192.168.0.1]/h"]
)
async def test_internal_destinations_are_refused_by_default(db: Database, url: str) -> None:
    async with db.session() as s:
        with pytest.raises(InvalidArgument, match="internal address"):
            await create_webhook(s, url, ["document.*"])


@pytest.mark.sqlite_only  # a resolver check at send time, nothing of the store's
async def test_a_name_that_resolves_inside_is_refused_at_delivery_time(db: Database, receiver: Receiver, clock: FakeClock) -> None:
    named = receiver.url.replace("127.0.0.1", "localhost")  # a name, as a public DNS name rebound inside would be
    async with db.session() as s:
        hook = await create_webhook(s, named, ["tenant.offboarded"], allow_private=True)
    guarded = WebhookSender(db, clock=clock)
    try:
        result = await guarded.send("dlv_1", hook.id, {"type": "tenant.offboarded", "data": {}})
    finally:
        await guarded.close()
    assert result.status == "failed" and "resolves to internal address" in result.detail
    assert receiver.requests == []
