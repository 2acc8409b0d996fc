"""Usage metering: exact figures against recorded events, filters, costs, estimates and the price table."""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.services.prices import PriceTable, load_prices
from bigrag_mcp.services.usage import estimate_tokens, estimate_tokens_each, record_usage, resolve_tokens, usage_report
from bigrag_mcp.store.db import Database

pytestmark = pytest.mark.both_stores

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
SMALL = ("openai", "text-embedding-3-small")
V4 = ("cohere", "embed-v4.0")


@pytest.fixture
def prices() -> PriceTable:
    return load_prices()


def at(day: int, hour: int = 10, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(2024, 5, day, hour, minute, second, micro, tzinfo=UTC)


async def record(db: Database, *events: dict[str, Any]) -> None:
    async with db.session() as session:
        for event in events:
             record_usage(session, **event)


def event(**fields: Any) -> dict[str, Any]:
    return fields


def model(pm: tuple[str, str]) -> dict[str, str]:
    return {"provider": pm[0], "model": pm[1]}


# One private collection and one shared collection with tenants acme and globex.
EVENTS: list[dict[str, Any]] = [
    event(operation="upload", collection="docs", documents=2, chunks=5, storage_bytes=1000, embedding_tokens=300,
          latency_ms=50, created_at=at(10, 9), **model(SMALL)),
    event(operation="query", collection="docs", embedding_tokens=10, latency_ms=20, created_at=at(9), **model(SMALL)),
    event(operation="query", collection="docs", embedding_tokens=6, latency_ms=40, created_at=at(9, 23, 59, 59, 999999),
          **model(SMALL)),
    event(operation="upload", collection="shared", tenant="acme", documents=1, chunks=3, storage_bytes=600,
          embedding_tokens=1000, latency_ms=80, created_at=at(8), **model(V4)),
    event(operation="upload", collection="shared", tenant="globex", documents=1, chunks=2, storage_bytes=400,
          embedding_tokens=500, tokens_estimated=True, created_at=at(8, 11), **model(V4)),
    event(operation="delete", collection="shared", tenant="acme", documents=-1, chunks=-3, storage_bytes=-600,
           created_at=at(10, 8)),
    event(operation="chat", collection="shared", tenant="acme", embedding_tokens=8, chat_input_tokens=100,
          chat_output_tokens=20, latency_ms=300, created_at=at(10, 11), **model(V4)),
    # outside a 7-day window ending 2024-05-10 12:00: before 2024-05-04 00:00, and after now
    event(operation="query", collection="docs", embedding_tokens=99, latency_ms=999, created_at=at(3, 23, 59, 59),
          **model(SMALL)),
    event(operation="query", collection="shared", tenant="acme", embedding_tokens=99, created_at=at(10, 12, 0, 0, 1),
          **model(V4)),
]


@pytest.mark.anyio
async def test_totals_rows_and_timeline_match_recorded_events(db: Database, prices: PriceTable) -> None:
    await record(db, *EVENTS)
    report = await usage_report(db, window_days=7, prices=prices, now=NOW)

    assert (report.start, report.end) == (date(2024, 5, 4), date(2024, 5, 10))
    assert report.queries_total == 2 and report.chat_calls_total == 1
    assert (report.documents_total, report.chunks_total, report.storage_bytes_total) == (3, 7, 1400)
    assert report.embedding_tokens_total == 316 + 1508 and report.embedding_tokens_estimated == 500
    # 316 tokens at 0.02 $/M plus 1508 at 0.12 $/M
    assert report.embedding_cost_usd_estimate == 0.00018728
    assert (report.chat_input_tokens_total, report.chat_output_tokens_total) == (100, 20)
    assert report.avg_latency_ms == pytest.approx((20 + 40 + 300) / 3)

    docs, shared = report.by_collection
    assert docs.model_dump() == {
        "collection": "docs", "queries": 2, "chat_calls": 0, "documents": 2, "chunks": 5, "storage_bytes": 1000,
        "embedding_tokens": 316, "embedding_tokens_estimated": 0, "embedding_cost_usd_estimate": 0.00000632,
        "chat_input_tokens": 0, "chat_output_tokens": 0, "avg_latency_ms": 30.0,
    }
    assert shared.model_dump() == {
        "collection": "shared", "queries": 0, "chat_calls": 1, "documents": 1, "chunks": 2, "storage_bytes": 400,
        "embedding_tokens": 1508, "embedding_tokens_estimated": 500, "embedding_cost_usd_estimate": 0.00018096,
        "chat_input_tokens": 100, "chat_output_tokens": 20, "avg_latency_ms": 300.0,
    }
    acme, globex = report.by_tenant
    assert (acme.collection, acme.tenant, acme.documents, acme.chunks) == ("shared", "acme", 0, 0)
    assert acme.storage_bytes == 0  # uploaded and deleted within the window
    assert (acme.embedding_tokens, acme.chat_calls, acme.embedding_cost_usd_estimate) == (1008, 1, 0.00012096)
    assert (globex.tenant, globex.documents, globex.chunks, globex.storage_bytes) == ("globex", 1, 2, 400)
    assert (globex.embedding_tokens_estimated, globex.embedding_cost_usd_estimate) == (500, 0.00006)
    assert globex.avg_latency_ms is None  # no query or chat calls

    days = {row.date: row for row in report.timeline}
    assert list(days) == [date(2024, 5, d) for d in range(4, 11)]
    assert all(days[date(2024, 5, d)].model_dump(exclude={"date", "avg_latency_ms"}) == {
        "queries": 0, "chat_calls": 0, "documents": 0, "chunks": 0, "storage_bytes": 0, "embedding_tokens": 0,
        "embedding_tokens_estimated": 0, "embedding_cost_usd_estimate": 0.0, "chat_input_tokens": 0,
        "chat_output_tokens": 0} for d in (4, 5, 6, 7))
    assert (days[date(2024, 5, 8)].documents, days[date(2024, 5, 8)].embedding_tokens) == (2, 1500)
    assert (days[date(2024, 5, 9)].queries, days[date(2024, 5, 9)].embedding_tokens) == (2, 16)
    may10 = days[date(2024, 5, 10)]
    assert (may10.documents, may10.chunks, may10.storage_bytes, may10.chat_calls) == (1, 2, 400, 1)
    assert may10.embedding_cost_usd_estimate == 0.00000696  # 300 * 0.02 + 8 * 0.12 per million
    assert sum(row.embedding_tokens for row in report.timeline) == report.embedding_tokens_total


@pytest.mark.anyio
async def test_tenant_filter_excludes_every_other_tenant(db: Database, prices: PriceTable) -> None:
    await record(db, *EVENTS)
    report = await usage_report(db, window_days=7, tenant="globex", prices=prices, now=NOW)

    assert [(r.collection, r.tenant) for r in report.by_tenant] == [("shared", "globex")]
    assert [r.collection for r in report.by_collection] == ["shared"]
    assert (report.documents_total, report.chunks_total, report.storage_bytes_total) == (1, 2, 400)
    assert (report.embedding_tokens_total, report.chat_calls_total, report.queries_total) == (500, 0, 0)
    assert report.embedding_cost_usd_estimate == 0.00006
    assert [(r.date.day, r.embedding_tokens) for r in report.timeline if r.embedding_tokens] == [(8, 500)]


@pytest.mark.anyio
async def test_collection_filter_is_exact(db: Database, prices: PriceTable) -> None:
    await record(db, *EVENTS, event(operation="query", collection="docs2", embedding_tokens=5, created_at=at(9)))
    report = await usage_report(db, window_days=7, collection="docs", prices=prices, now=NOW)

    assert [r.collection for r in report.by_collection] == ["docs"] and report.by_tenant == []
    assert (report.queries_total, report.embedding_tokens_total, report.documents_total) == (2, 316, 2)
    assert sum(r.queries for r in report.timeline) == 2
    acme = await usage_report(db, window_days=7, collection="shared", tenant="acme", prices=prices, now=NOW)
    assert [(r.tenant, r.embedding_tokens) for r in acme.by_tenant] == [("acme", 1008)]


@pytest.mark.anyio
async def test_unknown_model_reports_null_cost_not_zero(db: Database, prices: PriceTable) -> None:
    await record(
        db,
        event(operation="upload", collection="a", documents=1, chunks=1, embedding_tokens=100, created_at=at(10),
              provider="openai", model="text-embedding-4-secret"),
        event(operation="upload", collection="a", documents=1, chunks=1, embedding_tokens=100, created_at=at(10),
              **model(SMALL)),
        event(operation="upload", collection="b", documents=1, chunks=1, embedding_tokens=100, created_at=at(10),
              **model(SMALL)),
        # an unknown model that spent no tokens costs nothing and does not blank the figures
        event(operation="delete", collection="b", documents=-1, chunks=-1, created_at=at(10), provider="mystery"),
        event(operation="upload", collection="c", documents=1, embedding_tokens=7, created_at=at(10), provider="hash",
              model="anything"),
    )
    report = await usage_report(db, window_days=1, prices=prices, now=NOW)
    costs = {r.collection: r.embedding_cost_usd_estimate for r in report.by_collection}
    assert costs == {"a": None, "b": 0.000002, "c": 0.0}
    assert report.embedding_cost_usd_estimate is None
    assert report.timeline[0].embedding_cost_usd_estimate is None


def test_token_estimates_of_long_text_count_as_piece_by_piece() -> None:
    """The array count (long ASCII text, many groups at once) and the pattern count give the per-piece definition."""
    pieces = re.compile(r"[A-Za-z0-9]+|\S")

    def by_piece(texts: list[str]) -> int:
        return sum(-(-len(p) // 4) if p[0].isascii() and p[0].isalnum() else 1 for t in texts for p in pieces.findall(t))

    rnd = random.Random(5)
    for alphabet in ("ab9Z_ \t\n\x0b\x0c\r\x1c\x1f.,!$~", "ab9Z_ .é東\u00a0\u2003"):  # ASCII (arrays), then not
        for _ in range(40):
            groups = [
                ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 900))) for _ in range(rnd.randint(0, 4))]
                for _ in range(rnd.randint(1, 12))
            ]
            assert estimate_tokens_each(groups) == [by_piece(g) for g in groups]
            assert [estimate_tokens(g) for g in groups] == [by_piece(g) for g in groups]


