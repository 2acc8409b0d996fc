"""The transactional outbox: billing events and webhook deliveries written with the work, sent by a relay.

Rows are added inside the caller's transaction (`enqueue_billing`, and `webhooks.enqueue_webhook_event`), so
they commit or roll back with the work they report. `OutboxRelay` sends them at least once: a row is claimed
by moving `next_attempt_at` forward (a lease) in an UPDATE guarded by its old value, sent with a stable
idempotency key, then marked. A relay that dies between send and mark leaves the lease to expire; the next
run re-sends the same key and the receiver deduplicates it.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, cast

import anyio
from sqlalchemy import ColumnElement, and_, false, func, or_, select, update
from sqlalchemy.engine import CursorResult, Row
from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.errors import InvalidArgument, NotFound
from bigrag_mcp.retry import is_transient_status, retry_after_from_headers
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import OutboxEvent, utcnow
from bigrag_mcp.types import BillingEvent, BillingExporter, BillingExporterFactory, DeliveryResult

if TYPE_CHECKING:  # httpx is imported when something is sent: commands that only enqueue do not load it
    import httpx

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MAX_EVENT_ID_CHARS = 100  # Stripe's limit on `identifier`, the strictest of the exporters


def new_event_id() -> str:
    """A fresh BillingEvent id (also the idempotency key every exporter sends)."""
    return f"evt_{uuid.uuid4().hex}"


def aware(moment: datetime) -> datetime:
    """The same instant with UTC attached when the database handed back a naive value."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def billing_row_id(event_id: str, exporter: str) -> str:
    """The outbox row id of one event for one exporter: deterministic, so an event is queued once per exporter."""
    return "bil_" + hashlib.sha256(f"{exporter}\x00{event_id}".encode()).hexdigest()[:40]


def event_to_payload(event: BillingEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "event": event.event,
        "value": event.value,
        "timestamp": aware(event.timestamp).isoformat(),
        "collection": event.collection,
        "tenant": event.tenant,
        "properties": dict(event.properties),
    }


def event_from_payload(payload: Mapping[str, Any]) -> BillingEvent:
    return BillingEvent(
        id=payload["id"],
        event=payload["event"],
        value=payload["value"],
        timestamp=aware(datetime.fromisoformat(payload["timestamp"])),
        collection=payload.get("collection"),
        tenant=payload.get("tenant"),
        properties=payload.get("properties") or {},
    )


def enqueue_billing(session: AsyncSession, event: BillingEvent, exporters: Iterable[str]) -> None:
    """Queue `event` once per exporter name in the caller's transaction; queuing the same event twice fails it."""
    if not event.id or len(event.id) > MAX_EVENT_ID_CHARS:
        raise InvalidArgument(f"billing event ids must be 1 to {MAX_EVENT_ID_CHARS} characters; got {event.id!r}")
    payload = event_to_payload(event)
    for exporter in dict.fromkeys(exporters):
        session.add(
            OutboxEvent(
                id=billing_row_id(event.id, exporter),
                kind="billing",
                target=exporter,
                payload=payload,
                status="pending",
                attempts=0,
                next_attempt_at=utcnow(),
            )
        )


def build_exporters(
    configs: Mapping[str, Mapping[str, Any]], factories: Mapping[str, BillingExporterFactory]
) -> dict[str, BillingExporter]:
    """Exporters by outbox target name; each config names its factory in "exporter" (default: the target name)."""
    exporters: dict[str, BillingExporter] = {}
    for target, config in configs.items():
        options = dict(config)
        kind = str(options.pop("exporter", target))
        if kind not in factories:
            installed = ", ".join(sorted(factories)) or "none"
            raise InvalidArgument(
                f"billing exporter {target!r} asks for {kind!r}, which is not installed ({installed})"
            )
        exporters[target] = factories[kind](options)
    return exporters


def http_result(response: httpx.Response) -> DeliveryResult:
    """2xx sent; 408/429/5xx retry (Retry-After honoured); any other status is a permanent failure."""
    code = response.status_code
    if 200 <= code < 300:
        return DeliveryResult("sent", f"HTTP {code}")
    detail = f"HTTP {code}: {response.text[:300]}".rstrip(": ")
    if is_transient_status(code):
        return DeliveryResult("retry", detail, retry_after_from_headers(response.headers))
    return DeliveryResult("failed", detail)


async def post_delivery(
    client: httpx.AsyncClient,
    url: str,
    *,
    recognise: Callable[[httpx.Response], DeliveryResult | None] | None = None,
    **request: Any,
) -> DeliveryResult:
    """POST and classify: transport errors and timeouts retry; `recognise` may claim a response (e.g. duplicates)."""
    import httpx

    try:
        response = await client.post(url, **request)
    except httpx.TimeoutException:
        return DeliveryResult("retry", "timed out waiting for the receiver")
    except httpx.TransportError as exc:
        return DeliveryResult("retry", f"could not reach the receiver: {type(exc).__name__}: {exc}")
    recognised = recognise(response) if recognise is not None else None
    return recognised if recognised is not None else http_result(response)


