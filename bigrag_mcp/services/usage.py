"""Usage metering: record billable operations in the caller's transaction and report them, aggregated in SQL."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.services.prices import PriceTable
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import Collection, UsageEvent, bulk_insert

OPERATIONS = frozenset({"query", "chat", "upload", "upsert", "delete"})
MAX_WINDOW_DAYS = 365

_PIECE = re.compile(r"[A-Za-z0-9]+|\S")


def estimate_tokens(texts: Iterable[str]) -> int:
    """A deterministic tokenizer stand-in: an ASCII word run costs one token per 4 characters, any other mark one."""
    return sum(-(-len(piece) // 4) if piece[0].isascii() and piece[0].isalnum() else 1
               for text in texts for piece in _PIECE.findall(text))


def resolve_tokens(reported: int | None, texts: Iterable[str]) -> tuple[int, bool]:
    """(tokens, estimated): the provider's reported count, or an estimate flagged True when it reported none."""
    if reported is not None:
        return reported, False
    return estimate_tokens(texts), True


def usage_row(
    *,
    operation: str,
    collection: str | None = None,
    collection_uid: str | None = None,
    tenant: str | None = None,
    api_key_id: str | None = None,
    documents: int = 0,
    chunks: int = 0,
    storage_bytes: int = 0,
    embedding_tokens: int = 0,
    tokens_estimated: bool = False,
    chat_input_tokens: int = 0,
    chat_output_tokens: int = 0,
    provider: str | None = None,
    model: str | None = None,
    latency_ms: float = 0.0,
    created_at: datetime | None = None,
) -> dict[str, Any]:
    """One usage event's column values, checked.

    Deletes carry negative `documents`, `chunks` and `storage_bytes`; every other operation non-negative counts.
    An empty tenant ("" = no tenant field) is stored as None.
    """
    if operation not in OPERATIONS:
        raise ValueError(f"unknown usage operation {operation!r}; expected one of {sorted(OPERATIONS)}")
    sign = -1 if operation == "delete" else 1
    if documents * sign < 0 or chunks * sign < 0:
        raise ValueError(f"{operation} usage needs {'non-positive' if sign < 0 else 'non-negative'} documents/chunks")
    if min(embedding_tokens, chat_input_tokens, chat_output_tokens) < 0 or latency_ms < 0:
        raise ValueError("token counts and latency cannot be negative")
    when = (created_at or datetime.now(UTC)).astimezone(UTC)
    return {
        "created_at": when, "operation": operation, "collection": collection, "collection_uid": collection_uid,
        "tenant": tenant or None, "api_key_id": api_key_id,
        "documents": documents, "chunks": chunks, "storage_bytes": storage_bytes, "embedding_tokens": embedding_tokens,
        "tokens_estimated": tokens_estimated, "chat_input_tokens": chat_input_tokens,
        "chat_output_tokens": chat_output_tokens, "provider": provider, "model": model, "latency_ms": float(latency_ms),
    }


def record_usage(session: AsyncSession, **fields: Any) -> None:
    """Add one usage event (`usage_row`'s fields) to the caller's transaction, so it commits or rolls back with the
    work it measures."""
    row = UsageEvent(**usage_row(**fields))  # checked before the session is touched
    session.add(row)