@pytest.mark.anyio
async def test_estimated_tokens_are_flagged(db: Database, prices: PriceTable) -> None:
    texts = ["The quick brown fox jumps.", "東京"]
    assert estimate_tokens(texts) == 1 + 2 + 2 + 1 + 2 + 1 + 2
    assert resolve_tokens(None, texts) == (11, True)
    assert resolve_tokens(42, texts) == (42, False)
    assert resolve_tokens(0, texts) == (0, False)  # a reported zero is the provider's answer, not missing

    tokens, estimated = resolve_tokens(None, texts)
    await record(db, event(operation="upload", collection="x", documents=1, chunks=2, embedding_tokens=tokens,
                           tokens_estimated=estimated, created_at=at(10), **model(SMALL)),
                 event(operation="query", collection="x", embedding_tokens=4, created_at=at(10), **model(SMALL)))
    report = await usage_report(db, window_days=1, prices=prices, now=NOW)
    assert (report.embedding_tokens_total, report.embedding_tokens_estimated) == (15, 11)
    assert report.by_collection[0].embedding_tokens_estimated == 11


@pytest.mark.anyio
async def test_usage_rolls_back_with_the_callers_transaction(db: Database, prices: PriceTable) -> None:
    with pytest.raises(RuntimeError):
        async with db.session() as session:
             record_usage(session, operation="upload", collection="x", documents=1, created_at=at(10))
             raise RuntimeError("the upload failed after metering")
    report = await usage_report(db, window_days=1, prices=prices, now=NOW)
    assert report.documents_total == 0 and report.by_collection == []


