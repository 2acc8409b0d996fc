"""Tenant query latency and ingest rate of the pgvector backend vs the memory backend on the same 10k chunks.

10k chunks (dim 384, texts and a `kind` field) in one 5k tenant and five 1k tenants, written to both backends;
then the same semantic, filtered and hybrid queries against both. The Postgres is a throwaway `pgserver`
(needs `pip install -e "plugins/pgvector[test]"`). Run by hand: `python benchmarks/pgvector.py [--queries N]`;
prints one JSON object, pgvector figures also as ratios to memory's from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import numpy as np
from bigrag_pgvector import PgvectorBackend, PgvectorSettings
from bigrag_pgvector.testing import postgres_server

from bigrag_mcp.default_plugins.memory_backend import MemoryBackend
from bigrag_mcp.filters import parse_filter
from bigrag_mcp.types import Partition, SearchRequest, VectorBackend, VectorRecord

DIM = 384
TOP_K = 10
SIZES = {"big": 5_000, **{f"small_{i}": 1_000 for i in range(5)}}
WORDS = ["falcon", "river", "stone", "meadow", "report", "memo", "refund", "invoice", "policy", "tenant", "index"]
BATCH = 500


def records(rng: np.random.Generator, size: int) -> list[VectorRecord]:
    vectors = rng.standard_normal((size, DIM)).astype(np.float32)
    return [
        VectorRecord(
            f"doc{i // 8}#{i % 8}",
            vectors[i].tolist(),
            text=" ".join(rng.choice(WORDS, 12)),
            metadata={"kind": f"k{i % 10}", "year": 2000 + i % 25},
        )
        for i in range(size)
    ]


async def fill(backend: VectorBackend, data: dict[str, list[VectorRecord]]) -> float:
    """Write every tenant in batches; chunks per second."""
    start = time.perf_counter()
    for tenant, recs in data.items():
        for i in range(0, len(recs), BATCH):
            await backend.upsert(Partition("bench", tenant), recs[i : i + BATCH])
    return sum(map(len, data.values())) / (time.perf_counter() - start)


async def latency_ms(backend: VectorBackend, tenant: str, requests: list[SearchRequest]) -> float:
    """Median milliseconds per search."""
    times = []
    for request in requests:
        start = time.perf_counter()
        await backend.search(Partition("bench", tenant), request)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def measure(
    backend: VectorBackend, data: dict[str, list[VectorRecord]], queries: list[list[float]]
) -> dict[str, Any]:
    out: dict[str, Any] = {"ingest_chunks_per_s": round(await fill(backend, data))}
    kinds = {
        "semantic": [SearchRequest(top_k=TOP_K, vector=q) for q in queries],
        "filtered": [SearchRequest(top_k=TOP_K, vector=q, filter=parse_filter({"kind": "k3"})) for q in queries],
        "hybrid": [SearchRequest(top_k=TOP_K, mode="hybrid", vector=q, text="falcon refund") for q in queries],
    }
    for tenant in ("big", "small_0"):
        for kind, requests in kinds.items():
            await latency_ms(backend, tenant, requests[:3])  # warm caches and plans
            out[f"{tenant}_{kind}_p50_ms"] = round(await latency_ms(backend, tenant, requests), 3)
    return out


async def main(n_queries: int) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    data = {tenant: records(rng, size) for tenant, size in SIZES.items()}
    queries = rng.standard_normal((n_queries, DIM)).tolist()
    memory = await measure(MemoryBackend(), data, queries)
    with postgres_server() as url:
        backend = PgvectorBackend(PgvectorSettings(url=url))
        try:
            pg = await measure(backend, data, queries)
        finally:
            await backend.close()
    ratios = {k: round(pg[k] / memory[k], 1) for k in pg}
    return {
        "chunks": sum(SIZES.values()),
        "dim": DIM,
        "tenants": SIZES,
        "memory": memory,
        "pgvector": pg,
        "pgvector_over_memory": ratios,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=50)
    print(json.dumps(asyncio.run(main(parser.parse_args().queries)), indent=2))
