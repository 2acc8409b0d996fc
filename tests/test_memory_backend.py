"""The in-memory backend: the shared conformance suite, exact scores, and brute-force checks on random data."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np
import pytest

from bigrag_mcp.default_plugins.memory_backend import RRF_K, MemoryBackend
from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.filters import FilterNode, matches, parse_filter
from bigrag_mcp.plugins import build_registry, plugin_manager
from bigrag_mcp.testing.backends import HYBRID_RECORDS, QUERY, VectorBackendConformance, basis, semantic
from bigrag_mcp.types import Partition, PartitionRows, SearchRequest, VectorBackend, VectorRecord

pytestmark = pytest.mark.anyio
WHERE = Partition("docs", "acme")


class TestMemoryBackendConformance(VectorBackendConformance):
    @pytest.fixture
    async def backend(self) -> AsyncIterator[VectorBackend]:
        b = MemoryBackend()
        yield b
        await b.close()


def test_registered_through_the_plugin_hook() -> None:
    registry = build_registry(plugin_manager(load_plugins=""))
    backend = registry.vector_backend("memory")()
    assert isinstance(backend, MemoryBackend) and isinstance(backend, VectorBackend)
    assert (backend.name, backend.persistent) == ("memory", False)


# --- random data checked against brute force ------------------------------------------------------------------


def random_metadata(rng: random.Random) -> dict[str, Any]:
    """Metadata whose fields are sometimes missing, sometimes lists, and mix ints, floats, bools and strings."""
    meta: dict[str, Any] = {}
    if rng.random() < 0.8:
        meta["cat"] = rng.choice(["a", "b", "c", "d", "B"])
    if rng.random() < 0.7:
        meta["n"] = rng.choice([rng.randint(0, 9), rng.randint(0, 9) + 0.5, True, False])
    if rng.random() < 0.6:
        meta["tags"] = rng.sample(["x", "y", "z", "w"], rng.randint(0, 3))
    if rng.random() < 0.5:
        meta["day"] = f"2024-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}"
    if rng.random() < 0.1:
        meta["cat"] = None
    return meta


def random_filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    """A random filter over the fields of `random_metadata`, using every operator and combinator."""
    roll = rng.random()
    if depth < 2 and roll < 0.25:
        kind = rng.choice(["$and", "$or"])
        return {kind: [random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}
    if depth < 2 and roll < 0.35:
        return {"$not": random_filter(rng, depth + 1)}
    name = rng.choice(["cat", "n", "tags", "day", "absent"])
    values: dict[str, list[Any]] = {
        "cat": ["a", "b", "B", 1],
        "n": [0, 3, 4.5, 9, True, "3"],
        "tags": ["x", "y", "q"],
        "day": ["2024-03-15", "2024-05", 5],
        "absent": ["a", 1],
    }
    op = rng.choice(["$eq", "$ne", "$in", "$nin", "$exists", "$gt", "$gte", "$lt", "$lte", "plain"])
    value = rng.choice(values[name])
    if op == "plain":
        return {name: value}
    if op in ("$in", "$nin"):
        return {name: {op: rng.sample(values[name], rng.randint(1, min(3, len(values[name]))))}}
    if op == "$exists":
        return {name: {op: rng.random() < 0.5}}
    if op in ("$gt", "$gte", "$lt", "$lte") and isinstance(value, bool):
        value = 4
    return {name: {op: value}}


def brute_force(records: Mapping[str, VectorRecord], query: np.ndarray, tree: FilterNode | None) -> dict[str, float]:
    """Cosine score of every record the filter lets through, in float64."""
    q = query / np.linalg.norm(query)
    out = {}
    for rid, r in records.items():
        if matches(tree, r.metadata):
            v = np.asarray(r.vector, dtype=np.float64)
            out[rid] = float(v @ q / np.linalg.norm(v))
    return out


def assert_top_k(hits: list[Any], expected: dict[str, float], top_k: int) -> None:
    """Hits are the top_k of `expected` (allowing float32 near-ties to swap) with matching scores, sorted."""
    assert len(hits) == min(top_k, len(expected))
    assert len({h.id for h in hits}) == len(hits)
    for hit in hits:
        assert hit.id in expected and hit.score == pytest.approx(expected[hit.id], abs=1e-5)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    if hits:
        floor = hits[-1].score
        must = {rid for rid, s in expected.items() if s > floor + 1e-5}
        assert must <= {h.id for h in hits}


def random_records(rng: random.Random, np_rng: np.random.Generator, ids: list[str], dim: int) -> list[VectorRecord]:
    vectors = np_rng.standard_normal((len(ids), dim)).astype(np.float32)
    return [VectorRecord(i, v.tolist(), metadata=random_metadata(rng)) for i, v in zip(ids, vectors)]


@pytest.mark.parametrize("seed", range(4))
async def test_interleaved_writes_and_filtered_searches_match_brute_force(seed: int) -> None:
    rng, np_rng = random.Random(seed), np.random.default_rng(seed)
    backend, model, dim = MemoryBackend(), dict[str, VectorRecord](), 12
    for step in range(80):
        action = rng.random()
        if action < 0.5:
            ids = [f"id{rng.randint(0, 399)}" for _ in range(rng.randint(1, 40))]
            batch = random_records(rng, np_rng, ids, dim)
            await backend.upsert(WHERE, batch)
            model.update({r.id: r for r in batch})
        elif action < 0.7:
            ids = [f"id{rng.randint(0, 399)}" for _ in range(rng.randint(1, 30))]
            assert await backend.delete(WHERE, ids) == len(set(ids) & model.keys())
            for rid in ids:
                model.pop(rid, None)
        raw = random_filter(rng)
        tree = parse_filter(raw)
        query = np_rng.standard_normal(dim)
        top_k = rng.choice([1, 5, 1000])
        hits = await backend.search(WHERE, semantic(query.tolist(), top_k=top_k, filter=tree))
        if not model:
            assert hits == [], step
            continue
        assert_top_k(hits, brute_force(model, query, tree), top_k)


async def test_large_partition_matches_brute_force_with_filters() -> None:
    rng, np_rng = random.Random(7), np.random.default_rng(7)
    backend, dim = MemoryBackend(), 32
    records = random_records(rng, np_rng, [f"doc{i}#0" for i in range(20_000)], dim)
    for start in range(0, len(records), 5000):
        await backend.upsert(WHERE, records[start : start + 5000])
    model = {r.id: r for r in records}
    filters = [None, {"cat": "a"}, {"tags": {"$in": ["x", "y"]}}, {"n": {"$gte": 3, "$lt": 7}}, {"$not": {"cat": "b"}}]
    for raw in filters + [random_filter(rng) for _ in range(10)]:
        tree = parse_filter(raw)
        query = np_rng.standard_normal(dim)
        hits = await backend.search(WHERE, semantic(query.tolist(), top_k=10, filter=tree))
        assert_top_k(hits, brute_force(model, query, tree), 10)


# --- scores, ordering and limits specific to this backend -------------------------------------------------------


async def test_ties_are_broken_by_id() -> None:
    backend = MemoryBackend()
    await backend.upsert(WHERE, [VectorRecord(i, basis((0, 1.0))) for i in ["m", "c", "x", "a"]])
    hits = await backend.search(WHERE, semantic(QUERY, top_k=3))
    assert [h.id for h in hits] == ["a", "c", "m"]


async def test_keyword_scores_are_bm25() -> None:
    backend = MemoryBackend()
    texts = {"p": "Solar panels, solar power", "q": "wind power and water power", "r": "solar"}
    await backend.upsert(WHERE, [VectorRecord(i, basis((0, 1.0)), text=t) for i, t in texts.items()])
    hits = await backend.search(WHERE, SearchRequest(top_k=5, mode="keyword", text="SOLAR"))
    lengths = {"p": 4, "q": 5, "r": 1}
    average = sum(lengths.values()) / 3
    idf = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))

    def bm25(tf: int, length: int) -> float:
        return idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / average))

    expected = sorted([("p", bm25(2, 4)), ("r", bm25(1, 1))], key=lambda p: -p[1])
    assert [(h.id, pytest.approx(h.score)) for h in hits] == expected


async def test_hybrid_scores_are_reciprocal_rank_fusion_and_min_score_applies_to_them() -> None:
    backend = MemoryBackend()
    await backend.upsert(WHERE, HYBRID_RECORDS)
    request = SearchRequest(top_k=3, mode="hybrid", vector=QUERY, text="falcon")
    hits = await backend.search(WHERE, request)
    # semantic ranks: y, x, w1, w2, w3, z; keyword ranks: z, x
    assert [(h.id, pytest.approx(h.score)) for h in hits] == [
        ("x", 2 / (RRF_K + 2)),
        ("z", 1 / (RRF_K + 1) + 1 / (RRF_K + 6)),
        ("y", 1 / (RRF_K + 1)),
    ]
    strict = SearchRequest(top_k=3, mode="hybrid", vector=QUERY, text="falcon", min_score=0.02)
    assert [h.id for h in await backend.search(WHERE, strict)] == ["x", "z"]


async def test_a_partition_emptied_by_deletes_forgets_its_dimension() -> None:
    backend = MemoryBackend()
    await backend.upsert(WHERE, [VectorRecord("a", [1.0, 0.0])])
    assert await backend.delete(WHERE, ["a", "a"]) == 1
    await backend.upsert(WHERE, [VectorRecord("b", basis((0, 1.0)))])
    assert [h.id for h in await backend.search(WHERE, semantic(QUERY))] == ["b"]


async def test_stored_metadata_is_a_copy() -> None:
    backend = MemoryBackend()
    tags = ["red"]
    await backend.upsert(WHERE, [VectorRecord("a", basis((0, 1.0)), metadata={"tags": tags})])
    tags.append("blue")
    assert await backend.search(WHERE, semantic(QUERY, filter=parse_filter({"tags": "blue"}))) == []


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([VectorRecord("z", [0.0] * 8)], "'z' must be finite and non-zero"),
        ([VectorRecord("n", [math.nan] + [1.0] * 7)], "'n' must be finite"),
        ([VectorRecord("", [1.0] * 8)], "non-empty string id"),
        ([VectorRecord("e", [])], "dimension of at least 1"),
        ([VectorRecord("s", ["x"] * 8)], "lists of numbers"),  # type: ignore[list-item]
        ([VectorRecord("t", [[1.0, 2.0]] * 8)], "flat lists of numbers"),  # type: ignore[list-item]
    ],
)
async def test_bad_records_are_refused(records: list[VectorRecord], message: str) -> None:
    backend = MemoryBackend()
    with pytest.raises(InvalidArgument, match=message):
        await backend.upsert(WHERE, records)
    assert await backend.search(WHERE, semantic(QUERY)) == []


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (semantic([1.0, 0.0]), "dimension 8; got 2"),
        (semantic([0.0] * 8), "query vector must be finite and non-zero"),
        (semantic(QUERY, top_k=0), "top_k must be at least 1"),
        (SearchRequest(top_k=1, mode="fuzzy", vector=QUERY), "search mode 'fuzzy'"),  # type: ignore[arg-type]
    ],
)
async def test_bad_searches_are_refused(request_: SearchRequest, message: str) -> None:
    backend = MemoryBackend()
    await backend.upsert(WHERE, [VectorRecord("a", basis((0, 1.0)))])
    with pytest.raises(InvalidArgument, match=message):
        await backend.search(WHERE, request_)


async def test_a_replaced_partition_answers_like_one_built_by_upserts() -> None:
    rng, np_rng = random.Random(3), np.random.default_rng(3)
    records = random_records(rng, np_rng, [f"doc{i}#0" for i in range(300)], 8)
    records = [VectorRecord(r.id, r.vector, f"word{i % 7} common", r.metadata) for i, r in enumerate(records)]
    upserted, replaced = MemoryBackend(), MemoryBackend()
    await upserted.upsert(WHERE, records)
    await upserted.upsert(WHERE, [VectorRecord("stale", [1.0] + [0.0] * 7)])  # replace drops what it lacks
    await replaced.upsert(WHERE, [VectorRecord("stale", [1.0] + [0.0] * 7)])
    await upserted.delete(WHERE, ["stale"])
    await replaced.replace(
        WHERE,
        PartitionRows(
            ids=[r.id for r in records],
            vectors=np.asarray([r.vector for r in records], dtype=np.float32),
            texts=[r.text for r in records],
            metadata=[r.metadata for r in records],
        ),
    )
    for _ in range(20):
        tree = parse_filter(random_filter(rng))
        query = np_rng.standard_normal(8).tolist()
        for request in (
            SearchRequest(top_k=10, vector=query, filter=tree),
            SearchRequest(top_k=10, mode="hybrid", vector=query, text="word3 common", filter=tree),
        ):
            assert await replaced.search(WHERE, request) == await upserted.search(WHERE, request)
    await replaced.replace(WHERE, PartitionRows(ids=[], vectors=np.empty((0, 8), np.float32), texts=[], metadata=[]))
    assert await replaced.search(WHERE, SearchRequest(top_k=10, vector=[1.0] * 8)) == []
