"""Conformance tests every `VectorBackend` must pass.

Subclass `VectorBackendConformance` in a module whose name pytest collects (e.g. `class TestMyBackend(...)`)
and override the async fixture `backend` so it yields a fresh, empty backend and closes it afterwards:

    class TestMyBackend(VectorBackendConformance):
        @pytest.fixture
        async def backend(self) -> AsyncIterator[VectorBackend]:
            b = MyBackend(...)
            yield b
            await b.close()

Every expected answer is computed from the test data below (cosine similarity, the documented filter
semantics written as plain Python predicates), so a failure names a real difference in behaviour.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import pytest

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.filters import parse_filter
from bigrag_mcp.types import Partition, SearchRequest, VectorBackend, VectorRecord

DIM = 8
COLLECTION = "conformance_docs"
OTHER_COLLECTION = "conformance_other"
TENANT_A = "tenant_a"
TENANT_B = "tenant_b"
ALL = 1000  # a top_k larger than any partition the suite builds


def basis(*weights: tuple[int, float]) -> list[float]:
    """A DIM-long vector with the given (axis, weight) entries and zeros elsewhere."""
    v = [0.0] * DIM
    for axis, weight in weights:
        v[axis] = weight
    return v


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def words(text: str | None) -> set[str]:
    """The lowercase words of a text, as a simple word tokenizer sees them."""
    return set(re.findall(r"\w+", text.lower())) if text else set()


def semantic(vector: Sequence[float], top_k: int = ALL, **kw: Any) -> SearchRequest:
    return SearchRequest(top_k=top_k, mode="semantic", vector=list(vector), **kw)


def ranked(records: Sequence[VectorRecord], query: Sequence[float]) -> list[tuple[str, float]]:
    """(id, cosine) of records, nearest first; the suite's data has no ties."""
    return sorted(((r.id, cosine(r.vector, query)) for r in records), key=lambda p: -p[1])


async def ids_in(backend: VectorBackend, where: Partition) -> set[str]:
    """Every id stored in a partition, found by a semantic search with a large top_k."""
    return {h.id for h in await backend.search(where, semantic([1.0] * DIM))}


def assert_sorted(hits: Sequence[Any]) -> None:
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True), f"hits are not sorted by score: {scores}"


def require_mode(backend: VectorBackend, mode: str) -> None:
    if mode not in backend.search_modes:
        pytest.skip(f"{backend.name} does not offer {mode} search (search_modes={sorted(backend.search_modes)})")


# Nearest-neighbour data: the query is axis 0, every record at a distinct angle from it.
QUERY = basis((0, 1.0))
NEAR = [
    VectorRecord("a", basis((0, 1.0))),
    VectorRecord("b", basis((0, 1.0), (1, 0.5))),
    VectorRecord("c", basis((0, 1.0), (1, 1.0), (2, 1.0))),
    VectorRecord("d", basis((1, 1.0))),
    VectorRecord("e", basis((0, -1.0), (7, 1.0))),
]

# Filter data: each field keeps one type across records (as a schema-bound backend needs), some are missing.
FILTER_META: list[dict[str, Any]] = [
    {"kind": "report", "tags": ["red", "blue"], "year": 2021, "price": 9.5, "date": "2021-03-01", "flag": True},
    {"kind": "memo", "tags": ["blue"], "year": 2022, "price": 10.0, "date": "2022-01-15", "flag": False},
    {"kind": "report", "tags": ["green"], "year": 2023, "price": 12.25, "date": "2023-07-30"},
    {"kind": "note", "tags": ["green"], "year": 2020, "date": "2020-12-31", "flag": True},
    {"tags": ["red"], "year": 2024, "price": 0.5},
    {"kind": "memo", "year": 2022, "price": 100.0, "date": "2022-06-01", "flag": False},
    {"kind": "Report", "tags": ["RED", "green"], "price": 10.5, "date": "2024-01-01"},
    {},
    {"kind": "note", "tags": ["red", "green", "blue"], "year": 2019, "price": 10.0, "flag": True},
]
FILTER_RECORDS = [
    VectorRecord(f"r{i}", basis((i % DIM, 1.0), ((i + 3) % DIM, 0.1 * (i + 1))), metadata=meta)
    for i, meta in enumerate(FILTER_META)
]
FILTER_QUERY = [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0]  # every filter record scores differently against it

