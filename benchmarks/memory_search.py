"""Query latency of the in-memory backend: 100k vectors (dim 384) over 100 small tenants and one 50k tenant.

Run by hand: `python benchmarks/memory_search.py [--queries N] [--seed S]`; prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time
from typing import Any

import numpy as np

from bigrag_mcp import compute
from bigrag_mcp.default_plugins.memory_backend import MemoryBackend
from bigrag_mcp.filters import parse_filter
from bigrag_mcp.types import Partition, SearchRequest, VectorRecord

DIM = 384
TOP_K = 10
COLLECTION = "bench"
SMALL_TENANTS = 100
SMALL_TOTAL = 50_000
SMALL_PROBE_SIZE = 1_000
BIG_SIZE = 50_000
KINDS = 10
FILTER = {"kind": "k3"}  # about one record in ten


def tenant_sizes() -> dict[str, int]:
    """One 1k tenant, 99 more sharing the rest of 50k, and the 50k tenant: 100k vectors in all."""
    rest = SMALL_TOTAL - SMALL_PROBE_SIZE
    sizes = {"small_000": SMALL_PROBE_SIZE}
    for i in range(1, SMALL_TENANTS):
        sizes[f"small_{i:03d}"] = rest // (SMALL_TENANTS - 1) + (1 if i <= rest % (SMALL_TENANTS - 1) else 0)
    sizes["big"] = BIG_SIZE
    return sizes


async def build(backend: MemoryBackend, rng: np.random.Generator) -> dict[str, int]:
    sizes = tenant_sizes()
    for tenant, size in sizes.items():
        vectors = rng.standard_normal((size, DIM), dtype=np.float32)
        kinds = rng.integers(0, KINDS, size)
        records = [
            VectorRecord(f"{tenant}-{i}", vectors[i], metadata={"kind": f"k{kinds[i]}", "n": int(i)})
            for i in range(size)
        ]
        for start in range(0, size, 1000):
            await backend.upsert(Partition(COLLECTION, tenant), records[start : start + 1000])
    return sizes


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if len(samples) > 1 else samples[0]


async def latency(
    backend: MemoryBackend, tenant: str, raw_filter: dict[str, Any] | None, queries: int, rng: np.random.Generator
) -> dict[str, float]:
    where = Partition(COLLECTION, tenant)
    tree = parse_filter(raw_filter)

    async def once() -> float:
        request = SearchRequest(top_k=TOP_K, vector=rng.standard_normal(DIM).tolist(), filter=tree)
        start = time.perf_counter()
        hits = await backend.search(where, request)
        elapsed = (time.perf_counter() - start) * 1000
        assert len(hits) == TOP_K
        return elapsed

    first = await once()  # includes building the filter's column index when a filter is given
    samples = [await once() for _ in range(queries)]
    return {
        "first_ms": round(first, 3),
        "p50_ms": round(percentile(samples, 50), 3),
        "p95_ms": round(percentile(samples, 95), 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    compute.configure()  # BLAS threads as the service sets them, so the figures are the service's
    rng = np.random.default_rng(args.seed)
    backend = MemoryBackend()
    start = time.perf_counter()
    sizes = await build(backend, rng)
    build_s = time.perf_counter() - start
    results: dict[str, Any] = {
        "vectors": sum(sizes.values()),
        "dimension": DIM,
        "tenants": len(sizes),
        "top_k": TOP_K,
        "queries_per_case": args.queries,
        "build_seconds": round(build_s, 2),
        "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "filter": FILTER,
    }
    for label, tenant in (("tenant_1k", "small_000"), ("tenant_50k", "big")):
        for suffix, raw in (("", None), ("_filtered", FILTER)):
            results[f"{label}{suffix}"] = {
                "size": sizes[tenant],
                **await latency(backend, tenant, raw, args.queries, rng),
            }
    await backend.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
