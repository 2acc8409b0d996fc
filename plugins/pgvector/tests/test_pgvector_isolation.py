"""Tenants stay apart with identical raw ids, and hostile tenant names, ids, values and texts change nothing."""

from __future__ import annotations

import pytest
from bigrag_pgvector import PgvectorBackend
from sqlalchemy import text

from bigrag_mcp.filters import parse_filter
from bigrag_mcp.types import Partition, SearchRequest, VectorRecord

pytestmark = pytest.mark.anyio

INJECTION = "x' OR '1'='1"
HOSTILE_TENANT = "t1'; DROP TABLE bigrag_pgvector_partitions; --"
T1 = Partition("docs", "t1")
EVIL = Partition("docs", HOSTILE_TENANT)
RECORDS = [
    VectorRecord("a", [1.0, 0.0, 0.0], text="falcon report", metadata={"kind": "report"}),
    VectorRecord("b", [0.0, 1.0, 0.0], text="river memo", metadata={"kind": "memo"}),
]


def semantic(**kw: object) -> SearchRequest:
    return SearchRequest(top_k=10, mode="semantic", vector=[1.0, 0.5, 0.25], **kw)  # type: ignore[arg-type]


async def snapshot(backend: PgvectorBackend) -> list[tuple[object, ...]]:
    """Every stored row of the backend's schema, partition table first."""
    async with backend._engine.connect() as conn:
        parts = (await conn.execute(text(f"SELECT * FROM {backend._partitions} ORDER BY 1, 2"))).all()
        rows = (
            await conn.execute(
                text(f"SELECT collection, tenant, id, text, metadata FROM {backend._table(3)} ORDER BY 1, 2, 3")
            )
        ).all()
    return [*map(tuple, parts), *map(tuple, rows)]


async def test_identical_ids_in_two_tenants_one_hostile_stay_apart(backend: PgvectorBackend) -> None:
    await backend.upsert(T1, RECORDS)
    await backend.upsert(
        EVIL, [VectorRecord(r.id, r.vector, text="evil words", metadata={"kind": "evil"}) for r in RECORDS]
    )
    assert {h.id for h in await backend.search(T1, semantic())} == {"a", "b"}
    assert await backend.search(T1, semantic(filter=parse_filter({"kind": "evil"}))) == []
    assert await backend.search(EVIL, semantic(filter=parse_filter({"kind": "report"}))) == []
    assert await backend.search(Partition("docs", "t1' OR '1'='1"), semantic()) == []
    keyword = SearchRequest(top_k=10, mode="keyword", text="evil")
    assert await backend.search(T1, keyword) == []
    assert {h.id for h in await backend.search(EVIL, keyword)} == {"a", "b"}


async def test_hostile_values_change_nothing(backend: PgvectorBackend) -> None:
    await backend.upsert(T1, RECORDS)
    await backend.upsert(EVIL, RECORDS)
    before = await snapshot(backend)
    hostile_filters = [
        {"kind": INJECTION},
        {"kind": {"$in": [INJECTION, "report'--"]}},
        {"kind": {"$gt": "'; DELETE FROM bigrag_pgvector_partitions; --"}},
        {"kind": {"$ne": '") || true || ("'}},  # a JSON-path escape attempt: ne passes every record, as it should
    ]
    results = [{h.id for h in await backend.search(T1, semantic(filter=parse_filter(f)))} for f in hostile_filters]
    assert results == [set(), set(), {"a", "b"}, {"a", "b"}]
    tsquery_syntax = SearchRequest(top_k=10, mode="keyword", text="falcon' | !river & :* <-> (")
    assert {h.id for h in await backend.search(T1, tsquery_syntax)} == {"a", "b"}
    assert await backend.delete(T1, [INJECTION, "a' OR id <> '"]) == 0
    await backend.drop("docs' OR '1'='1")
    await backend.drop("docs", "t1' OR '1'='1")
    assert await snapshot(backend) == before
    await backend.drop("docs", HOSTILE_TENANT)
    assert {h.id for h in await backend.search(T1, semantic())} == {"a", "b"}
    assert await backend.search(EVIL, semantic()) == []
