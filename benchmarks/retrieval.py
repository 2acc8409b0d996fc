"""Retrieval quality and speed of bigrag-mcp on any BEIR-format folder, measured through the service layer.

Usage: python benchmarks/retrieval.py DATA_DIR [--embedders hash,local] [--chunking recursive:512:50,...]
                                     [--fusion] [--scale-chunks 20000] [--max-queries N]
DATA_DIR holds corpus.jsonl ({"_id","title","text"}), queries.jsonl ({"_id","text"}) and qrels.tsv
(query-id, corpus-id, score; header line first). Every document is uploaded with `documents.upload` into a
fresh store (one collection per embedder and chunking), then every judged query goes through `search.search`
in each mode. Chunk hits become a document ranking (a document ranks where its best chunk does).

Prints JSON: per chunking and embedder, ingest seconds and per mode nDCG@10, recall@100, MAP and the query p50
(end to end through the service, top_k=10); bm25s (the `bench` extra) on whole documents and on the same chunks
as the reference, computed in the same run. `--fusion` adds RRF vs min-max weighted sum at several candidate
depths (from the semantic and keyword rankings the service returned). `--scale-chunks N` writes N chunks (copies of
the corpus) through `vectors.upsert` and times keyword queries there: service p50, backend p50, bm25s p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bigrag_mcp import fusion
from bigrag_mcp.chunking import chunk_text
from bigrag_mcp.schemas import QueryRow
from bigrag_mcp.services import collections, documents, search, vectors
from bigrag_mcp.services.index import partition_of
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings
from bigrag_mcp.types import Hit, SearchRequest

DEEP = 200  # chunks read per query for the quality figures (the service's top_k bound)
MODES = ("semantic", "keyword", "hybrid")
DEPTHS = (10, 20, 50, 100, 200)

Qrels = dict[str, dict[str, int]]


def load_beir(data: Path) -> tuple[dict[str, str], dict[str, str], Qrels]:
    """Documents ("title\\n\\ntext") and queries by id, and the graded judgments of each judged query."""
    missing = [n for n in ("corpus.jsonl", "queries.jsonl", "qrels.tsv") if not (data / n).is_file()]
    if missing:
        sys.exit(f"error: {data} is not a BEIR-format folder: missing {', '.join(missing)}")
    corpus = {}
    for line in (data / "corpus.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            corpus[str(d["_id"])] = "\n\n".join(p for p in (d.get("title", ""), d.get("text", "")) if p).strip()
    queries = {str(q["_id"]): q["text"] for q in map(json.loads, (data / "queries.jsonl").open()) if q}
    qrels: Qrels = defaultdict(dict)
    for line in (data / "qrels.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        query_id, doc_id, score = line.split("\t")[:3]
        if int(score) > 0 and doc_id in corpus:
            qrels[query_id][doc_id] = int(score)
    return corpus, {q: t for q, t in queries.items() if q in qrels and t.strip()}, dict(qrels)


def metrics(ranked: Sequence[str], judged: dict[str, int]) -> dict[str, float]:
    """nDCG@10 (graded gains), recall@100 and average precision over the whole ranking."""
    gains = [judged.get(doc, 0) for doc in ranked]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:10]))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(judged.values(), reverse=True)[:10]))
    found, precision = 0, 0.0
    for rank, gain in enumerate(gains, start=1):
        if gain:
            found += 1
            precision += found / rank
    return {
        "ndcg@10": dcg / ideal,
        "recall@100": sum(1 for g in gains[:100] if g) / len(judged),
        "map": precision / len(judged),
    }


def mean(per_query: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.fmean(m[k] for m in per_query), 4) for k in per_query[0]}


def documents_of(hits: Sequence[tuple[str, str]]) -> list[str]:
    """Document ids in order of their best chunk, from (record id, document key) pairs."""
    return list(dict.fromkeys(doc for _, doc in hits))


def p50(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


async def ingest(rt: Runtime, name: str, corpus: dict[str, str]) -> float:
    """Upload every document; the seconds taken."""
    started = time.perf_counter()
    for doc_id, text in corpus.items():
        await documents.upload(rt, name, text=text, filename=f"{doc_id}.txt", metadata={"doc": doc_id})
    return time.perf_counter() - started


async def run_queries(
    rt: Runtime, name: str, queries: dict[str, str], mode: str
) -> tuple[dict[str, list[QueryRow]], list[float]]:
    """The DEEP-long result rows of every query, and the wall time of each query asked again with top_k=10."""
    rows, times = {}, []
    for query_id, text in queries.items():
        rows[query_id] = (await search.search(rt, name, text, top_k=DEEP, search_mode=mode)).results  # type: ignore[arg-type]
        started = time.perf_counter()
        await search.search(rt, name, text, top_k=10, search_mode=mode)  # type: ignore[arg-type]
        times.append(time.perf_counter() - started)
    return rows, times


def score_rows(rows: dict[str, list[QueryRow]], qrels: Qrels) -> dict[str, float]:
    return mean([metrics(documents_of([(r.id, str(r.metadata["doc"])) for r in rs]), qrels[q]) for q, rs in rows.items()])


def fusion_study(
    semantic: dict[str, list[QueryRow]], keyword: dict[str, list[QueryRow]], qrels: Qrels
) -> dict[str, dict[str, float]]:
    """nDCG@10 and recall@100 of each fusion method when each side contributes its best `depth` chunks."""
    doc_of = {r.id: str(r.metadata["doc"]) for rs in (*semantic.values(), *keyword.values()) for r in rs}
    out: dict[str, dict[str, float]] = {}
    for method in ("rrf", "weighted"):
        for depth in DEPTHS:
            per_query = []
            for query_id in semantic:
                sem = [Hit(r.id, r.score) for r in semantic[query_id][:depth]]
                key = [Hit(r.id, r.score) for r in keyword[query_id][:depth]]
                fused = fusion.fuse(method, sem, key, DEEP)  # type: ignore[arg-type]
                per_query.append(metrics(documents_of([(h.id, doc_of[h.id]) for h in fused]), qrels[query_id]))
            result = mean(per_query)
            out[f"{method}@{depth}"] = {"ndcg@10": result["ndcg@10"], "recall@100": result["recall@100"]}
    return out


def bm25s_reference(corpus: dict[str, str], chunks: dict[str, tuple[str, str]], queries: dict[str, str], qrels: Qrels) -> dict[str, Any]:
    """bm25s (stemmed, English stop words, its defaults) over whole documents and over the service's chunks."""
    try:
        import bm25s
        import Stemmer
    except ImportError:
        return {"skipped": "pip install 'bigrag-mcp[bench]' for the bm25s reference"}
    stemmer = Stemmer.Stemmer("english")
    out: dict[str, Any] = {}
    for label, ids, texts in (
        ("documents", list(corpus), list(corpus.values())),
        ("chunks", list(chunks), [t for t, _ in chunks.values()]),
    ):
        if not ids:
            continue
        retriever = bm25s.BM25()
        retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
        per_query, times = [], []
        for query_id, text in queries.items():
            tokens = bm25s.tokenize([text], stopwords="en", stemmer=stemmer, show_progress=False)
            k = min(DEEP, len(ids))
            found, _ = retriever.retrieve(tokens, k=k, show_progress=False)
            started = time.perf_counter()
            retriever.retrieve(bm25s.tokenize([text], stopwords="en", stemmer=stemmer, show_progress=False), k=10, show_progress=False)
            times.append(time.perf_counter() - started)
            hits = [ids[i] for i in found[0]]
            ranked = hits if label == "documents" else documents_of([(h, chunks[h][1]) for h in hits])
            per_query.append(metrics(ranked, qrels[query_id]))
        out[label] = {**mean(per_query), "p50_ms": p50(times)}
    return out


