"""HNSW candidates for big partitions against the exact search the memory backend does, in one run.

For each installed library (faiss-cpu, usearch, hnswlib) it builds an HNSW index (M=16, efConstruction 128, every
vector in one batch call) over unit vectors (`--data`) with 1 and with 2 threads, and reports build time, index
size, p50 query latency and recall@10 against exact top-10 at several `ef` values, beside the exact kernel's own
latency (matrix product + partial selection, as the memory backend does) and the ratio of each to it.
`--data latent` (default) has the low intrinsic dimension of text embeddings, `--data clustered` noise in every
dimension; queries are drawn like the data (a query from elsewhere is the hard case: see the README);
`--data minilm` is real: CISI sentences embedded by the `local` model (as many as there are, up to N; the folder
`../shared/data/cisi` or $CISI_DIR).

Run by hand: `pip install faiss-cpu usearch hnswlib; python benchmarks/ann_candidates.py [--n N] [--dim D]`;
prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

TOP_K = 10
EFS = (64, 128, 256, 512)
M = 16
EF_CONSTRUCTION = 128
Matrix = npt.NDArray[np.float32]


def clustered(rng: np.random.Generator, n: int, dim: int) -> Matrix:
    """Unit vectors around 200 centres: closer to embeddings than uniform noise, on which no ANN index does well."""
    centres = rng.standard_normal((200, dim), dtype=np.float32)
    x = centres[rng.integers(0, 200, n)] + 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def latent(rng: np.random.Generator, n: int, dim: int) -> Matrix:
    """Unit vectors of low intrinsic dimension, as text embeddings are: clusters in a 32-dim space mapped to `dim`."""
    centres = rng.standard_normal((200, 32), dtype=np.float32)
    points = centres[rng.integers(0, 200, n)] + 0.5 * rng.standard_normal((n, 32), dtype=np.float32)
    x = points @ rng.standard_normal((32, dim), dtype=np.float32) + 0.5 * rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def minilm(rng: np.random.Generator, n: int, dim: int) -> Matrix:
    """Real text embeddings: CISI sentences (`../shared/data/cisi`) embedded by the `local` MiniLM model (384 dims)."""
    from embedders import DEFAULT_DATA, sentences

    from bigrag_mcp.default_plugins.local_embedder import create_local_embedder

    texts = sentences(Path(os.environ.get("CISI_DIR", DEFAULT_DATA)), n)
    order = rng.permutation(len(texts))  # held-out queries from anywhere in the corpus
    vectors = np.asarray(create_local_embedder().embed_sync([texts[i] for i in order]).vectors, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


DATA = {"latent": latent, "clustered": clustered, "minilm": minilm}


def dataset(name: str, n: int, queries: int, dim: int) -> tuple[Matrix, Matrix]:
    """The vectors and the queries (drawn from the same distribution, the last `queries`) of one data set."""
    both = DATA[name](np.random.default_rng(0), n + queries, dim)
    return both[:-queries], both[-queries:]


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


def file_mb(save: Callable[[str], Any]) -> float:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "index")
        save(path)
        return os.path.getsize(path) / 1e6


class Candidate:
    """One library: build(matrix, threads), set_ef(ef), search(q) -> labels, save(path); `deletes` says how."""

    deletes = ""

    def build(self, matrix: Matrix, threads: int) -> None:
        raise NotImplementedError

    def set_ef(self, ef: int) -> None:
        raise NotImplementedError

    def search(self, query: Matrix) -> Any:
        raise NotImplementedError

    def save(self, path: str) -> None:
        raise NotImplementedError


class Faiss(Candidate):
    deletes = "no remove on HNSW; deleted and filtered-out labels skipped during the search (IDSelectorBitmap)"

    def build(self, matrix: Matrix, threads: int) -> None:
        import faiss

        faiss.omp_set_num_threads(threads)
        self.index = faiss.IndexHNSWFlat(matrix.shape[1], M, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index.add(matrix)
        faiss.omp_set_num_threads(1)

    def set_ef(self, ef: int) -> None:
        self.index.hnsw.efSearch = ef

    def search(self, query: Matrix) -> Any:
        return self.index.search(query[None], TOP_K)[1][0]

    def save(self, path: str) -> None:
        import faiss

        faiss.write_index(self.index, path)


class Usearch(Candidate):
    deletes = "remove(keys) marks them deleted; no filter predicate in the Python API"

    def build(self, matrix: Matrix, threads: int) -> None:
        from usearch.index import Index

        self.index = Index(
            ndim=matrix.shape[1], metric="ip", dtype="f32", connectivity=M, expansion_add=EF_CONSTRUCTION
        )
        self.index.add(np.arange(len(matrix)), matrix, threads=threads)

    def set_ef(self, ef: int) -> None:
        self.index.expansion_search = ef

    def search(self, query: Matrix) -> Any:
        return self.index.search(query, TOP_K).keys

    def save(self, path: str) -> None:
        self.index.save(path)


class Hnswlib(Candidate):
    deletes = "mark_deleted(label); filter callable in knn_query (a Python call per visited node)"

    def build(self, matrix: Matrix, threads: int) -> None:
        import hnswlib

        self.index = hnswlib.Index(space="ip", dim=matrix.shape[1])
        self.index.init_index(max_elements=len(matrix), M=M, ef_construction=EF_CONSTRUCTION)
        self.index.add_items(matrix, np.arange(len(matrix)), num_threads=threads)
        self.index.set_num_threads(1)

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(ef)

    def search(self, query: Matrix) -> Any:
        return self.index.knn_query(query, k=TOP_K)[0][0]

    def save(self, path: str) -> None:
        self.index.save_index(path)


def figures(candidate: Candidate, matrix: Matrix, queries: Matrix, truth: list[list[int]], exact_p50: float) -> Any:
    report: dict[str, Any] = {"deletes": candidate.deletes}
    for threads in (1, 2):
        started = time.perf_counter()
        candidate.build(matrix, threads)
        report[f"build_s_threads{threads}"] = round(time.perf_counter() - started, 2)
    report["build_us_per_vector_threads1"] = round(report["build_s_threads1"] / len(matrix) * 1e6, 1)
    report["file_mb"] = round(file_mb(candidate.save), 1)
    for ef in EFS:
        candidate.set_ef(ef)
        p50, found = timed(candidate.search, queries)
        report[f"ef{ef}"] = {
            "p50_ms": round(p50 * 1000, 3),
            "recall_at_10": recall(found, truth),
            "p50_vs_exact": round(p50 / exact_p50, 4),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--only", default="faiss,usearch,hnswlib")
    parser.add_argument("--data", choices=sorted(DATA), default="latent")
    args = parser.parse_args()
    matrix, queries = dataset(args.data, args.n, args.queries, args.dim)
    exact_p50, truth = timed(lambda q: exact(matrix, q), queries)
    report: dict[str, Any] = {
        "n": args.n,
        "dim": args.dim,
        "data": args.data,
        "load_avg_1m": os.getloadavg()[0],
        "matrix_mb": round(matrix.nbytes / 1e6, 1),
        "exact_p50_ms": round(exact_p50 * 1000, 3),
    }
    candidates: dict[str, type[Candidate]] = {"faiss": Faiss, "usearch": Usearch, "hnswlib": Hnswlib}
    for name in args.only.split(","):
        try:
            report[name] = figures(candidates[name](), matrix, queries, truth, exact_p50)
        except ImportError:
            report[name] = "not installed"
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
