"""HNSW for big partitions: built concurrently once a partition reaches `hnsw_min_rows`, used for unfiltered
semantic search with the same answers as exact search (min_score, tenants; filters stay exact), dropped with its
partition."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from bigrag_pgvector import PgvectorBackend, PgvectorSettings
from bigrag_pgvector.backend import hnsw_index_name
from sqlalchemy import text

from bigrag_mcp.default_plugins.memory_backend import MemoryBackend
from bigrag_mcp.filters import parse_filter
from bigrag_mcp.types import Partition, SearchRequest, VectorBackend, VectorRecord

pytestmark = pytest.mark.anyio

DIM = 16
BIG = Partition("docs", "t1'; DROP TABLE bigrag_pgvector_partitions; --")  # the name reaches the index's DDL
SMALL = Partition("docs", "t2")
MIN_ROWS = 120


def records(seed: int, size: int) -> list[VectorRecord]:
    rng = np.random.default_rng(seed)
    return [
        VectorRecord(f"r{i}", rng.standard_normal(DIM).tolist(), text=f"text {i}", metadata={"kind": f"k{i % 10}"})
        for i in range(size)
    ]


@pytest.fixture
async def schema(postgres_url: str) -> AsyncIterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    backend = PgvectorBackend(PgvectorSettings(url=postgres_url, schema_name=name))
    async with backend._engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
    await backend.close()


def backend_in(url: str, schema: str, min_rows: int) -> PgvectorBackend:
    return PgvectorBackend(PgvectorSettings(url=url, schema_name=schema, hnsw_min_rows=min_rows, hnsw_ef_search=40))


async def indexes(backend: PgvectorBackend) -> dict[str, bool]:
    """Each HNSW index of the backend's schema, and whether its partition is marked as indexed."""
    async with backend._engine.connect() as conn:
        names = await conn.scalars(
            text("SELECT indexname FROM pg_indexes WHERE schemaname = :s AND indexname LIKE 'bigrag_pgvector_hnsw_%'"),
            {"s": backend.settings.schema_name},
        )
        marked = await conn.execute(text(f"SELECT collection, tenant FROM {backend._partitions} WHERE hnsw"))
        flagged = {hnsw_index_name(c, t) for c, t in marked}
        return {n: n in flagged for n in names.all()}


async def filled(backend: VectorBackend) -> VectorBackend:
    await backend.upsert(BIG, records(1, 2 * MIN_ROWS))
    await backend.upsert(SMALL, records(2, MIN_ROWS // 2))  # the same ids in a small partition: stays exact
    return backend


def requests(seed: int) -> list[SearchRequest]:
    queries = np.random.default_rng(seed).standard_normal((5, DIM)).tolist()
    return [
        *(SearchRequest(top_k=10, vector=q) for q in queries),
        SearchRequest(top_k=5, vector=queries[0], filter=parse_filter({"kind": "k3"})),  # 10% of the rows pass
        SearchRequest(top_k=5, vector=queries[1], filter=parse_filter({"kind": "none"})),
        SearchRequest(top_k=10, vector=queries[2], min_score=0.3),
        SearchRequest(top_k=3, vector=queries[3], filter=parse_filter({"kind": {"$in": ["k1", "k2"]}}), min_score=0.1),
        SearchRequest(top_k=50, vector=queries[4]),  # deeper than hnsw_ef_search: exact
    ]


async def answers(backend: VectorBackend, where: Partition) -> list[list[tuple[str, float]]]:
    return [[(h.id, round(h.score, 4)) for h in await backend.search(where, r)] for r in requests(3)]


async def test_a_big_partition_gets_an_index_and_answers_as_exact_search(
    postgres_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = await filled(MemoryBackend())
    backend = backend_in(postgres_url, schema, MIN_ROWS)
    try:
        await filled(backend)
        await backend.wait_for_indexes()
        assert await indexes(backend) == {hnsw_index_name(BIG.collection, BIG.tenant): True}
        exact = {where: await answers(memory, where) for where in (BIG, SMALL)}
        ann_calls: list[int] = []
        ann = backend._ann

        async def counted(*args: Any) -> Any:
            rows = await ann(*args)
            ann_calls.append(len(rows))
            return rows

        monkeypatch.setattr(backend, "_ann", counted)
        async with backend._engine.connect() as conn:  # the session setting the index search reads
            await conn.execute(text("SELECT CAST('[1]' AS vector)"))
            assert await conn.scalar(text("SHOW hnsw.ef_search")) == "40"
        assert await answers(backend, BIG) == exact[BIG]
        assert ann_calls == [10] * 6  # the index answered the unfiltered searches no deeper than ef_search
        assert await answers(backend, SMALL) == exact[SMALL] and len(ann_calls) == 6  # small: exact only
        await backend.drop(BIG.collection, BIG.tenant)
        assert await indexes(backend) == {}
        assert await answers(backend, SMALL) == exact[SMALL]
    finally:
        await backend.close()


async def test_a_partition_filled_elsewhere_is_indexed_on_its_first_search(postgres_url: str, schema: str) -> None:
    writer, reader = backend_in(postgres_url, schema, 0), backend_in(postgres_url, schema, MIN_ROWS)
    try:
        await filled(writer)
        await writer.wait_for_indexes()
        assert await indexes(writer) == {}  # the writer never indexes (hnsw_min_rows = 0)
        await reader.search(BIG, SearchRequest(top_k=3, vector=[1.0] * DIM))
        await reader.search(SMALL, SearchRequest(top_k=3, vector=[1.0] * DIM))
        await reader.wait_for_indexes()
        assert await indexes(reader) == {hnsw_index_name(BIG.collection, BIG.tenant): True}
        await writer.drop(BIG.collection)  # a whole collection's indexes go with it
        assert await indexes(reader) == {}
    finally:
        await writer.close()
        await reader.close()
