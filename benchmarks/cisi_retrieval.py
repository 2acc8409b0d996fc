"""Retrieval quality of the built-in embedders on the CISI test collection (numpy cosine, no server).

Usage: python benchmarks/cisi_retrieval.py [--data DIR] [--embedders hash,local]
DIR holds corpus.jsonl, queries.jsonl and qrels.tsv (default: ../shared/data/cisi from the repo root).
Prints JSON: nDCG@10, MRR@10, Recall@10, Recall@100 and MAP (over the whole ranking) for each embedder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bigrag_mcp.default_plugins.hash_embedder import create_hash_embedder
from bigrag_mcp.default_plugins.local_embedder import create_local_embedder
from bigrag_mcp.types import EmbeddingProvider, Purpose

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cisi"
EMBEDDERS: dict[str, Callable[[], EmbeddingProvider]] = {"hash": create_hash_embedder, "local": create_local_embedder}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def load_cisi(data: Path) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    """Documents (title. text) and queries by id, and the relevant document ids of each judged query."""
    corpus = {d["_id"]: f"{d['title']}. {d['text']}".strip() for d in read_jsonl(data / "corpus.jsonl")}
    queries = {q["_id"]: q["text"] for q in read_jsonl(data / "queries.jsonl")}
    qrels: dict[str, set[str]] = defaultdict(set)
    for line in (data / "qrels.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        query_id, doc_id, score = line.split("\t")
        if int(score) > 0:
            qrels[query_id].add(doc_id)
    return corpus, queries, dict(qrels)


async def embed_all(provider: EmbeddingProvider, texts: Sequence[str], purpose: Purpose) -> np.ndarray[Any, Any]:
    """Row-normalised vectors of `texts`, embedded in batches of the provider's max_batch."""
    vectors: list[list[float]] = []
    for start in range(0, len(texts), provider.max_batch):
        vectors += (await provider.embed(texts[start : start + provider.max_batch], purpose=purpose)).vectors
    matrix = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0.0, norms, 1.0)


def metrics(ranked: Sequence[str], relevant: set[str]) -> dict[str, float]:
    """nDCG@10, MRR@10, Recall@10, Recall@100 and average precision of one ranking with binary judgments."""
    hits = [doc in relevant for doc in ranked]
    dcg = sum(1.0 / math.log2(rank + 2) for rank, hit in enumerate(hits[:10]) if hit)
    ideal = sum(1.0 / math.log2(rank + 2) for rank in range(min(len(relevant), 10)))
    first = next((rank for rank, hit in enumerate(hits[:10]) if hit), None)
    found, precision_sum = 0, 0.0
    for rank, hit in enumerate(hits, start=1):
        if hit:
            found += 1
            precision_sum += found / rank
    return {
        "ndcg@10": dcg / ideal,
        "mrr@10": 0.0 if first is None else 1.0 / (first + 1),
        "recall@10": sum(hits[:10]) / len(relevant),
        "recall@100": sum(hits[:100]) / len(relevant),
        "map": precision_sum / len(relevant),
    }


async def evaluate(name: str, data: Path) -> dict[str, Any]:
    corpus, queries, qrels = load_cisi(data)
    doc_ids = list(corpus)
    judged = [q for q in queries if q in qrels]
    started = time.perf_counter()
    provider = EMBEDDERS[name]()
    docs = await embed_all(provider, [corpus[d] for d in doc_ids], "document")
    indexed = time.perf_counter()
    query_vectors = await embed_all(provider, [queries[q] for q in judged], "query")
    order = np.argsort(-(query_vectors @ docs.T), axis=1, kind="stable")
    per_query = [metrics([doc_ids[i] for i in row], qrels[q]) for q, row in zip(judged, order)]
    result: dict[str, Any] = {k: round(sum(m[k] for m in per_query) / len(per_query), 4) for k in per_query[0]}
    result.update(
        model=provider.model,
        dimension=provider.dimension,
        index_seconds=round(indexed - started, 2),
        query_seconds=round(time.perf_counter() - indexed, 2),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the CISI files")
    parser.add_argument("--embedders", default=",".join(EMBEDDERS), help="comma-separated: hash,local")
    args = parser.parse_args()
    corpus, queries, qrels = load_cisi(args.data)
    report: dict[str, Any] = {
        "dataset": "CISI",
        "documents": len(corpus),
        "judged_queries": sum(q in qrels for q in queries),
    }
    for name in args.embedders.split(","):
        report[name] = asyncio.run(evaluate(name, args.data))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