Predicate = Callable[[Mapping[str, Any]], bool]


def tags(m: Mapping[str, Any]) -> list[str]:
    return list(m.get("tags", []))


FILTER_CASES: list[tuple[str, dict[str, Any], Predicate]] = [
    ("eq-string", {"kind": "report"}, lambda m: m.get("kind") == "report"),
    ("eq-explicit", {"kind": {"$eq": "memo"}}, lambda m: m.get("kind") == "memo"),
    ("ne-missing-passes", {"kind": {"$ne": "report"}}, lambda m: m.get("kind") != "report"),
    ("in", {"kind": {"$in": ["memo", "note"]}}, lambda m: m.get("kind") in ("memo", "note")),
    ("nin-missing-passes", {"kind": {"$nin": ["memo", "note"]}}, lambda m: m.get("kind") not in ("memo", "note")),
    ("list-eq-any-element", {"tags": "red"}, lambda m: "red" in tags(m)),
    ("list-ne-no-element", {"tags": {"$ne": "red"}}, lambda m: "red" not in tags(m)),
    ("list-in", {"tags": {"$in": ["green", "blue"]}}, lambda m: bool({"green", "blue"} & set(tags(m)))),
    ("list-nin", {"tags": {"$nin": ["green", "blue"]}}, lambda m: not ({"green", "blue"} & set(tags(m)))),
    ("exists-true", {"flag": {"$exists": True}}, lambda m: "flag" in m),
    ("exists-false", {"price": {"$exists": False}}, lambda m: "price" not in m),
    ("gt-number", {"price": {"$gt": 10}}, lambda m: "price" in m and m["price"] > 10),
    ("gte-number-boundary", {"price": {"$gte": 10.0}}, lambda m: "price" in m and m["price"] >= 10),
    ("lt-int", {"year": {"$lt": 2022}}, lambda m: "year" in m and m["year"] < 2022),
    ("lte-int-boundary", {"year": {"$lte": 2022}}, lambda m: "year" in m and m["year"] <= 2022),
    ("range-both-ends", {"year": {"$gte": 2020, "$lt": 2023}}, lambda m: "year" in m and 2020 <= m["year"] < 2023),
    ("int-field-float-bound", {"year": {"$gt": 2021.5}}, lambda m: "year" in m and m["year"] > 2021.5),
    ("gte-string", {"date": {"$gte": "2022-01-01"}}, lambda m: "date" in m and m["date"] >= "2022-01-01"),
    ("lt-string", {"date": {"$lt": "2021"}}, lambda m: "date" in m and m["date"] < "2021"),
    ("eq-case-sensitive", {"kind": "Report"}, lambda m: m.get("kind") == "Report"),
    ("eq-bool", {"flag": True}, lambda m: m.get("flag") is True),
    ("eq-bool-false", {"flag": False}, lambda m: m.get("flag") is False),
    ("bool-is-not-int", {"flag": 1}, lambda m: False),
    ("int-is-not-bool", {"year": True}, lambda m: False),
    ("ne-bool-vs-int-all-pass", {"flag": {"$ne": 1}}, lambda m: True),
    ("range-number-on-string-field", {"date": {"$gt": 5}}, lambda m: False),
    ("range-string-on-number-field", {"year": {"$gt": "2000"}}, lambda m: False),
    (
        "and",
        {"$and": [{"kind": "report"}, {"year": {"$gt": 2021}}]},
        lambda m: m.get("kind") == "report" and m.get("year", 0) > 2021,
    ),
    ("implicit-and", {"kind": "memo", "flag": False}, lambda m: m.get("kind") == "memo" and m.get("flag") is False),
    ("or", {"$or": [{"kind": "memo"}, {"tags": "green"}]}, lambda m: m.get("kind") == "memo" or "green" in tags(m)),
    ("not-missing-passes", {"$not": {"kind": "report"}}, lambda m: m.get("kind") != "report"),
    ("not-range", {"$not": {"price": {"$gt": 10}}}, lambda m: not ("price" in m and m["price"] > 10)),
    (
        "nested",
        {"$or": [{"$and": [{"kind": "note"}, {"flag": True}]}, {"price": {"$lt": 1}}]},
        lambda m: (m.get("kind") == "note" and m.get("flag") is True) or m.get("price", 99) < 1,
    ),
]