class DeliverySender(Protocol):
    """Sends one webhook delivery; `delivery_id` is the outbox row id, `target` the webhook id."""

    async def send(self, delivery_id: str, target: str, payload: Mapping[str, Any]) -> DeliveryResult: ...
    async def close(self) -> None: ...


@dataclass
class RelayStats:
    """What one relay run did; `deferred` rows were due but left for later because their target was failing."""

    claimed: int = 0
    sent: int = 0
    duplicate: int = 0
    retried: int = 0
    parked: int = 0
    deferred: int = 0

    def count(self, outcome: str) -> None:
        field = {"sent": "sent", "duplicate": "duplicate", "retry": "retried"}.get(outcome, "parked")
        setattr(self, field, getattr(self, field) + 1)


@dataclass(frozen=True)
class _Claim:
    id: str
    kind: str
    target: str
    payload: dict[str, Any]
    attempts: int
    lease_until: datetime


def _row_view(row: OutboxEvent) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "target": row.target,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "created_at": aware(row.created_at).isoformat(),
        "next_attempt_at": aware(row.next_attempt_at).isoformat() if row.status == "pending" else None,
    }


def backoff_seconds(attempts: int, *, base: float, cap: float) -> float:
    """Exponential backoff after `attempts` tries: base, 2*base, 4*base, ... capped."""
    return float(min(cap, base * 2 ** max(0, attempts - 1)))


