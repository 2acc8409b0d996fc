"""The memory backend's HNSW graphs against its exact search, on one partition, in one run.

Clustered unit vectors (as `ann_candidates.py`) go into two memory backends, one exact and one with
`ann_min_rows=1` whose graph is built inline (what the background thread does, timed). Then, through
`MemoryBackend.search`: p50 latency and recall@10 of the graph against exact, unfiltered and with a filter letting
half of the rows through, at several `ef`; the time to save the graph and to map it again on a restart against the build time.

Run by hand: `pip install -e ".[ann]"; python benchmarks/ann.py [--n N] [--dim D]`; prints JSON. The exact p50s
before the build and the build's progress (rows added, ms per vector, each minute) go to stderr, so a run cut
short still tells (1M rows take 17-20 minutes to build here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ann_candidates import DATA, dataset

from bigrag_mcp import compute
from bigrag_mcp.default_plugins.memory_backend import MemoryBackend
from bigrag_mcp.filters import parse_filter
from bigrag_mcp.types import Hit, Partition, PartitionRows, SearchRequest

WHERE = Partition("bench.0123abcd", None)


def run_now(job: Callable[[], None]) -> None:
    job()


async def measure(backend: MemoryBackend, queries: np.ndarray, **kw: Any) -> tuple[float, list[list[Hit]]]:
    times, found = [], []
    for q in queries:
        request = SearchRequest(top_k=10, mode="semantic", vector=q.tolist(), **kw)
        started = time.perf_counter()
        found.append(await backend.search(WHERE, request))
        times.append(time.perf_counter() - started)
    return statistics.median(times), found


def recall(found: list[list[Hit]], truth: list[list[Hit]]) -> float:
    return float(np.mean([len({h.id for h in f} & {h.id for h in t}) / max(len(t), 1) for f, t in zip(found, truth)]))


def progress(backend: MemoryBackend, started: float, done: threading.Event, every: float = 60.0) -> None:
    """Print the graph being built's size and rate to stderr every `every` seconds, so a cut-short run still tells."""
    while not done.wait(every):
        part = backend._partitions.get(WHERE)
        graph = part.building or part.graph if part is not None else None
        added = int(graph.index.ntotal) if graph is not None else 0
        elapsed = time.perf_counter() - started
        note = {"building_s": round(elapsed, 1), "added": added, "ms_per_vector": round(1000 * elapsed / max(added, 1), 3)}
        print(json.dumps(note), file=sys.stderr, flush=True)


def rows(matrix: np.ndarray) -> PartitionRows:
    return PartitionRows(
        ids=[f"r{i}" for i in range(len(matrix))],
        vectors=matrix.copy(),
        texts=[None] * len(matrix),
        metadata=[{"half": i % 2} for i in range(len(matrix))],
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--data", choices=sorted(DATA), default="latent")
    parser.add_argument("--efs", default="64,128,256")
    args = parser.parse_args()
    compute.configure(0, 1)
    matrix, queries = dataset(args.data, args.n, args.queries, args.dim)
    report: dict[str, Any] = {"n": args.n, "dim": args.dim, "data": args.data, "load_avg_1m": os.getloadavg()[0]}
    exact = MemoryBackend()
    await exact.replace(WHERE, rows(matrix))
    for label, kw in (("unfiltered", {}), ("filter_half", {"filter": parse_filter({"half": 1})})):
        before = {"exact_before_build_p50_ms": round((await measure(exact, queries, **kw))[0] * 1000, 3)}
        print(json.dumps({label: before}), file=sys.stderr, flush=True)  # kept if the build is cut short
    with tempfile.TemporaryDirectory() as folder:
        ann = MemoryBackend(ann_min_rows=1, ann_folder=Path(folder), background=run_now)
        started, done = time.perf_counter(), threading.Event()
        threading.Thread(target=progress, args=(ann, started, done), daemon=True).start()
        await ann.replace(WHERE, rows(matrix))  # loads, builds the graph inline, saves it
        done.set()
        report["build_and_save_s"] = round(time.perf_counter() - started, 2)
        report["build_ms_per_vector"] = round(1000 * report["build_and_save_s"] / args.n, 3)
        await ann.close()  # its matrix and graph go before the restarted backend loads its own
        del ann
        restarted = MemoryBackend(ann_min_rows=1, ann_folder=Path(folder), background=run_now)
        started = time.perf_counter()
        await restarted.replace(WHERE, rows(matrix))  # loads and maps the saved graph
        report["restart_with_saved_graph_s"] = round(time.perf_counter() - started, 2)
        report["saved_graph_mb"] = round(sum(p.stat().st_size for p in Path(folder).iterdir()) / 1e6, 1)
        report["restart_vs_build"] = round(report["restart_with_saved_graph_s"] / report["build_and_save_s"], 4)
        for label, kw in (("unfiltered", {}), ("filter_half", {"filter": parse_filter({"half": 1})})):
            exact_p50, truth = await measure(exact, queries, **kw)
            report[label] = {"exact_p50_ms": round(exact_p50 * 1000, 3)}
            for ef in map(int, args.efs.split(",")):
                graph = restarted._partitions[WHERE].graph
                assert graph is not None
                graph.ef = ef
                ann_p50, found = await measure(restarted, queries, **kw)
                report[label][f"ef{ef}"] = {
                    "hnsw_p50_ms": round(ann_p50 * 1000, 3),
                    "hnsw_vs_exact": round(ann_p50 / exact_p50, 4),
                    "recall_at_10": recall(found, truth),
                }
        await restarted.close()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
