"""The pgvector backend vs the memory backend on the same data, and exact vs HNSW search in pgvector.

Two tenants of one collection, holding 10k and 100k chunks (dim 384, texts, a `kind` field with ten values).
The vectors are synthetic with structure (a 48-dimensional latent space mapped to 384 dimensions plus noise), as
sentence embeddings have; queries come from the same distribution. Each tenant's semantic, filtered (`kind` = one
value: 10% of the rows) and hybrid query latency is measured on the memory backend, on pgvector with exact search,
then the semantic one on pgvector with an HNSW index per tenant at several `hnsw.ef_search` depths, with recall@10
against exact (filtered and hybrid searches stay exact).
Ingest rates: every chunk in batches of 500 into each backend, and 500 more into the indexed big tenant.

The Postgres is a throwaway `pgserver` (`pip install -e "plugins/pgvector[test]"`), with maintenance_work_mem
1 GB for the index builds. Run by hand: `python benchmarks/pgvector.py [--queries N] [--small]`; prints one JSON
object; pgvector figures also as ratios to memory's (and HNSW's to exact's) from the same run.
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
from sqlalchemy import text

from bigrag_mcp.default_plugins.memory_backend import MemoryBackend
from bigrag_mcp.filters import parse_filter
from bigrag_mcp.types import Partition, SearchRequest, VectorBackend, VectorRecord

DIM = 384
LATENT = 48
TOP_K = 10
WORDS = ["falcon", "river", "stone", "meadow", "report", "memo", "refund", "invoice", "policy", "tenant", "index"]
BATCH = 500
EXTRA = 500  # chunks written into the indexed big tenant
EF_SEARCH = (200, 400, 800)
KINDS = ("semantic", "filtered", "hybrid")


class Data:
    """Structured synthetic embeddings: latent vectors mapped to DIM dimensions, plus noise."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.mix = self.rng.standard_normal((LATENT, DIM)).astype(np.float32)

    def vectors(self, n: int) -> np.ndarray:
        latent = self.rng.standard_normal((n, LATENT)).astype(np.float32)
        return latent @ self.mix + 0.5 * self.rng.standard_normal((n, DIM)).astype(np.float32)

    def records(self, size: int, prefix: str = "doc") -> list[VectorRecord]:
        vectors = self.vectors(size)
        return [
            VectorRecord(
                f"{prefix}{i // 8}#{i % 8}",
                vectors[i].tolist(),
                text=" ".join(self.rng.choice(WORDS, 12)),
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


async def timed(backend: VectorBackend, tenant: str, requests: list[SearchRequest]) -> tuple[float, list[list[str]]]:
    """Median milliseconds per search (after three warm-up searches), and each search's ids."""
    for request in requests[:3]:
        await backend.search(Partition("bench", tenant), request)
    times, ids = [], []
    for request in requests:
        start = time.perf_counter()
        hits = await backend.search(Partition("bench", tenant), request)
        times.append((time.perf_counter() - start) * 1000)
        ids.append([h.id for h in hits])
    return statistics.median(times), ids


def workload(queries: list[list[float]]) -> dict[str, list[SearchRequest]]:
    return {
        "semantic": [SearchRequest(top_k=TOP_K, vector=q) for q in queries],
        "filtered": [SearchRequest(top_k=TOP_K, vector=q, filter=parse_filter({"kind": "k3"})) for q in queries],
        "hybrid": [SearchRequest(top_k=TOP_K, mode="hybrid", vector=q, text="falcon refund") for q in queries],
    }


async def latencies(
    backend: VectorBackend, tenants: list[str], requests: dict[str, list[SearchRequest]], kinds: tuple[str, ...] = KINDS
) -> tuple[dict[str, float], dict[str, list[list[str]]]]:
    out, ids = {}, {}
    for tenant in tenants:
        for kind in kinds:
            ms, found = await timed(backend, tenant, requests[kind])
            out[f"{tenant}_{kind}_p50_ms"] = round(ms, 3)
            ids[f"{tenant}_{kind}"] = found
    return out, ids


def recall(found: list[list[str]], truth: list[list[str]]) -> float:
    return sum(len(set(f) & set(t)) for f, t in zip(found, truth)) / max(1, sum(len(t) for t in truth))


def pg(url: str, **kw: Any) -> PgvectorBackend:
    return PgvectorBackend(PgvectorSettings(url=url, schema_name="bench", **kw))


async def main(n_queries: int, sizes: dict[str, int]) -> dict[str, Any]:
    gen = Data(7)
    data = {tenant: gen.records(size) for tenant, size in sizes.items()}
    big = max(sizes, key=lambda t: sizes[t])
    extra = gen.records(EXTRA, prefix="extra")
    requests = workload(gen.vectors(n_queries).tolist())
    tenants = list(sizes)

    memory = MemoryBackend()
    mem: dict[str, Any] = {"ingest_chunks_per_s": round(await fill(memory, data))}
    mem_lat, _ = await latencies(memory, tenants, requests)
    mem.update(mem_lat)

    with postgres_server() as url:
        exact = pg(url, hnsw_min_rows=0)
        try:
            async with exact._autocommit() as conn:
                await conn.execute(text("ALTER SYSTEM SET maintenance_work_mem = '1GB'"))
                await conn.execute(text("SELECT pg_reload_conf()"))
            pg_exact: dict[str, Any] = {"ingest_chunks_per_s": round(await fill(exact, data))}
            exact_lat, truth = await latencies(exact, tenants, requests)
            pg_exact.update(exact_lat)
        finally:
            await exact.close()

        hnsw: dict[str, Any] = {"build_s": {}}
        for tenant in tenants:  # the first search of a big enough partition starts its build
            builder = pg(url, hnsw_min_rows=1)
            try:
                start = time.perf_counter()
                await builder.search(Partition("bench", tenant), requests["semantic"][0])
                await builder.wait_for_indexes()
                hnsw["build_s"][tenant] = round(time.perf_counter() - start, 1)
            finally:
                await builder.close()
        for ef in EF_SEARCH:
            indexed = pg(url, hnsw_min_rows=1, hnsw_ef_search=ef)
            try:
                lat, found = await latencies(indexed, tenants, requests, ("semantic",))  # filtered ones stay exact
                hnsw[f"ef_search_{ef}"] = {
                    **lat,
                    **{f"{k}_recall_at_10": round(recall(found[k], truth[k]), 4) for k in found},
                    **{f"{k}_p50_over_exact": round(lat[f"{k}_p50_ms"] / pg_exact[f"{k}_p50_ms"], 3) for k in found},
                }
            finally:
                await indexed.close()
        indexed = pg(url, hnsw_min_rows=1)
        try:
            start = time.perf_counter()
            await fill(indexed, {big: extra})
            hnsw[f"ingest_into_indexed_{big}_chunks_per_s"] = round(EXTRA / (time.perf_counter() - start))
        finally:
            await indexed.close()

    return {
        "chunks": sum(sizes.values()),
        "dim": DIM,
        "tenants": sizes,
        "queries": n_queries,
        "memory": mem,
        "pgvector_exact": pg_exact,
        "pgvector_exact_over_memory": {k: round(pg_exact[k] / mem[k], 2) for k in mem},
        "pgvector_hnsw": hnsw,
        f"pgvector_hnsw_ef{EF_SEARCH[1]}_over_memory": {
            k: round(v / mem[k], 2) for k, v in hnsw[f"ef_search_{EF_SEARCH[1]}"].items() if k in mem
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--small", action="store_true", help="1k and 10k chunks instead of 10k and 100k (a quick check)")
    args = parser.parse_args()
    tenant_sizes = {"t1k": 1_000, "t10k": 10_000} if args.small else {"t10k": 10_000, "t100k": 100_000}
    print(json.dumps(asyncio.run(main(args.queries, tenant_sizes)), indent=2))
