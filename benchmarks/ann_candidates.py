"""HNSW candidates for big partitions against the exact search the memory backend does, in one run.

For each installed library (usearch, faiss-cpu; neither is a dependency) it builds an HNSW index over clustered
unit vectors and reports build time, p50 query latency and recall@10 against exact top-10 at several `ef`
values, beside the exact kernel's own latency (matrix product + partial sort, as the memory backend does).

Run by hand: `pip install usearch faiss-cpu; python benchmarks/ann_candidates.py [--n N] [--dim D]`; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

TOP_K = 10
EFS = (32, 64, 128)
Matrix = npt.NDArray[np.float32]


def clustered(rng: np.random.Generator, n: int, dim: int) -> Matrix:
    """Unit vectors around 200 centres: closer to embeddings than uniform noise, on which no ANN index does well."""
    centres = rng.standard_normal((200, dim), dtype=np.float32)
    x = centres[rng.integers(0, 200, n)] + 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact(matrix: Matrix, query: Matrix) -> list[int]:
    scores = matrix @ query
    top = np.argpartition(scores, len(scores) - TOP_K)[-TOP_K:]
    return top[np.argsort(-scores[top])].tolist()


def timed(search: Callable[[Matrix], Any], queries: Matrix) -> tuple[float, list[Any]]:
    """p50 seconds per query and the answers."""
    times, answers = [], []
    for q in queries:
        started = time.perf_counter()
        answers.append(search(q))
        times.append(time.perf_counter() - started)
    return statistics.median(times), answers


def recall(found: list[Any], truth: list[list[int]]) -> float:
    return float(np.mean([len(set(map(int, f)) & set(t)) / TOP_K for f, t in zip(found, truth)]))


def usearch_figures(matrix: Matrix, queries: Matrix, truth: list[list[int]]) -> dict[str, Any]:
    from usearch.index import Index

    started = time.perf_counter()
    index = Index(ndim=matrix.shape[1], metric="ip", dtype="f32", connectivity=16, expansion_add=128)
    index.add(np.arange(len(matrix)), matrix)
    figures: dict[str, Any] = {"build_s": time.perf_counter() - started}
    for ef in EFS:
        index.expansion_search = ef
        p50, found = timed(lambda q: index.search(q, TOP_K).keys, queries)
        figures[f"ef{ef}"] = {"p50_ms": p50 * 1000, "recall_at_10": recall(found, truth)}
    return figures


def faiss_figures(matrix: Matrix, queries: Matrix, truth: list[list[int]]) -> dict[str, Any]:
    import faiss

    faiss.omp_set_num_threads(1)
    started = time.perf_counter()
    index = faiss.IndexHNSWFlat(matrix.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 128
    index.add(matrix)
    figures: dict[str, Any] = {"build_s": time.perf_counter() - started}
    for ef in EFS:
        index.hnsw.efSearch = ef
        p50, found = timed(lambda q: index.search(q[None], TOP_K)[1][0], queries)
        figures[f"ef{ef}"] = {"p50_ms": p50 * 1000, "recall_at_10": recall(found, truth)}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    matrix, queries = clustered(rng, args.n, args.dim), clustered(rng, args.queries, args.dim)
    exact_p50, truth = timed(lambda q: exact(matrix, q), queries)
    report: dict[str, Any] = {"n": args.n, "dim": args.dim, "exact_p50_ms": exact_p50 * 1000}
    for name, figures in (("usearch", usearch_figures), ("faiss", faiss_figures)):
        try:
            report[name] = figures(matrix, queries, truth)
        except ImportError:
            report[name] = "not installed"
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