@pytest.mark.anyio
async def test_window_bounds_and_default_now(db: Database, prices: PriceTable) -> None:
    for bad in (0, 366, -1, True, 1.5):
        with pytest.raises(InvalidArgument):
             await usage_report(db, window_days=bad, prices=prices)  # type: ignore[arg-type]
    await record(db, event(operation="query", collection="x", created_at=datetime.now(UTC) - timedelta(seconds=1)))
    report = await usage_report(db, window_days=365, prices=prices)
    assert len(report.timeline) == 365 and report.timeline[-1].date == datetime.now(UTC).date()
    assert report.queries_total == 1


def test_record_usage_rejects_impossible_events() -> None:
    for bad in (event(operation="search"), event(operation="upload", documents=-1),
                event(operation="delete", chunks=3), event(operation="query", embedding_tokens=-5)):
        with pytest.raises(ValueError):
             record_usage(None, **bad)  # type: ignore[arg-type]


def test_price_table_builtin_and_override(tmp_path: Path) -> None:
    builtin = load_prices()
    assert builtin.price("openai", "text-embedding-3-small") == 0.02
    assert builtin.price("openai", "text-embedding-3-large") == 0.13
    assert builtin.price("openai", "text-embedding-ada-002") == 0.10
    assert builtin.price("cohere", "embed-v4.0") == 0.12
    assert builtin.price("cohere", "embed-english-v3.0") == 0.10
    assert builtin.price("hash", "any") == 0.0 and builtin.price("local", "all-MiniLM-L6-v2") == 0.0
    assert builtin.price("openai", "unknown") is None and builtin.price(None, None) is None

    override = tmp_path / "prices.toml"
    override.write_text('[embedding.openai."text-embedding-3-small"]\nusd_per_million_tokens = 0.05\n'
                         '[embedding.acme."*"]\nusd_per_million_tokens = 1\n')
    table = load_prices(override)
    assert table.price("openai", "text-embedding-3-small") == 0.05
    assert table.price("openai", "text-embedding-3-large") == 0.13  # built-in entries stay
    assert table.price("acme", "whatever") == 1.0

    for text in ('[embedding.openai."m"]\nusd_per_million_tokens = -1\n', "[chat]\n", "not toml ===",
                  '[embedding.openai."m"]\nprice = 1\n'):
        override.write_text(text)
        with pytest.raises(InvalidArgument):
             load_prices(override)
    with pytest.raises(InvalidArgument):
        load_prices(tmp_path / "missing.toml")
