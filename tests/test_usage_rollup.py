"""The usage report read from the rollup equals a plain computation over the raw usage rows, for random events."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from bigrag_mcp.services.prices import PriceTable, load_prices
from bigrag_mcp.services.usage import _day_number, record_usage, rollup_blocks, usage_report
from bigrag_mcp.store.db import Database, alembic_config
from bigrag_mcp.store.models import ROLLUP_SPANS, Collection, UsageEvent, UsageRollup

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
LIVE = {"docs": "docs-now", "shared": "shared-now"}  # "gone" has no live collection; its events keep old uids
MODELS = [("openai", "text-embedding-3-small"), ("cohere", "embed-v4.0"), ("openai", "unpriced"), (None, None)]
TENANTS = [None, "acme", "globex", "initech"]
PRICES = load_prices()


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    operation = draw(st.sampled_from(["query", "chat", "upload", "upsert", "delete"]))
    collection = draw(st.sampled_from(["docs", "shared", "gone"]))
    uid = draw(st.sampled_from([LIVE.get(collection), f"{collection}-before", None]))
    sign = -1 if operation == "delete" else 1
    provider, model = draw(st.sampled_from(MODELS))
    # days around every window's edges and a few after `now`; a quarter-millisecond grid keeps latency sums exact
    when = NOW + timedelta(days=draw(st.integers(-370, 2)), seconds=draw(st.integers(-43_200, 43_199)))
    return {
        "operation": operation, "collection": collection, "collection_uid": uid, "tenant": draw(st.sampled_from(TENANTS)),
        "documents": sign * draw(st.integers(0, 3)), "chunks": sign * draw(st.integers(0, 9)),
        "storage_bytes": sign * draw(st.integers(0, 5000)), "embedding_tokens": draw(st.integers(0, 2000)),
        "tokens_estimated": draw(st.booleans()), "chat_input_tokens": draw(st.integers(0, 300)),
        "chat_output_tokens": draw(st.integers(0, 300)), "provider": provider, "model": model,
        "latency_ms": draw(st.integers(0, 4000)) / 4,
        "created_at": draw(st.sampled_from([when, NOW, NOW + timedelta(microseconds=1), NOW.replace(hour=0)])),
    }


READS = st.tuples(
    st.sampled_from([1, 2, 7, 30, 90, 365]) | st.integers(1, 365),
    st.sampled_from([None, None, "docs", "shared", "gone"]),
    st.sampled_from([None, None, "acme", "globex", ""]),
    st.integers(-3, 3),  # `now` moved by hours, so the last day has events after it
)


def figures(rows: Iterable[UsageEvent], prices: PriceTable) -> dict[str, Any]:
    """The figures of a set of usage rows, computed the plain way."""
    rows = list(rows)
    calls = [r for r in rows if r.operation in ("query", "chat")]
    tokens: dict[tuple[str | None, str | None], int] = defaultdict(int)
    for r in rows:
        tokens[r.provider, r.model] += r.embedding_tokens
    unit = {pm: prices.price(*pm) for pm, n in tokens.items() if n}
    cost = (None if None in unit.values()
            else float(sum((Decimal(str(unit[pm])) * n / 1_000_000 for pm, n in tokens.items() if n), Decimal(0))))
    return {
        "queries": sum(r.operation == "query" for r in rows), "chat_calls": sum(r.operation == "chat" for r in rows),
        **{name: sum(getattr(r, name) for r in rows) for name in (
            "documents", "chunks", "storage_bytes", "embedding_tokens", "chat_input_tokens", "chat_output_tokens")},
        "embedding_tokens_estimated": sum(r.embedding_tokens for r in rows if r.tokens_estimated),
        "embedding_cost_usd_estimate": cost,
        "avg_latency_ms": sum(r.latency_ms for r in calls) / len(calls) if calls else None,
    }


def expected(rows: list[UsageEvent], window_days: int, collection: str | None, tenant: str | None, now: datetime,
             live: str | None) -> dict[str, Any]:
    """The report `usage_report` must give, from the raw rows."""
    start = now.date() - timedelta(days=window_days - 1)
    seen = [r for r in rows if datetime.combine(start, time(), UTC) <= r.created_at <= now
            and (collection is None or (r.collection == collection and (live is None or r.collection_uid == live)))
            and (tenant is None or r.tenant == tenant)]
    total = figures(seen, PRICES)
    names = sorted({r.collection for r in seen}, key=lambda n: (n is None, n or ""))
    pairs = sorted({(r.collection, r.tenant) for r in seen if r.tenant is not None}, key=lambda p: (p[0] or "", p[1]))
    days = [start + timedelta(days=i) for i in range(window_days)]
    return {
        "window_days": window_days, "start": start, "end": now.date(), "collection": collection, "tenant": tenant,
        **{f"{k}_total" if k not in ("embedding_tokens_estimated", "embedding_cost_usd_estimate", "avg_latency_ms")
           else k: v for k, v in total.items()},
        "timeline": [{"date": d, **figures((r for r in seen if r.created_at.date() == d), PRICES)} for d in days],
        "by_collection": [{"collection": n, **figures((r for r in seen if r.collection == n), PRICES)} for n in names],
        "by_tenant": [{"collection": c, "tenant": t,
                       **figures((r for r in seen if (r.collection, r.tenant) == (c, t)), PRICES)} for c, t in pairs],
    }


async def check(db: Database, batch: list[dict[str, Any]], reads: list[tuple[int, str | None, str | None, int]]) -> None:
    """Record `batch` afresh, then compare every read with the plain computation over the stored rows."""
    async with db.session() as session:
        for table in (UsageEvent, UsageRollup, Collection):
            await session.execute(delete(table))
    async with db.session() as session:
        for name, uid in LIVE.items():
            session.add(Collection(name=name, uid=uid, embedding_provider="hash", embedding_model="h", dimension=8,
                                   chunk_size=100, chunk_overlap=0, chunk_strategy="fixed"))
        for start in range(0, len(batch), 7):  # several events per transaction, and several transactions
            for fields in batch[start:start + 7]:
                record_usage(session, **fields)
            await session.flush()
    async with db.session() as session:
        rows = list((await session.scalars(select(UsageEvent))).all())
    for window_days, collection, tenant, hours in reads:
        now = NOW + timedelta(hours=hours)
        report = await usage_report(db, window_days=window_days, collection=collection, tenant=tenant, prices=PRICES,
                                    now=now)
        want = expected(rows, window_days, collection, tenant, now, LIVE.get(collection or ""))
        assert report.model_dump() == want, (window_days, collection, tenant, hours)


def run_checks(url: Callable[[], str]) -> Callable[[list[dict[str, Any]], list[Any]], None]:
    def run(batch: list[dict[str, Any]], reads: list[Any]) -> None:
        async def scenario() -> None:
            db = Database(url())
            try:
                await db.migrate()
                await check(db, batch, reads)
            finally:
                await db.close()

        anyio.run(scenario)

    return run


CASES = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])


@CASES
@given(batch=st.lists(events(), max_size=40), reads=st.lists(READS, min_size=1, max_size=4))
def test_rollup_report_equals_the_raw_rows_on_sqlite(tmp_path: Path, batch: list[dict[str, Any]], reads: list[Any]) -> None:
    store = tmp_path / "usage.db"
    run_checks(lambda: f"sqlite+aiosqlite:///{store}")(batch, reads)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(batch=st.lists(events(), max_size=40), reads=st.lists(READS, min_size=1, max_size=3))
def test_rollup_report_equals_the_raw_rows_on_postgres(postgres_store_url: str, batch: list[dict[str, Any]],
                                                       reads: list[Any]) -> None:
    run_checks(lambda: postgres_store_url)(batch, reads)


def test_blocks_tile_every_window_with_few_rows() -> None:
    today = _day_number(date(2026, 11, 27))
    for end in range(today, today + 64):
        for window_days in (1, 7, 30, 90, 365):
            blocks = rollup_blocks(end - window_days + 1, end)
            days = [day for span, first in blocks for day in range(first, first + span)]
            assert days == list(range(end - window_days + 1, end + 1))
            assert all(span in ROLLUP_SPANS and first % span == 0 for span, first in blocks)
            assert len(blocks) <= {1: 1, 7: 4, 30: 8, 90: 10, 365: 14}[window_days]


@pytest.mark.anyio
async def test_existing_events_are_summed_into_the_rollup_by_the_migration(tmp_path: Path) -> None:
    """A store with usage from before the rollup reports the same after migrating."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path}/old.db")
    try:
        await db.migrate()
        async with db.session() as session:
            record_usage(session, operation="upload", collection="docs", tenant="acme", documents=2, chunks=4,
                         embedding_tokens=50, provider="openai", model="text-embedding-3-small", created_at=NOW)
        before = await usage_report(db, window_days=7, prices=PRICES, now=NOW)
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0008"))
        async with db.session() as session:
            assert await session.scalar(select(UsageEvent.documents)) == 2
        await db.migrate()  # sums the events recorded before the rollup existed
        after = await usage_report(db, window_days=7, prices=PRICES, now=NOW)
        assert after == before and after.documents_total == 2 and after.by_tenant[0].tenant == "acme"
    finally:
        await db.close()