async def record_usage_many(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> None:
    """Insert `usage_row`s in one statement in the caller's transaction (no ORM bookkeeping, no ids read back)."""
    if rows:
        await session.execute(bulk_insert(UsageEvent), list(rows))


class UsageFigures(BaseModel):
    """Sums over a set of usage events; documents, chunks and storage are net (uploads minus deletes)."""

    queries: int = 0
    chat_calls: int = 0
    documents: int = 0
    chunks: int = 0
    storage_bytes: int = 0
    embedding_tokens: int = 0
    embedding_tokens_estimated: int = 0
    embedding_cost_usd_estimate: float | None = 0.0
    chat_input_tokens: int = 0
    chat_output_tokens: int = 0
    avg_latency_ms: float | None = None


class UsageDay(UsageFigures):
    date: date


class CollectionUsage(UsageFigures):
    collection: str | None


class TenantUsage(CollectionUsage):
    tenant: str


class UsageReport(BaseModel):
    """Usage over `window_days` UTC days ending today (`start`..`end`, inclusive), optionally for one collection/tenant.

    `documents_total`, `chunks_total` and `storage_bytes_total` are net within the window: uploads and upserts
    minus deletes made in the window (negative when more was deleted than added). The embedding cost is null when
    tokens were spent on a model the price table does not know. `avg_latency_ms` averages query and chat calls.
    """

    window_days: int
    start: date
    end: date
    collection: str | None
    tenant: str | None
    queries_total: int
    chat_calls_total: int
    documents_total: int
    chunks_total: int
    storage_bytes_total: int
    embedding_tokens_total: int
    embedding_tokens_estimated: int
    embedding_cost_usd_estimate: float | None
    chat_input_tokens_total: int
    chat_output_tokens_total: int
    avg_latency_ms: float | None
    timeline: list[UsageDay]
    by_collection: list[CollectionUsage]
    by_tenant: list[TenantUsage]


_COUNTS = ("queries", "chat_calls", "documents", "chunks", "storage_bytes", "embedding_tokens",
           "embedding_tokens_estimated", "chat_input_tokens", "chat_output_tokens")
_IS_CALL = UsageEvent.operation.in_(("query", "chat"))
_MEASURES = (
    func.sum(case((UsageEvent.operation == "query", 1), else_=0)).label("queries"),
    func.sum(case((UsageEvent.operation == "chat", 1), else_=0)).label("chat_calls"),
    *(func.sum(getattr(UsageEvent, name)).label(name)
      for name in ("documents", "chunks", "storage_bytes", "embedding_tokens", "chat_input_tokens",
                   "chat_output_tokens")),
    func.sum(case((UsageEvent.tokens_estimated, UsageEvent.embedding_tokens), else_=0))
    .label("embedding_tokens_estimated"),
    func.sum(case((_IS_CALL, UsageEvent.latency_ms), else_=0.0)).label("latency_sum"),
)


class _Sums:
    """Adds grouped SQL rows of one (provider, model) each, pricing their tokens as it goes."""

    def __init__(self) -> None:
        self.counts = dict.fromkeys(_COUNTS, 0)
        self.latency_sum = 0.0
        self.cost: Decimal | None = Decimal(0)

    def add(self, row: Any, prices: PriceTable) -> None:
        for name in _COUNTS:
            self.counts[name] += int(getattr(row, name) or 0)
        self.latency_sum += float(row.latency_sum or 0.0)
        tokens = int(row.embedding_tokens or 0)
        if tokens and self.cost is not None:
            price = prices.price(row.provider, row.model)
            self.cost = None if price is None else self.cost + Decimal(str(price)) * tokens / 1_000_000

    def figures(self) -> dict[str, Any]:
        calls = self.counts["queries"] + self.counts["chat_calls"]
        return {
            **self.counts,
            "embedding_cost_usd_estimate": None if self.cost is None else float(self.cost),
            "avg_latency_ms": self.latency_sum / calls if calls else None,
        }


def _utc_day(dialect: str) -> ColumnElement[str]:
    """The UTC calendar day of an event as 'YYYY-MM-DD'."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", UsageEvent.created_at), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", UsageEvent.created_at)  # SQLite stores UTC text


def _check_window(window_days: int) -> None:
    if isinstance(window_days, bool) or not isinstance(window_days, int) or not 1 <= window_days <= MAX_WINDOW_DAYS:
        raise InvalidArgument(f"window_days must be a whole number from 1 to {MAX_WINDOW_DAYS}, not {window_days!r}")


async def usage_report(
    db: Database,
    *,
    window_days: int,
    collection: str | None = None,
    tenant: str | None = None,
    prices: PriceTable,
    now: datetime | None = None,
) -> UsageReport:
    """Usage of the last `window_days` UTC days up to `now`; `collection`/`tenant` restrict every figure exactly."""
    _check_window(window_days)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    end = now.date()
    start = end - timedelta(days=window_days - 1)
    where = [UsageEvent.created_at >= datetime.combine(start, time(), UTC), UsageEvent.created_at <= now]
    if collection is not None:
        where.append(UsageEvent.collection == collection)
    if tenant is not None:
        where.append(UsageEvent.tenant == tenant)
    day = _utc_day(db.engine.dialect.name).label("day")
    keys = (UsageEvent.collection, UsageEvent.tenant, UsageEvent.provider, UsageEvent.model)
    async with db.session() as session:
        if collection is not None:  # a name means the collection that holds it now, never an earlier one
            live = await session.scalar(select(Collection.uid).where(Collection.name == collection))
            if live is not None:
                where.append(UsageEvent.collection_uid == live)
        groups = (await session.execute(select(*keys, *_MEASURES).where(*where).group_by(*keys))).all()
        daily = (await session.execute(
            select(day, UsageEvent.provider, UsageEvent.model, *_MEASURES)
            .where(*where).group_by(day, UsageEvent.provider, UsageEvent.model)
        )).all()

    totals = _Sums()
    per_collection: dict[str | None, _Sums] = {}
    per_tenant: dict[tuple[str | None, str], _Sums] = {}
    for row in groups:
        totals.add(row, prices)
        per_collection.setdefault(row.collection, _Sums()).add(row, prices)
        if row.tenant is not None:
            per_tenant.setdefault((row.collection, row.tenant), _Sums()).add(row, prices)
    per_day = {start + timedelta(days=i): _Sums() for i in range(window_days)}
    for row in daily:
        per_day[date.fromisoformat(row.day)].add(row, prices)

    figures = totals.figures()
    return UsageReport(
        window_days=window_days, start=start, end=end, collection=collection, tenant=tenant,
        queries_total=figures["queries"], chat_calls_total=figures["chat_calls"],
        documents_total=figures["documents"], chunks_total=figures["chunks"],
        storage_bytes_total=figures["storage_bytes"], embedding_tokens_total=figures["embedding_tokens"],
        embedding_tokens_estimated=figures["embedding_tokens_estimated"],
        embedding_cost_usd_estimate=figures["embedding_cost_usd_estimate"],
        chat_input_tokens_total=figures["chat_input_tokens"], chat_output_tokens_total=figures["chat_output_tokens"],
        avg_latency_ms=figures["avg_latency_ms"],
        timeline=[UsageDay(date=d, **sums.figures()) for d, sums in per_day.items()],
        by_collection=[CollectionUsage(collection=name, **sums.figures())
                       for name, sums in sorted(per_collection.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))],
        by_tenant=[TenantUsage(collection=name, tenant=t, **sums.figures())
                   for (name, t), sums in sorted(per_tenant.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))],
    )
