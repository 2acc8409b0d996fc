"""Keyword search: the analyzer, the sparse BM25 index against a plain-Python BM25, and the collection language."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from conftest import call, refused
from mcp import Client

from bigrag_mcp.default_plugins.memory_backend import MemoryBackend
from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.filters import matches, parse_filter
from bigrag_mcp.lexical import index as lexical_index
from bigrag_mcp.lexical.analyzer import LANGUAGES, Analyzer, check_language
from bigrag_mcp.lexical.index import KeywordIndex
from bigrag_mcp.services import collections, documents, search
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.types import Partition, SearchRequest, VectorRecord

pytestmark = pytest.mark.anyio
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "the", "and", "of", "running", "runner", "runs", "ran"]


def bm25(texts: dict[str, str], query: str, k1: float = 1.2, b: float = 0.75) -> dict[str, float]:
    """Lucene BM25 of every text holding a query term, computed the slow, obvious way."""
    analyzer = Analyzer("english")
    terms = {i: analyzer.terms(t) for i, t in texts.items()}
    if not terms:
        return {}
    average = sum(map(len, terms.values())) / len(terms) or 1.0
    df = Counter(t for ts in terms.values() for t in set(ts))
    out = {}
    for record_id, ts in terms.items():
        tf, score = Counter(ts), 0.0
        for term, repeats in Counter(analyzer.terms(query)).items():
            if tf[term]:
                idf = math.log(1 + (len(terms) - df[term] + 0.5) / (df[term] + 0.5))
                score += repeats * idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(ts) / average))
        if score > 0:
            out[record_id] = score
    return out


def assert_ranking(got: list[tuple[str, float]], want: dict[str, float], depth: int) -> None:
    expected = sorted(want.items(), key=lambda p: (-p[1], p[0]))[:depth]
    assert [i for i, _ in got] == [i for i, _ in expected]
    assert [s for _, s in got] == pytest.approx([s for _, s in expected])


def test_one_analyzer_folds_case_and_width_drops_stop_words_and_stems() -> None:
    analyzer = Analyzer("english")
    assert analyzer.terms("The RUNNING runners: ﬁles, Studies and studying of Ürün") == [
        "run", "runner", "file", "studi", "studi", "ürün",
    ]
    assert Analyzer("german").terms("Die Häuser") == ["die", "haus"]  # no German stop list is shipped
    assert "english" in LANGUAGES and check_language("french") == "french"
    with pytest.raises(ValueError, match="klingon"):
        check_language("klingon")


@pytest.mark.parametrize("seed", range(3))
def test_incremental_index_matches_plain_bm25(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lexical_index, "MIN_COMPACT", 8)  # compact often
    rng = random.Random(seed)
    index, model = KeywordIndex(), dict[str, str]()
    for step in range(120):
        roll = rng.random()
        if roll < 0.55:
            batch = {f"d{rng.randint(0, 150)}": " ".join(rng.choices(WORDS, k=rng.randint(0, 12))) for _ in range(rng.randint(1, 9))}
            index.add(list(batch), list(batch.values()))
            model.update(batch)
        elif roll < 0.85:
            gone = [f"d{rng.randint(0, 150)}" for _ in range(rng.randint(1, 15))]
            assert index.remove(gone) == len(set(gone) & model.keys())
            for record_id in gone:
                model.pop(record_id, None)
        query = " ".join(rng.choices(WORDS, k=rng.randint(1, 4)))
        depth = rng.choice([1, 3, 500])
        assert_ranking(index.search(query, depth), bm25(model, query), depth)
        assert len(index) == len(model), step
    assert len(index.segments) <= 2 + math.log2(max(len(index), 1)) * 2


def test_writes_keep_few_segments_and_compaction_forgets_unused_terms() -> None:
    index = KeywordIndex()
    for i in range(1100):
        index.add([f"d{i}"], [f"word{i} common"])
    assert len(index.segments) <= 11
    index.remove([f"d{i}" for i in range(1090)])
    assert len(index.ids) == 10 and len(index.vocabulary) == 11  # compacted: 10 wordN terms and "common"
    assert [i for i, _ in index.search("word1095 common", 2)] == ["d1095", "d1090"]


async def test_keyword_search_with_filters_and_deletes_matches_plain_bm25() -> None:
    rng = random.Random(5)
    backend, where = MemoryBackend(), Partition("docs", "acme")
    records: dict[str, VectorRecord] = {}
    for step in range(40):
        batch = [
            VectorRecord(
                f"r{rng.randint(0, 80)}",
                [rng.random() + 0.1, rng.random()],
                text=" ".join(rng.choices(WORDS, k=rng.randint(1, 10))),
                metadata={"cat": rng.choice("abc")},
            )
            for _ in range(rng.randint(1, 8))
        ]
        await backend.upsert(where, batch)
        records.update({r.id: r for r in batch})
        gone = [f"r{rng.randint(0, 80)}" for _ in range(3)]
        await backend.delete(where, gone)
        for record_id in gone:
            records.pop(record_id, None)
        tree = parse_filter({"cat": {"$in": ["a", "b"]}} if step % 2 else None)
        query = " ".join(rng.choices(WORDS, k=3))
        hits = await backend.search(where, SearchRequest(top_k=5, mode="keyword", text=query, filter=tree))
        # BM25 statistics cover the whole partition; the filter only picks which rows may be returned
        scores = bm25({i: r.text or "" for i, r in records.items()}, query)
        allowed = {i: s for i, s in scores.items() if matches(tree, records[i].metadata)}
        assert_ranking([(h.id, h.score) for h in hits], allowed, 5)


async def test_a_collection_keeps_its_language_and_searches_with_it(rt: Runtime) -> None:
    await collections.create(rt, name="de", language="german")
    await collections.create(rt, name="en")
    for name in ("de", "en"):
        await documents.upload(rt, name, text="Die Häuser am Fluss sind alt.")
    assert (await collections.get(rt, "de")).language == "german"
    assert (await collections.get(rt, "en")).language == "english"
    german = await search.search(rt, "de", "Haus", search_mode="keyword")
    english = await search.search(rt, "en", "Haus", search_mode="keyword")
    assert len(german.results) == 1 and english.results == []


async def test_an_unknown_language_is_refused_and_nothing_is_created(rt: Runtime, admin: Client) -> None:
    with pytest.raises(InvalidArgument, match="klingon"):
        await collections.create(rt, name="x", language="klingon")
    assert (await refused(admin, "collections_create", collection="x", language="../../etc")).startswith("invalid_argument:")
    assert await collections.list_all(rt) == []
    created = await call(admin, "collections_create", collection="x", language="french")
    assert created["language"] == "french"