# Keyword data: "falcon" appears three times in k1, once in the short k5 and once in the long k2.
KEYWORD_RECORDS = [
    VectorRecord("k1", basis((0, 1.0)), text="falcon falcon falcon", metadata={"lang": "en"}),
    VectorRecord("k2", basis((1, 1.0)), text="a falcon flew high over the river", metadata={"lang": "en"}),
    VectorRecord("k3", basis((2, 1.0)), text="river otters swim", metadata={"lang": "en"}),
    VectorRecord("k4", basis((3, 1.0)), text=None, metadata={"lang": "en"}),
    VectorRecord("k5", basis((4, 1.0)), text="Falcon!", metadata={"lang": "de"}),
]

# Hybrid data for the query (axis 0, "falcon"): y is nearest but has no keyword, z is the best keyword match
# but the farthest vector, x is second in both rankings and must win any fusion of the two.
KEPT = {"tag": "kept"}
HYBRID_RECORDS = [
    VectorRecord("y", basis((0, 1.0)), text="river stone", metadata=KEPT),
    VectorRecord(
        "x", basis((0, 1.0), (1, 0.3)), text="falcon over the river stone meadow", metadata={"tag": "dropped"}
    ),
    VectorRecord("w1", basis((0, 1.0), (1, 1.0)), text="meadow grass", metadata=KEPT),
    VectorRecord("w2", basis((0, 0.1), (2, 1.0)), text="stone wall", metadata=KEPT),
    VectorRecord("w3", basis((1, 1.0)), text=None, metadata=KEPT),
    VectorRecord("z", basis((0, -1.0), (2, 1.0)), text="falcon falcon", metadata=KEPT),
]


