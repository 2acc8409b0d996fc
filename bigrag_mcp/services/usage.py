"""Usage metering: record billable operations in the caller's transaction and report them from the usage rollup."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from pydantic import BaseModel
from sqlalchemy import BigInteger, ColumnElement, Float, case, cast, false, func, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.services.bulk import insert_rows
from bigrag_mcp.services.prices import PriceTable
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import ROLLUP_SPANS, Collection, UsageEvent, UsageRollup

OPERATIONS = frozenset({"query", "chat", "upload", "upsert", "delete"})
MAX_WINDOW_DAYS = 365

# One match per token: each started 4 characters of an ASCII letter-and-digit run, or any other non-space character.
_TOKEN = re.compile(r"[A-Za-z0-9]{1,4}|\S")
_ARRAY_FROM = 4096  # characters from which ASCII text is counted with numpy rather than the pattern
_ASCII_CLASS = np.full(128, 2, dtype=np.int8)  # by byte: 0 whitespace (as `\s` and str.isspace), 1 letter or digit, 2 other
_ASCII_CLASS[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = 0
_ASCII_CLASS[[*range(48, 58), *range(65, 91), *range(97, 123)]] = 1


def estimate_tokens(texts: Iterable[str]) -> int:
    """A deterministic tokenizer stand-in: an ASCII word run costs one token per 4 characters, any other mark one."""
    return estimate_tokens_each([texts])[0]


def estimate_tokens_each(groups: Sequence[Iterable[str]]) -> list[int]:
    """`estimate_tokens` of each group of texts; long ASCII text is counted in a few array passes over all groups."""
    joined = [" ".join(texts) for texts in groups]  # a space neither makes nor joins a token
    whole = " ".join(joined)
    if len(whole) < _ARRAY_FROM or not whole.isascii():
        return [len(_TOKEN.findall(text)) for text in joined]
    kind = _ASCII_CLASS[np.frombuffer(whole.encode("ascii"), dtype=np.uint8)]
    edges = np.diff((kind == 1).view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # letter-and-digit runs
    bounds = np.cumsum([len(text) + 1 for text in joined])  # where each group's text and its separator end
    runs = np.bincount(np.searchsorted(bounds, starts, side="right"), weights=(ends - starts + 3) // 4, minlength=len(joined))
    others = np.bincount(np.searchsorted(bounds, np.flatnonzero(kind == 2), side="right"), minlength=len(joined))
    return (runs.astype(np.int64) + others).tolist()


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
    await insert_rows(session, UsageEvent, rows)


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
_SUMS = ("events", *_COUNTS, "latency_sum")
_IS_CALL = UsageEvent.operation.in_(("query", "chat"))
_DERIVED: dict[str, ColumnElement[Any]] = {
    "events": func.count(),
    "queries": func.sum(case((UsageEvent.operation == "query", 1), else_=0)),
    "chat_calls": func.sum(case((UsageEvent.operation == "chat", 1), else_=0)),
    "embedding_tokens_estimated": func.sum(case((UsageEvent.tokens_estimated, UsageEvent.embedding_tokens), else_=0)),
    "latency_sum": func.sum(case((_IS_CALL, UsageEvent.latency_ms), else_=0.0)),
}
_EVENT_SUMS = [  # the rollup's sums in its order, over raw events
    (_DERIVED[name] if name in _DERIVED else func.sum(getattr(UsageEvent, name))).label(name) for name in _SUMS
]
_TOKENS = _SUMS.index("embedding_tokens")
_EPOCH = date(1970, 1, 1)

_Key = tuple[Any, ...]


class _Net:
    """Sums per key: rollup rows added, events after `now` (in the rollup's last day) taken away."""

    def __init__(self) -> None:
        self.sums: dict[_Key, list[Any]] = {}

    def add(self, key: _Key, values: tuple[Any, ...], sign: int = 1) -> None:
        mine = self.sums.get(key)
        if mine is None and sign > 0:
            self.sums[key] = list(values)
        else:
            self.sums[key] = [a + sign * b for a, b in zip(mine or [0] * len(values), values, strict=True)]

    def items(self) -> list[tuple[_Key, list[Any]]]:
        """The keys that still have events."""
        return [(key, sums) for key, sums in self.sums.items() if sums[0] > 0]


class _Prices:
    """Price per token of each (provider, model), looked up once."""

    def __init__(self, prices: PriceTable) -> None:
        self.prices = prices
        self.known: dict[tuple[str | None, str | None], Decimal | None] = {}

    def __call__(self, provider: str | None, model: str | None) -> Decimal | None:
        if (provider, model) not in self.known:
            price = self.prices.price(provider, model)
            self.known[provider, model] = None if price is None else Decimal(str(price)) / 1_000_000
        return self.known[provider, model]


_Row = tuple[str | None, str | None, list[Any]]  # (provider, model, sums in `_SUMS` order)


def _figures(rows: list[_Row], price: _Prices) -> dict[str, Any]:
    """The report's figures of some rows of sums, pricing each (provider, model)'s tokens."""
    values = [sum(column) for column in zip(*(sums for _, _, sums in rows), strict=True)] or [0] * len(_SUMS)
    tokens: dict[tuple[str | None, str | None], int] = {}
    for provider, model, sums in rows:
        if sums[_TOKENS]:
            tokens[provider, model] = tokens.get((provider, model), 0) + sums[_TOKENS]
    cost: Decimal | None = Decimal(0)
    for (provider, model), count in tokens.items():
        unit = price(provider, model)
        if unit is None or cost is None:
            cost = None
        else:
            cost += unit * count
    counts = dict(zip(_COUNTS, values[1:-1], strict=True))
    calls = counts["queries"] + counts["chat_calls"]
    return {
        **counts,
        "embedding_cost_usd_estimate": None if cost is None else float(cost),
        "avg_latency_ms": values[-1] / calls if calls else None,
    }


def _day_number(day: date) -> int:
    """Days since 1970-01-01, the rollup's day numbers."""
    return (day - _EPOCH).days


def rollup_blocks(first: int, last: int) -> list[tuple[int, int]]:
    """The aligned (span, start_day) blocks of the rollup that tile days first..last exactly, each as long as fits."""
    blocks = []
    while first <= last:
        span = max(s for s in ROLLUP_SPANS if first % s == 0 and first + s - 1 <= last)
        blocks.append((span, first))
        first += span
    return blocks


def _rollup_sums(columns: Any) -> list[ColumnElement[Any]]:
    """Sums of the rollup's columns, counts as integers on every database (Postgres sums bigints as numeric)."""
    return [cast(func.sum(columns[name]), Float if name == "latency_sum" else BigInteger).label(name) for name in _SUMS]


def _check_window(window_days: int) -> None:
    if isinstance(window_days, bool) or not isinstance(window_days, int) or not 1 <= window_days <= MAX_WINDOW_DAYS:
        raise InvalidArgument(f"window_days must be a whole number from 1 to {MAX_WINDOW_DAYS}, not {window_days!r}")


def _matches(column: Any, value: str) -> ColumnElement[bool]:
    """column == value in the rollup, where "" stands for no value (and so matches no filter)."""
    return column == value if value else false()


async def usage_report(
    db: Database,
    *,
    window_days: int,
    collection: str | None = None,
    tenant: str | None = None,
    prices: PriceTable,
    now: datetime | None = None,
) -> UsageReport:
    """Usage of the last `window_days` UTC days up to `now`; `collection`/`tenant` restrict every figure exactly.

    Read from the rollup's blocks covering the window's whole days, less the events after `now` on its last day.
    """
    _check_window(window_days)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    end = now.date()
    start = end - timedelta(days=window_days - 1)
    first, last = _day_number(start), _day_number(end)
    late = [UsageEvent.created_at > now, UsageEvent.created_at < datetime.combine(end + timedelta(days=1), time(), UTC)]
    rolled: list[ColumnElement[bool]] = []
    if collection is not None:
        late.append(UsageEvent.collection == collection)
        rolled.append(_matches(UsageRollup.collection, collection))
    if tenant is not None:
        late.append(UsageEvent.tenant == tenant)
        rolled.append(_matches(UsageRollup.tenant, tenant))
    # the timeline's rows: one tenant's own, one collection's, or everything's
    scope = 0 if tenant is not None else 1 if collection is not None else 2
    keys = (UsageRollup.collection, UsageRollup.tenant, UsageRollup.provider, UsageRollup.model)
    async with db.session() as session:
        if collection is not None:  # a name means the collection that holds it now, never an earlier one
            live = await session.scalar(select(Collection.uid).where(Collection.name == collection))
            if live is not None:
                late.append(UsageEvent.collection_uid == live)
                rolled.append(UsageRollup.collection_uid == live)
        blocks = union_all(*(
            select(*keys, *(getattr(UsageRollup, name) for name in _SUMS))
            .where(UsageRollup.scope == 0, UsageRollup.span == span, UsageRollup.start_day == day, *rolled)
            for span, day in rollup_blocks(first, last)
        )).subquery()
        block_keys = [blocks.c[column.key] for column in keys]
        groups = (await session.execute(
            select(*block_keys, *_rollup_sums(blocks.c)).group_by(*block_keys)
        )).all()
        daily_keys = (UsageRollup.start_day, UsageRollup.provider, UsageRollup.model)
        daily = (await session.execute(
            select(*daily_keys, *_rollup_sums(UsageRollup.__table__.c))
            .where(UsageRollup.scope == scope, UsageRollup.span == 1, UsageRollup.start_day.between(first, last),
                   *rolled)
            .group_by(*daily_keys)
        )).all()
        event_keys = (UsageEvent.collection, UsageEvent.tenant, UsageEvent.provider, UsageEvent.model)
        after_now = (await session.execute(select(*event_keys, *_EVENT_SUMS).where(*late).group_by(*event_keys))).all()

    per_group, per_day = _Net(), _Net()
    for collection_, tenant_, provider, model, *values in groups:
        per_group.add((collection_ or None, tenant_ or None, provider or None, model or None), tuple(values))
    for day, provider, model, *values in daily:
        per_day.add((day, provider or None, model or None), tuple(values))
    for collection_, tenant_, provider, model, *values in after_now:
        per_group.add((collection_, tenant_, provider, model), tuple(values), -1)
        per_day.add((last, provider, model), tuple(values), -1)

    price = _Prices(prices)
    every: list[_Row] = []
    per_collection: dict[str | None, list[_Row]] = {}
    per_tenant: dict[tuple[str | None, str], list[_Row]] = {}
    for (name, group_tenant, provider, model), sums in per_group.items():
        row = (provider, model, sums)
        every.append(row)
        per_collection.setdefault(name, []).append(row)
        if group_tenant is not None:
            per_tenant.setdefault((name, group_tenant), []).append(row)
    timeline: dict[date, list[_Row]] = {start + timedelta(days=i): [] for i in range(window_days)}
    for (day, provider, model), sums in per_day.items():
        timeline[_EPOCH + timedelta(days=day)].append((provider, model, sums))

    figures = _figures(every, price)
    return UsageReport(
        window_days=window_days, start=start, end=end, collection=collection, tenant=tenant,
        queries_total=figures["queries"], chat_calls_total=figures["chat_calls"],
        documents_total=figures["documents"], chunks_total=figures["chunks"],
        storage_bytes_total=figures["storage_bytes"], embedding_tokens_total=figures["embedding_tokens"],
        embedding_tokens_estimated=figures["embedding_tokens_estimated"],
        embedding_cost_usd_estimate=figures["embedding_cost_usd_estimate"],
        chat_input_tokens_total=figures["chat_input_tokens"], chat_output_tokens_total=figures["chat_output_tokens"],
        avg_latency_ms=figures["avg_latency_ms"],
        timeline=[UsageDay(date=d, **_figures(rows, price)) for d, rows in timeline.items()],
        by_collection=[CollectionUsage(collection=name, **_figures(rows, price))
                       for name, rows in sorted(per_collection.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))],
        by_tenant=[TenantUsage(collection=name, tenant=t, **_figures(rows, price))
                   for (name, t), rows in sorted(per_tenant.items(), key=lambda kv: (kv[0][0] or "", kv[0][1]))],
    )