async def chunk_texts(rt: Runtime, name: str) -> dict[str, tuple[str, str]]:
    """Every stored chunk: record id -> (text, document key)."""
    from sqlalchemy import select

    from bigrag_mcp.store.models import Chunk

    collection = await collections.load(rt, name)
    async with rt.db.session() as session:
        rows = await session.execute(select(Chunk.record_id, Chunk.text, Chunk.metadata_).where(Chunk.collection_id == collection.id))
        return {rid: (text or "", str(meta["doc"])) for rid, text, meta in rows}


async def evaluate(
    data: dict[str, Any], embedder: str, chunking: tuple[str, int, int], want_fusion: bool
) -> tuple[dict[str, Any], dict[str, tuple[str, str]]]:
    corpus, queries, qrels = data["corpus"], data["queries"], data["qrels"]
    strategy, size, overlap = chunking
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), embedding_provider=embedder, vector_backend="memory", load_plugins="", _env_file=None)  # type: ignore[call-arg]
        rt = await Runtime.open(settings)
        try:
            await collections.create(rt, name="bench", chunk_size=size, chunk_overlap=overlap, chunk_strategy=strategy)
            seconds = await ingest(rt, "bench", corpus)
            chunks = await chunk_texts(rt, "bench")
            result: dict[str, Any] = {"ingest_s": round(seconds, 2), "chunks": len(chunks)}
            rankings = {}
            for mode in MODES:
                rows, times = await run_queries(rt, "bench", queries, mode)
                rankings[mode] = rows
                result[mode] = {**score_rows(rows, qrels), "p50_ms": p50(times)}
            if want_fusion:
                result["fusion"] = fusion_study(rankings["semantic"], rankings["keyword"], qrels)
            return result, chunks
        finally:
            await rt.close()


