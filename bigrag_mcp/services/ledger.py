"""One place that turns what a service did into usage rows, audit rows, billing events and webhooks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.limits.engine import Hold, Limits
from bigrag_mcp.limits.fastpath import Prepared
from bigrag_mcp.policy import Principal
from bigrag_mcp.services.audit import AuditFields, append_audit_many
from bigrag_mcp.services.outbox import enqueue_billing, new_event_id
from bigrag_mcp.services.usage import record_usage_many, resolve_tokens, usage_row
from bigrag_mcp.services.usage_spool import UsageSpool
from bigrag_mcp.services.webhooks import EVENT_TYPES, enqueue_webhook_events
from bigrag_mcp.store.models import Collection, UsageEvent, bulk_insert
from bigrag_mcp.types import BillingEvent

log = logging.getLogger(__name__)
MAX_WAITING = 10_000  # usage rows kept in memory while the store is busy; beyond that the caller writes its own


@dataclass(frozen=True)
class Caller:
    """Who acts: the API key (None for the operator's CLI) with its pins, and the request id."""

    principal: Principal | None = None
    request_id: str | None = None
    hold: Hold | None = None  # what the limits admitted for this call, settled by the ledger

    @property
    def key_id(self) -> str | None:
        return self.principal.key_id if self.principal else None

    @property
    def tenant(self) -> str | None:
        return self.principal.tenant if self.principal else None


OPERATOR = Caller()

# action -> usage operation; actions not listed here meter nothing
USAGE_OPERATIONS = {
    "query": "query",
    "chat": "chat",
    "document.uploaded": "upload",
    "vectors.upserted": "upsert",
    "document.deleted": "delete",
    "vectors.deleted": "delete",
    "collection.deleted": "delete",
    "tenant.offboarded": "delete",
}
NOT_AUDITED = frozenset({"query", "chat"})


@dataclass(frozen=True)
class Activity:
    """What happened, in the caller's transaction: an action name and the figures it moved."""

    action: str  # e.g. "collection.created", "document.uploaded", "query"
    collection: str | None
    tenant: str | None = None
    resource_type: str = "collection"
    resource_id: str | None = None
    documents: int = 0
    chunks: int = 0
    storage_bytes: int = 0
    embedding_tokens: int | None = None
    chat_input_tokens: int = 0
    chat_output_tokens: int = 0
    provider: str | None = None
    model: str | None = None
    latency_ms: float = 0.0
    texts: Sequence[str] = ()  # what was embedded, to estimate tokens when the provider reported none
    estimated_tokens: int | None = None  # or that estimate, made already (off the event loop) by the caller
    details: dict[str, Any] = field(default_factory=dict)
    collection_uid: str | None = None  # the collection's identity, so usage never follows a reused name

    @classmethod
    def of(cls, action: str, collection: Collection, **figures: Any) -> Activity:
        return cls(
            action=action,
            collection=collection.name,
            **{"resource_id": collection.name, "collection_uid": collection.uid, **figures},
        )

    def but(self, **changes: Any) -> Activity:
        return replace(self, **changes)


class Ledger:
    """Writes an activity's traces inside the caller's transaction, so they commit or roll back with the work."""

    def __init__(
        self, billing_exporters: Sequence[str] = (), limits: Limits | None = None, spool: UsageSpool | None = None
    ) -> None:
        self.billing_exporters = tuple(billing_exporters)
        self.limits = limits
        self.spool = spool  # where waiting rows are kept on disk too (SQLite file stores)
        self._waiting: list[dict[str, Any]] = []  # usage rows `record_now` could not write at once
        self._writer: asyncio.Task[None] | None = None  # the task writing them

    async def record(self, session: AsyncSession, caller: Caller, activity: Activity) -> None:
        await self.record_many(session, [(caller, activity)])

    def record_now(self, caller: Caller, activity: Activity) -> bool:
        """Write an activity whose only trace is its usage row (a query or chat with no limits to settle, no billing,
        no audit, no webhook) without waiting: at once on the SQLite fast path, or, while another transaction holds
        the store's write lock (an upload being indexed), by a task of this ledger as soon as the lock is free (see
        `flush`), so the call never waits for someone else's write; meanwhile the row is in the spool too, should the
        process die. False when it has more to write, or when MAX_WAITING rows already wait: then `record` it in a
        session."""
        fast = self.limits.fast if self.limits is not None else None
        operation = USAGE_OPERATIONS.get(activity.action)
        if (
            fast is None or operation not in ("query", "chat") or (self.limits is not None and self.limits.rules)
            or self.billing_exporters or activity.action not in NOT_AUDITED or activity.action in EVENT_TYPES
        ):
            return False
        row = self._usage(caller, activity, operation)
        if not self._waiting and fast.write(_usage_insert(tuple(row)), row):
            return True
        if len(self._waiting) >= MAX_WAITING:
            return False
        if self.spool is not None:
            try:
                self.spool.append(row)
            except OSError:
                log.exception("could not spool a usage row; the call writes its own, waiting for the store")
                return False
        self._waiting.append(row)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_waiting())
        return True

    async def _write_waiting(self) -> None:
        """Write the waiting usage rows until none is left; a failure is logged, the rows stay for the next try."""
        try:
            while self._waiting:
                await self._write_once()
        except Exception:
            log.exception("could not write %d usage rows; they are tried again with the next ones", len(self._waiting))
        finally:
            self._writer = None

    async def _write_once(self) -> None:
        """Write the rows waiting now in one transaction (put back if that fails): on the fast path when the store is
        free, else in a session, whose statement waits for the write lock in its own thread."""
        rows, self._waiting = self._waiting, []
        try:
            assert self.limits is not None and self.limits.fast is not None  # rows wait only beside a fast path
            if not self.limits.fast.write_many(_usage_insert(tuple(rows[0])), rows):
                async with self.limits.db.session() as session:
                    await record_usage_many(session, rows)
        except BaseException:
            self._waiting[:0] = rows
            raise
        if self.spool is not None:
            self.spool.keep(self._waiting)  # those that came while these were written

    async def flush(self) -> None:
        """Write the usage rows still waiting for the store (see `record_now`) now; raises if they cannot be."""
        if self._writer is not None:
            await asyncio.shield(self._writer)
        if self._waiting:
            await self._write_once()

    async def close(self) -> None:
        """`flush` before the store closes; rows that still cannot be written stay in the spool (if any) for the next
        process that opens the store, else they are logged as lost."""
        try:
            await self.flush()
        except Exception:
            kept = "left in the spool" if self.spool is not None else "lost"
            log.exception("%d usage rows could not be written before the store closed: %s", len(self._waiting), kept)
        if self.spool is not None:
            self.spool.close(clean=not self._waiting)

    async def record_many(self, session: AsyncSession, entries: Sequence[tuple[Caller, Activity]]) -> None:
        """Several activities of one transaction, each settled on its caller's hold: audit rows chained in one append,
        webhooks read once."""
        audits: list[AuditFields] = []
        usage: list[dict[str, Any]] = []
        events: list[tuple[str, dict[str, Any]]] = []
        for caller, activity in entries:
            tokens, estimated = _tokens(activity)
            operation = USAGE_OPERATIONS.get(activity.action)
            if operation is not None and self.limits is not None:
                await self.limits.settle(session, caller, activity)
            if operation is not None:
                usage.append(self._usage(caller, activity, operation))
            if activity.action not in NOT_AUDITED:
                audits.append(
                    AuditFields(
                        actor_key_id=caller.key_id,
                        action=activity.action,
                        resource_type=activity.resource_type,
                        resource_id=activity.resource_id,
                        tenant=activity.tenant,
                        request_id=caller.request_id,
                        metadata={"collection": activity.collection, **activity.details},
                    )
                )
            if activity.action in EVENT_TYPES:
                events.append(
                    (
                        activity.action,
                        {"collection": activity.collection, "tenant": activity.tenant, "resource_id": activity.resource_id, **activity.details},
                    )
                )
            if self.billing_exporters and operation in ("query", "chat", "upload"):
                self._bill(session, activity, operation, tokens, estimated)
        await record_usage_many(session, usage)
        await append_audit_many(session, audits)
        await enqueue_webhook_events(session, events)

    @staticmethod
    def _usage(caller: Caller, activity: Activity, operation: str) -> dict[str, Any]:
        tokens, estimated = _tokens(activity)
        return usage_row(
            operation=operation,
            collection=activity.collection,
            collection_uid=activity.collection_uid,
            tenant=activity.tenant,
            api_key_id=caller.key_id,
            documents=activity.documents,
            chunks=activity.chunks,
            storage_bytes=activity.storage_bytes,
            embedding_tokens=tokens,
            tokens_estimated=estimated and tokens > 0,
            chat_input_tokens=activity.chat_input_tokens,
            chat_output_tokens=activity.chat_output_tokens,
            provider=activity.provider,
            model=activity.model,
            latency_ms=activity.latency_ms,
        )

    def _bill(self, session: AsyncSession, activity: Activity, operation: str, tokens: int, estimated: bool) -> None:
        for event, value in ((operation, 1), ("embedding_tokens", tokens)):
            if value:
                enqueue_billing(
                    session,
                    BillingEvent(
                        id=new_event_id(),
                        event=event,
                        value=value,
                        timestamp=datetime.now(UTC),
                        collection=activity.collection,
                        tenant=activity.tenant,
                        properties={"model": activity.model, "estimated": estimated} if event == "embedding_tokens" else {},
                    ),
                    self.billing_exporters,
                )


@lru_cache(maxsize=8)
def _usage_insert(keys: tuple[str, ...]) -> Prepared:
    """The one-row usage insert of the fast path, compiled once for the columns `usage_row` sets."""
    return Prepared(bulk_insert(UsageEvent), keys)


def _tokens(activity: Activity) -> tuple[int, bool]:
    """The embedding tokens to meter and whether they are an estimate."""
    if activity.embedding_tokens is None and activity.estimated_tokens is not None:
        return activity.estimated_tokens, True
    return resolve_tokens(activity.embedding_tokens, activity.texts)