class OutboxRelay:
    """Sends due outbox rows to billing exporters (by target name) and webhook deliveries to `webhook_sender`."""

    def __init__(
        self,
        db: Database,
        exporters: Mapping[str, BillingExporter],
        webhook_sender: DeliverySender | None,
        *,
        max_attempts: int = 8,
        clock: Clock = utcnow,
        base_delay: float = 10.0,
        max_delay: float = 3600.0,
        lease: timedelta = timedelta(minutes=5),
        send_timeout: float = 60.0,
    ) -> None:
        if send_timeout >= lease.total_seconds():
            raise InvalidArgument("the relay lease must outlast send_timeout, or a slow send could be claimed twice")
        self.db = db
        self.exporters = exporters
        self.webhook_sender = webhook_sender
        self.max_attempts = max_attempts
        self.clock = clock
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.lease = lease
        self.send_timeout = send_timeout

    def _sendable(self) -> ColumnElement[bool]:
        billing = and_(OutboxEvent.kind == "billing", OutboxEvent.target.in_(list(self.exporters)))
        webhooks = OutboxEvent.kind == "webhook" if self.webhook_sender is not None else false()
        return or_(billing, webhooks)

    async def run_once(self, limit: int = 100) -> RelayStats:
        """Claim up to `limit` due rows one by one, send each, and record the outcome."""
        stats = RelayStats()
        async with self.db.session() as s:
            due = (
                await s.execute(
                    select(OutboxEvent.id, OutboxEvent.target, OutboxEvent.next_attempt_at)
                    .where(OutboxEvent.status == "pending", OutboxEvent.next_attempt_at <= self.clock())
                    .where(self._sendable())
                    .order_by(OutboxEvent.next_attempt_at, OutboxEvent.id)
                    .limit(limit)
                )
            ).all()
        failing_targets: set[str] = set()
        for row_id, target, seen_at in due:
            if target in failing_targets:
                stats.deferred += 1
                continue
            claim = await self._claim(row_id, seen_at)
            if claim is None:
                continue  # another relay took it
            stats.claimed += 1
            result = await self._send(claim)
            outcome = await self._settle(claim, result)
            if outcome == "retry":
                failing_targets.add(target)
            stats.count(outcome)
        return stats

    async def _update_if_held(self, row_id: str, held_until: datetime, values: Mapping[str, Any]) -> Row[Any] | None:
        """Update a pending row only if `next_attempt_at` is still `held_until`; the row after, or None if it moved."""
        async with self.db.session() as s:
            result = await s.execute(
                update(OutboxEvent)
                .where(
                    OutboxEvent.id == row_id,
                    OutboxEvent.status == "pending",
                    OutboxEvent.next_attempt_at == held_until,
                )
                .values(**values)
                .returning(OutboxEvent.kind, OutboxEvent.target, OutboxEvent.payload, OutboxEvent.attempts)
                .execution_options(synchronize_session=False)
            )
            return result.first()

    async def _claim(self, row_id: str, seen_at: datetime) -> _Claim | None:
        lease_until = self.clock() + self.lease
        row = await self._update_if_held(
            row_id, seen_at, {"next_attempt_at": lease_until, "attempts": OutboxEvent.attempts + 1}
        )
        if row is None:
            return None
        return _Claim(row_id, row.kind, row.target, dict(row.payload), row.attempts, lease_until)

    async def _send(self, claim: _Claim) -> DeliveryResult:
        try:
            with anyio.fail_after(self.send_timeout):
                if claim.kind == "billing":
                    return await self.exporters[claim.target].send(event_from_payload(claim.payload))
                assert self.webhook_sender is not None  # only selected when a sender exists
                return await self.webhook_sender.send(claim.id, claim.target, claim.payload)
        except TimeoutError:
            return DeliveryResult("retry", f"no answer within {self.send_timeout:g} s")
        except Exception as exc:  # noqa: BLE001 - a plugin bug must not stop the relay; the row retries, then parks
            log.warning("outbox %s: %s raised %s", claim.id, claim.target, type(exc).__name__)
            return DeliveryResult("retry", f"{type(exc).__name__}: {exc}")

    async def _settle(self, claim: _Claim, result: DeliveryResult) -> str:
        now = self.clock()
        outcome: str = result.status
        values: dict[str, Any]
        if result.status in ("sent", "duplicate"):
            values = {"status": "sent", "sent_at": now, "last_error": None}
        elif result.status == "retry" and claim.attempts < self.max_attempts:
            delay = result.retry_after if result.retry_after is not None else self._backoff(claim.attempts)
            values = {"next_attempt_at": now + timedelta(seconds=max(0.0, delay)), "last_error": result.detail}
        else:
            outcome = "parked"
            values = {"status": "parked", "last_error": result.detail or result.status}
        done = await self._update_if_held(claim.id, claim.lease_until, values)
        if done is None:
            log.warning("outbox %s: lease lost before the outcome (%s) was recorded", claim.id, outcome)
        elif outcome in ("retry", "parked"):
            log.info("outbox %s to %s: %s (%s)", claim.id, claim.target, outcome, result.detail)
        return outcome

    def _backoff(self, attempts: int) -> float:
        return backoff_seconds(attempts, base=self.base_delay, cap=self.max_delay)

    async def run_forever(self, stop_event: anyio.Event, interval: float = 5.0, *, limit: int = 100) -> None:
        """Run until `stop_event` is set; a full batch runs again at once, otherwise waits `interval` seconds."""
        while not stop_event.is_set():
            try:
                stats = await self.run_once(limit)
            except Exception:
                log.exception("outbox relay run failed; trying again in %s s", interval)
                stats = RelayStats()
            if stats.claimed + stats.deferred < limit:
                with anyio.move_on_after(interval):
                    await stop_event.wait()

    async def close(self) -> None:
        """Close the exporters and the webhook sender this relay was given."""
        for exporter in self.exporters.values():
            await exporter.close()
        if self.webhook_sender is not None:
            await self.webhook_sender.close()

    async def status(self, *, rows_limit: int = 100) -> dict[str, Any]:
        """Counts by status and by target, rows due now, and parked or retrying rows with their last error."""
        now = self.clock()
        async with self.db.session() as s:
            grouped = (
                await s.execute(
                    select(OutboxEvent.kind, OutboxEvent.target, OutboxEvent.status, func.count()).group_by(
                        OutboxEvent.kind, OutboxEvent.target, OutboxEvent.status
                    )
                )
            ).all()
            due = await s.scalar(
                select(func.count()).where(OutboxEvent.status == "pending", OutboxEvent.next_attempt_at <= now)
            )
            oldest = await s.scalar(select(func.min(OutboxEvent.created_at)).where(OutboxEvent.status == "pending"))
            troubled = (
                await s.scalars(
                    select(OutboxEvent)
                    .where(
                        or_(
                            OutboxEvent.status == "parked",
                            and_(OutboxEvent.status == "pending", OutboxEvent.attempts > 0),
                        )
                    )
                    .order_by(OutboxEvent.created_at, OutboxEvent.id)
                    .limit(rows_limit)
                )
            ).all()
        totals = {"pending": 0, "sent": 0, "parked": 0}
        targets: dict[tuple[str, str], dict[str, Any]] = {}
        for kind, target, status, count in grouped:
            totals[status] = totals.get(status, 0) + count
            row = targets.setdefault(
                (kind, target), {"kind": kind, "target": target, "pending": 0, "sent": 0, "parked": 0}
            )
            row[status] = count
        return {
            "totals": totals,
            "due": due or 0,
            "oldest_pending_at": aware(oldest).isoformat() if oldest is not None else None,
            "by_target": sorted(targets.values(), key=lambda r: (r["kind"], r["target"])),
            "parked": [_row_view(row) for row in troubled if row.status == "parked"],
            "retrying": [_row_view(row) for row in troubled if row.status == "pending"],
        }

    async def replay(self, ids: Sequence[str] | None = None, *, parked: bool = False) -> int:
        """Requeue rows by id (any status: a sent row is re-sent with its original key) or every parked row."""
        if not ids and not parked:
            raise InvalidArgument("name the rows to replay, or ask for every parked row")
        condition = OutboxEvent.id.in_(list(ids)) if ids else OutboxEvent.status == "parked"
        async with self.db.session() as s:
            if ids:
                found = set((await s.scalars(select(OutboxEvent.id).where(condition))).all())
                missing = sorted(set(ids) - found)
                if missing:
                    raise NotFound(f"no outbox rows with ids {', '.join(missing)}")
            result = cast(
                CursorResult[Any],
                await s.execute(
                    update(OutboxEvent)
                    .where(condition)
                    .values(status="pending", attempts=0, next_attempt_at=self.clock(), sent_at=None, last_error=None)
                    .execution_options(synchronize_session=False)
                ),
            )
        return result.rowcount