class VectorBackendConformance:
    """Backend-agnostic behaviour of `VectorBackend`; subclass it and override the `backend` fixture."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def backend(self) -> VectorBackend:
        """Override: yield a fresh, empty backend and close it afterwards."""
        raise NotImplementedError("subclasses of VectorBackendConformance must override the `backend` fixture")

    @pytest.fixture(params=[None, TENANT_A], ids=["no-tenant", "tenant"])
    def where(self, request: pytest.FixtureRequest) -> Partition:
        return Partition(COLLECTION, request.param)

    async def test_declares_the_protocol(self, backend: VectorBackend) -> None:
        assert isinstance(backend, VectorBackend)
        assert "semantic" in backend.search_modes <= {"semantic", "keyword", "hybrid"}
        assert isinstance(backend.name, str) and backend.name

    # --- semantic search -------------------------------------------------------------------------------

    async def test_semantic_search_returns_nearest_in_order_with_cosine_scores(
        self, backend: VectorBackend, where: Partition
    ) -> None:
        await backend.upsert(where, NEAR)
        hits = await backend.search(where, semantic(QUERY))
        expected = ranked(NEAR, QUERY)
        assert [h.id for h in hits] == [i for i, _ in expected]
        for hit, (_, score) in zip(hits, expected):
            assert hit.score == pytest.approx(score, abs=1e-4)
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)

    async def test_top_k_bounds_the_result(self, backend: VectorBackend, where: Partition) -> None:
        await backend.upsert(where, NEAR)
        hits = await backend.search(where, semantic(QUERY, top_k=3))
        assert [h.id for h in hits] == [i for i, _ in ranked(NEAR, QUERY)[:3]]

    async def test_min_score_drops_hits_below_it(self, backend: VectorBackend, where: Partition) -> None:
        await backend.upsert(where, NEAR)
        expected = ranked(NEAR, QUERY)
        threshold = (expected[1][1] + expected[2][1]) / 2
        hits = await backend.search(where, semantic(QUERY, min_score=threshold))
        assert [h.id for h in hits] == [i for i, s in expected if s >= threshold] == [expected[0][0], expected[1][0]]

    async def test_semantic_search_needs_a_vector(self, backend: VectorBackend, where: Partition) -> None:
        await backend.upsert(where, NEAR)
        with pytest.raises(InvalidArgument):
            await backend.search(where, SearchRequest(top_k=3, mode="semantic", text="falcon"))

    async def test_search_of_an_empty_or_unknown_partition_is_empty(self, backend: VectorBackend) -> None:
        assert await backend.search(Partition("conformance_never_created", None), semantic(QUERY)) == []
        assert await backend.search(Partition("conformance_never_created", TENANT_A), semantic(QUERY)) == []
        await backend.upsert(Partition(COLLECTION, TENANT_A), NEAR)
        assert await backend.search(Partition(COLLECTION, TENANT_B), semantic(QUERY)) == []

    # --- writes --------------------------------------------------------------------------------------------

    async def test_upsert_with_a_known_id_overwrites(self, backend: VectorBackend, where: Partition) -> None:
        old = VectorRecord("doc#0", basis((0, 1.0)), text="old words", metadata={"version": "old"})
        new = VectorRecord("doc#0", basis((5, 1.0)), text="new words", metadata={"version": "new"})
        await backend.upsert(where, [old, *NEAR[1:]])
        await backend.upsert(where, [new])
        assert await ids_in(backend, where) == {"doc#0", *(r.id for r in NEAR[1:])}
        hits = await backend.search(where, semantic(new.vector, top_k=1))
        assert [(h.id, round(h.score, 4)) for h in hits] == [("doc#0", 1.0)]
        old_filter = parse_filter({"version": "old"})
        assert await backend.search(where, semantic(QUERY, filter=old_filter)) == []
        hits = await backend.search(where, semantic(QUERY, filter=parse_filter({"version": "new"})))
        assert [h.id for h in hits] == ["doc#0"]
        assert hits[0].score == pytest.approx(cosine(new.vector, QUERY), abs=1e-4)
        if "keyword" in backend.search_modes:
            assert await backend.search(where, SearchRequest(top_k=5, mode="keyword", text="old")) == []
            hits = await backend.search(where, SearchRequest(top_k=5, mode="keyword", text="new"))
            assert [h.id for h in hits] == ["doc#0"]

    async def test_delete_counts_what_existed_and_removes_it(self, backend: VectorBackend, where: Partition) -> None:
        await backend.upsert(where, NEAR)
        assert await backend.delete(where, ["a", "c", "no-such-id"]) == 2
        assert await ids_in(backend, where) == {r.id for r in NEAR} - {"a", "c"}
        assert await backend.delete(where, ["a"]) == 0
        hits = await backend.search(where, semantic(QUERY))
        assert [h.id for h in hits] == [i for i, _ in ranked(NEAR, QUERY) if i not in ("a", "c")]
        assert await backend.delete(Partition("conformance_never_created", TENANT_A), ["a"]) == 0

    async def test_dimension_mismatch_is_invalid_and_stores_nothing(
        self, backend: VectorBackend, where: Partition
    ) -> None:
        with pytest.raises(InvalidArgument):
            await backend.upsert(where, [VectorRecord("ok", basis((0, 1.0))), VectorRecord("short", [1.0] * 4)])
        assert await ids_in(backend, where) == set()
        await backend.upsert(where, NEAR)
        with pytest.raises(InvalidArgument):
            await backend.upsert(where, [VectorRecord("fits", basis((1, 1.0))), VectorRecord("long", [1.0] * 12)])
        assert await ids_in(backend, where) == {r.id for r in NEAR}

    async def test_concurrent_upserts_all_land(self, backend: VectorBackend, where: Partition) -> None:
        batches = [
            [VectorRecord(f"t{t}-{j}", basis((t % DIM, 1.0), (j, 0.5 + t / 40))) for j in range(5)] for t in range(20)
        ]
        async with anyio.create_task_group() as tg:
            for batch in batches:
                tg.start_soon(backend.upsert, where, batch)
        assert await ids_in(backend, where) == {r.id for batch in batches for r in batch}

    # --- tenant partitions ---------------------------------------------------------------------------------

    async def test_same_ids_in_two_tenants_are_distinct_records(self, backend: VectorBackend) -> None:
        a, b = Partition(COLLECTION, TENANT_A), Partition(COLLECTION, TENANT_B)
        await backend.upsert(a, [VectorRecord(r.id, r.vector, metadata={"owner": "a"}) for r in NEAR])
        flipped = [VectorRecord(r.id, [-x for x in r.vector], metadata={"owner": "b"}) for r in NEAR]
        await backend.upsert(b, flipped)
        hits_a = await backend.search(a, semantic(QUERY))
        assert [h.id for h in hits_a] == [i for i, _ in ranked(NEAR, QUERY)]
        hits_b = await backend.search(b, semantic(QUERY))
        assert [h.id for h in hits_b] == [i for i, _ in ranked(flipped, QUERY)]
        assert await backend.search(a, semantic(QUERY, filter=parse_filter({"owner": "b"}))) == []
        assert len(await backend.search(a, semantic(QUERY, filter=parse_filter({"owner": "a"})))) == len(NEAR)

    async def test_delete_in_one_tenant_leaves_the_other(self, backend: VectorBackend) -> None:
        a, b = Partition(COLLECTION, TENANT_A), Partition(COLLECTION, TENANT_B)
        await backend.upsert(a, NEAR)
        await backend.upsert(b, NEAR)
        assert await backend.delete(a, [r.id for r in NEAR]) == len(NEAR)
        assert await ids_in(backend, a) == set()
        assert await ids_in(backend, b) == {r.id for r in NEAR}

    async def test_drop_tenant_then_collection(self, backend: VectorBackend) -> None:
        parts = [
            Partition(COLLECTION, TENANT_A),
            Partition(COLLECTION, TENANT_B),
            Partition(OTHER_COLLECTION, TENANT_A),
            Partition("conformance_plain", None),
        ]
        for p in parts:
            await backend.upsert(p, NEAR)
        everything = {r.id for r in NEAR}
        await backend.drop(COLLECTION, TENANT_A)
        assert [await ids_in(backend, p) for p in parts] == [set(), everything, everything, everything]
        await backend.drop(COLLECTION)
        assert [await ids_in(backend, p) for p in parts] == [set(), set(), everything, everything]
        await backend.drop("conformance_plain")
        assert [await ids_in(backend, p) for p in parts] == [set(), set(), everything, set()]
        await backend.drop("conformance_never_created", TENANT_A)
        await backend.upsert(parts[0], NEAR[:2])
        assert await ids_in(backend, parts[0]) == {"a", "b"}

    # --- filters -------------------------------------------------------------------------------------------

    @pytest.mark.parametrize(("raw", "predicate"), [c[1:] for c in FILTER_CASES], ids=[c[0] for c in FILTER_CASES])
    async def test_filter_semantics(self, backend: VectorBackend, raw: dict[str, Any], predicate: Predicate) -> None:
        where = Partition(COLLECTION, TENANT_A)
        await backend.upsert(where, FILTER_RECORDS)
        hits = await backend.search(where, semantic(FILTER_QUERY, filter=parse_filter(raw)))
        expected = ranked([r for r in FILTER_RECORDS if predicate(r.metadata)], FILTER_QUERY)
        assert [h.id for h in hits] == [i for i, _ in expected]

    async def test_filter_with_top_k_returns_the_nearest_matches(self, backend: VectorBackend) -> None:
        where = Partition(COLLECTION, TENANT_A)
        await backend.upsert(where, FILTER_RECORDS)
        matching = [r for r in FILTER_RECORDS if r.metadata.get("kind") != "report"]
        request = semantic(FILTER_QUERY, top_k=2, filter=parse_filter({"kind": {"$ne": "report"}}))
        hits = await backend.search(where, request)
        assert [h.id for h in hits] == [i for i, _ in ranked(matching, FILTER_QUERY)[:2]]

    # --- keyword and hybrid --------------------------------------------------------------------------------

    async def test_keyword_search_ranks_records_holding_the_term(
        self, backend: VectorBackend, where: Partition
    ) -> None:
        require_mode(backend, "keyword")
        await backend.upsert(where, KEYWORD_RECORDS)
        hits = await backend.search(where, SearchRequest(top_k=10, mode="keyword", text="falcon"))
        assert {h.id for h in hits} == {r.id for r in KEYWORD_RECORDS if "falcon" in words(r.text)}
        assert hits[0].id == "k1" and hits[-1].id == "k2"  # most occurrences first; long single-mention doc last
        assert all(h.score > 0 for h in hits)
        assert_sorted(hits)
        one = await backend.search(where, SearchRequest(top_k=1, mode="keyword", text="falcon"))
        assert [h.id for h in one] == ["k1"]

    async def test_keyword_search_applies_the_filter(self, backend: VectorBackend, where: Partition) -> None:
        require_mode(backend, "keyword")
        await backend.upsert(where, KEYWORD_RECORDS)
        request = SearchRequest(top_k=10, mode="keyword", text="falcon", filter=parse_filter({"lang": "de"}))
        assert [h.id for h in await backend.search(where, request)] == ["k5"]
        assert await backend.search(where, SearchRequest(top_k=10, mode="keyword", text="unmentioned")) == []

    async def test_keyword_search_needs_text(self, backend: VectorBackend, where: Partition) -> None:
        require_mode(backend, "keyword")
        await backend.upsert(where, KEYWORD_RECORDS)
        with pytest.raises(InvalidArgument):
            await backend.search(where, SearchRequest(top_k=3, mode="keyword", vector=QUERY))

    async def test_hybrid_search_fuses_both_rankings(self, backend: VectorBackend, where: Partition) -> None:
        require_mode(backend, "hybrid")
        await backend.upsert(where, HYBRID_RECORDS)
        hits = await backend.search(where, SearchRequest(top_k=10, mode="hybrid", vector=QUERY, text="falcon"))
        got = [h.id for h in hits]
        nearest = ranked(HYBRID_RECORDS, QUERY)[0][0]
        keyword_only = [r.id for r in HYBRID_RECORDS if "falcon" in words(r.text) and r.id != "x"]
        assert got[0] == "x"
        assert nearest in got and all(k in got for k in keyword_only)
        assert_sorted(hits)
        without_x = await backend.search(
            where,
            SearchRequest(top_k=10, mode="hybrid", vector=QUERY, text="falcon", filter=parse_filter({"tag": "kept"})),
        )
        assert "x" not in {h.id for h in without_x} and {nearest, *keyword_only} <= {h.id for h in without_x}

    async def test_hybrid_search_needs_vector_and_text(self, backend: VectorBackend, where: Partition) -> None:
        require_mode(backend, "hybrid")
        await backend.upsert(where, HYBRID_RECORDS)
        with pytest.raises(InvalidArgument):
            await backend.search(where, SearchRequest(top_k=3, mode="hybrid", vector=QUERY))
        with pytest.raises(InvalidArgument):
            await backend.search(where, SearchRequest(top_k=3, mode="hybrid", text="falcon"))

    # --- text values compare exactly, white space and the empty string included (issue #17) ---------------------
    # Weaviate's `field` tokenization trims white space, so a backend on it must not let " a " equal "a".
    SPACED_TEXT = (("plain", "a"), ("padded", " a "), ("tabbed", "a\t"), ("empty", ""), ("blank", "  "))
    SPACED_CASES: tuple[tuple[str, dict[str, Any], set[str]], ...] = (
        ("eq", {"tag": "a"}, {"plain"}),
        ("eq-padded", {"tag": " a "}, {"padded"}),
        ("ne", {"tag": {"$ne": "a"}}, {"padded", "tabbed", "empty", "blank", "untagged"}),
        ("in", {"tag": {"$in": ["a\t", ""]}}, {"tabbed", "empty"}),
        ("eq-empty", {"tag": ""}, {"empty"}),
        ("list-eq-blank", {"tags": "  "}, {"blank"}),
    )

    @pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in SPACED_CASES], ids=[c[0] for c in SPACED_CASES])
    async def test_text_equality_is_exact_around_white_space(
        self, backend: VectorBackend, raw: dict[str, Any], expected: set[str]
    ) -> None:
        where = Partition(COLLECTION, TENANT_A)
        spaced = [
            VectorRecord(rid, basis((i, 1.0)), metadata={"tag": value, "tags": [value, "other"]})
            for i, (rid, value) in enumerate(self.SPACED_TEXT)
        ]
        await backend.upsert(where, [*spaced, VectorRecord("untagged", basis((7, 1.0)))])
        assert {h.id for h in await backend.search(where, semantic(FILTER_QUERY, filter=parse_filter(raw)))} == expected
