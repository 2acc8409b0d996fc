"""Searches against the server's rules: field tokenization trims, QUERY_MAXIMUM_RESULTS, BM25 tokens and stop words."""

from __future__ import annotations

from typing import Any

import pytest
from bigrag_weaviate import WeaviateBackend
from bigrag_weaviate.testing import FakeWeaviate, RecordedSleeps

from bigrag_mcp.filters import parse_filter
from bigrag_mcp.types import Partition, SearchRequest, VectorRecord

pytestmark = pytest.mark.anyio
ACME = Partition("docs", "acme")


def semantic(top_k: int = 10, raw: dict[str, Any] | None = None) -> SearchRequest:
    return SearchRequest(top_k=top_k, vector=[1.0, 0.0, 0.0], filter=None if raw is None else parse_filter(raw))


def keyword(text: str, mode: str = "keyword") -> SearchRequest:
    return SearchRequest(top_k=10, mode=mode, text=text, vector=[1.0, 0.0, 0.0] if mode == "hybrid" else None)  # type: ignore[arg-type]


SPACED = {"plain": "a", "padded": " a ", "tabbed": "a\t", "empty": "", "blank": "   ", "inner": "a a"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"tag": "a"}, {"plain"}),
        ({"tag": " a "}, {"padded"}),
        ({"tag": {"$ne": "a"}}, set(SPACED) - {"plain"} | {"none"}),
        ({"tag": {"$in": ["a\t", "a a"]}}, {"tabbed", "inner"}),
        ({"tag": {"$nin": ["a", ""]}}, set(SPACED) - {"plain", "empty"} | {"none"}),
        ({"tag": ""}, {"empty"}),
        ({"tag": "   "}, {"blank"}),
        ({"tags": "a"}, {"plain"}),
        ({"tags": ""}, {"empty"}),
    ],
    ids=["eq", "eq-padded", "ne", "in", "nin", "eq-empty", "eq-blank", "list-eq", "list-eq-empty"],
)
async def test_text_values_match_exactly_despite_field_tokenization_trimming(
    backend: WeaviateBackend, raw: dict[str, Any], expected: set[str]
) -> None:
    rows = [
        VectorRecord(rid, [1.0, 0.1 * i, 0.0], metadata={"tag": value, "tags": [value, "zz"]})
        for i, (rid, value) in enumerate(SPACED.items())
    ]
    await backend.upsert(ACME, [*rows, VectorRecord("none", [0.0, 0.0, 1.0])])
    assert {h.id for h in await backend.search(ACME, semantic(raw=raw))} == expected


async def test_top_k_beyond_query_maximum_results_is_capped(backend: WeaviateBackend) -> None:
    await backend.upsert(ACME, [VectorRecord(f"r{i}", [1.0, 0.1 * i, 0.0]) for i in range(5)])
    assert len(await backend.search(ACME, semantic(top_k=20_000))) == 5
    assert len(await backend.search(ACME, SearchRequest(top_k=50_000, mode="keyword", text="x"))) == 0


async def test_post_query_filter_fetches_at_most_query_maximum_results(sleeps: RecordedSleeps) -> None:
    with FakeWeaviate() as fake:
        backend = WeaviateBackend(fake.settings(max_candidates=50_000), sleep=sleeps)
        rows = [VectorRecord(f"r{i}", [1.0, 0.01 * i, 0.0], metadata={"date": f"2020-01-{i % 28 + 1:02d}"}) for i in range(6)]
        await backend.upsert(ACME, rows)
        hits = await backend.search(ACME, semantic(top_k=3000, raw={"date": {"$gte": "2020-01-04"}}))  # string range
        assert {h.id for h in hits} == {"r3", "r4", "r5"}
        fake.state.query_maximum_results = 4  # a server configured lower: the setting follows it
        low = WeaviateBackend(fake.settings(query_maximum_results=4, overfetch=1), sleep=sleeps)
        hits = await low.search(ACME, semantic(top_k=2, raw={"date": {"$gte": "2020-01-04"}}))
        assert [h.id for h in hits] == ["r3"]  # only the 4 nearest can be read: r0..r3
        await backend.close()
        await low.close()


async def test_deletes_come_in_chunks_the_server_deletes_whole(sleeps: RecordedSleeps) -> None:
    with FakeWeaviate() as fake:
        fake.state.query_maximum_results = 4
        backend = WeaviateBackend(fake.settings(query_maximum_results=4), sleep=sleeps)
        await backend.upsert(ACME, [VectorRecord(f"r{i}", [1.0, 0.1 * i, 0.0]) for i in range(10)])
        assert await backend.delete(ACME, [f"r{i}" for i in range(9)]) == 9
        assert [h.id for h in await backend.search(ACME, semantic())] == ["r9"]
        await backend.close()


async def test_keyword_query_drops_english_stop_words(backend: WeaviateBackend) -> None:
    rows = [
        VectorRecord("stop", [1.0, 0.0, 0.0], "the the the of and is it"),
        VectorRecord("bird", [0.0, 1.0, 0.0], "the falcon"),
        VectorRecord("none", [0.0, 0.0, 1.0], "river"),
    ]
    await backend.upsert(ACME, rows)
    assert [h.id for h in await backend.search(ACME, keyword("the falcon is"))] == ["bird"]
    assert await backend.search(ACME, keyword("the of and")) == []
    hybrid = await backend.search(ACME, keyword("the of", mode="hybrid"))
    assert hybrid[0].id == "stop"  # only the vector side ranks: stop words alone match nothing in BM25


async def test_keyword_search_splits_on_unicode_letters_and_numbers(backend: WeaviateBackend) -> None:
    rows = [
        VectorRecord("fr", [1.0, 0.0, 0.0], "Crème brûlée, s'il vous plaît"),
        VectorRecord("ascii", [0.0, 1.0, 0.0], "creme brulee br l e"),
        VectorRecord("ru", [0.0, 0.0, 1.0], "Москва-река и ٣ кошки"),
    ]
    await backend.upsert(ACME, rows)
    assert [h.id for h in await backend.search(ACME, keyword("BRÛLÉE"))] == ["fr"]
    assert [h.id for h in await backend.search(ACME, keyword("l"))] == ["ascii"]
    assert [h.id for h in await backend.search(ACME, keyword("москва"))] == ["ru"]
    assert [h.id for h in await backend.search(ACME, keyword("٣"))] == ["ru"]
    hybrid = await backend.search(ACME, keyword("река", mode="hybrid"))
    assert [h.id for h in hybrid][:2] == ["ru", "fr"]  # keyword and vector rank fused