async def scale(corpus: dict[str, str], queries: dict[str, str], target: int) -> dict[str, Any]:
    """Keyword latency on a partition of `target` chunks: copies of the corpus cut by the default chunker and
    written through `vectors.upsert` (1,000 records a call; the vectors are random, keyword search ignores them)."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), embedding_provider="hash", vector_backend="memory", load_plugins="", _env_file=None)  # type: ignore[call-arg]
        rt = await Runtime.open(settings)
        try:
            info = await collections.create(rt, name="scale")
            texts: list[str] = []
            copy = 0
            while len(texts) < target:
                for text in corpus.values():
                    pieces = chunk_text(text, size=info.chunk_size, overlap=info.chunk_overlap, strategy=info.chunk_strategy)
                    texts.extend(f"{p.text} ({copy})" if copy else p.text for p in pieces)
                copy += 1
            texts = texts[:target]
            started = time.perf_counter()
            for start in range(0, target, vectors.MAX_UPSERT):
                batch = texts[start : start + vectors.MAX_UPSERT]
                matrix = rng.standard_normal((len(batch), info.dimension)).astype(np.float32)
                records = [{"id": f"c{start + i}", "vector": v.tolist(), "text": t} for i, (t, v) in enumerate(zip(batch, matrix))]
                await vectors.upsert(rt, "scale", records)
            seconds = time.perf_counter() - started
            chunks = (await collections.get(rt, "scale")).vector_count or 0
            collection = await collections.load(rt, "scale")
            where = partition_of(collection, None)
            service, backend = [], []
            for text in queries.values():
                await search.search(rt, "scale", text, top_k=10, search_mode="keyword")
            for text in queries.values():
                started = time.perf_counter()
                await search.search(rt, "scale", text, top_k=10, search_mode="keyword")
                service.append(time.perf_counter() - started)
                started = time.perf_counter()
                await rt.backend.search(where, SearchRequest(top_k=10, mode="keyword", text=text))
                backend.append(time.perf_counter() - started)
        finally:
            await rt.close()
    out: dict[str, Any] = {
        "chunks": chunks,
        "upsert_s": round(seconds, 1),
        "keyword_service_p50_ms": p50(service),
        "keyword_backend_p50_ms": p50(backend),
    }
    try:
        import bm25s
        import Stemmer
    except ImportError:
        return out
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    times = []
    for text in queries.values():
        started = time.perf_counter()
        retriever.retrieve(bm25s.tokenize([text], stopwords="en", stemmer=stemmer, show_progress=False), k=10, show_progress=False)
        times.append(time.perf_counter() - started)
    out["bm25s_p50_ms"] = p50(times)
    out["backend_vs_bm25s"] = round(out["keyword_backend_p50_ms"] / out["bm25s_p50_ms"], 2)
    return out


def parse_chunking(spec: str) -> tuple[str, int, int]:
    strategy, size, overlap = spec.split(":")
    return strategy, int(size), int(overlap)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a BEIR-format folder")
    parser.add_argument("--embedders", default="hash,local", help="comma-separated: hash,local ('' = none)")
    parser.add_argument("--chunking", default="recursive:512:50", help="strategy:size:overlap, comma-separated")
    parser.add_argument("--fusion", action="store_true", help="compare fusion methods and candidate depths")
    parser.add_argument("--scale-chunks", type=int, default=0, help="also time keyword search at this many chunks")
    parser.add_argument("--max-queries", type=int, default=0, help="evaluate only the first N judged queries")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"error: {args.data} is not a folder (expected corpus.jsonl, queries.jsonl and qrels.tsv in it)")
    corpus, queries, qrels = load_beir(args.data)
    if args.max_queries:
        queries = dict(list(queries.items())[: args.max_queries])
    data = {"corpus": corpus, "queries": queries, "qrels": qrels}
    report: dict[str, Any] = {"dataset": args.data.name, "documents": len(corpus), "judged_queries": len(queries)}
    chunks: dict[str, tuple[str, str]] = {}
    for spec in args.chunking.split(","):
        for embedder in filter(None, args.embedders.split(",")):
            result, chunks = asyncio.run(evaluate(data, embedder, parse_chunking(spec), args.fusion))
            report.setdefault(spec, {})[embedder] = result
            print(json.dumps({spec: {embedder: result}}), file=sys.stderr)
    report["bm25s"] = bm25s_reference(corpus, chunks, queries, qrels)
    if args.scale_chunks:
        report["scale"] = asyncio.run(scale(corpus, queries, args.scale_chunks))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
