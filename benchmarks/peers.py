"""Tenant-filtered top-10 cosine search: bigrag's memory backend against the peers installed, in one run.

One seeded dataset (float32, dim 384): half the vectors spread over `--tenants` small tenants, half in one big tenant.
Each system ingests it all, then answers the same queries against a small tenant and the big one. Peers come from
the `peers` extra (`pip install -e ".[peers]"`); one that is not importable is reported as skipped. Figures are
ratios to bigrag's p50 in the same run; `recall` is the share of the exact top 10 returned. BLAS is set up as the
service sets it (`compute.configure()`: one thread per call) for the whole process.

Run by hand: `python benchmarks/peers.py [--vectors N] [--tenants T] [--queries Q] [--seed S]`; prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from memory_search import percentile

from bigrag_mcp import compute
from bigrag_mcp.default_plugins.memory_backend import MemoryBackend
from bigrag_mcp.types import Partition, SearchRequest, VectorRecord

DIM = 384
TOP_K = 10
BATCH = 5_000
MIN_QUERIES = 10
Matrix = npt.NDArray[np.float32]


@dataclass
class Dataset:
    """Row i is vector `vectors[i]` of tenant `tenants[i]`; its id everywhere is i."""

    vectors: Matrix
    tenants: list[str]
    rows: dict[str, npt.NDArray[np.int64]]  # each tenant's row numbers


def make_dataset(vectors: int, tenants: int, rng: np.random.Generator) -> Dataset:
    """Half the rows round-robin over `tenants` small tenants, the other half in tenant "big"."""
    small = vectors // 2
    names = [f"t{i % tenants:04d}" for i in range(small)] + ["big"] * (vectors - small)
    matrix = rng.standard_normal((vectors, DIM), dtype=np.float32)
    column = np.array(names)
    rows = {name: np.flatnonzero(column == name) for name in ("t0000", "big")}
    return Dataset(matrix, names, rows)


def exact_top(data: Dataset, tenant: str, query: Matrix) -> set[int]:
    """The true top 10 by cosine inside `tenant`."""
    rows = data.rows[tenant]
    block = data.vectors[rows]
    scores = block @ query / (np.linalg.norm(block, axis=1) * np.linalg.norm(query))
    return {int(rows[i]) for i in np.argsort(-scores)[:TOP_K]}


class Bigrag:
    """The memory backend, one partition per tenant as the service addresses it."""

    def __init__(self, folder: str) -> None:
        self.backend = MemoryBackend()

    async def ingest(self, data: Dataset) -> None:
        by_tenant: dict[str, list[int]] = {}
        for i, tenant in enumerate(data.tenants):
            by_tenant.setdefault(tenant, []).append(i)
        for tenant, rows in by_tenant.items():
            for start in range(0, len(rows), BATCH):
                chunk = rows[start : start + BATCH]
                records = [VectorRecord(str(i), data.vectors[i], metadata={"tenant": tenant}) for i in chunk]
                await self.backend.upsert(Partition("bench", tenant), records)

    async def search(self, tenant: str, query: Matrix) -> list[int]:
        request = SearchRequest(top_k=TOP_K, vector=query.tolist())  # a list, as the service passes it
        hits = await self.backend.search(Partition("bench", tenant), request)
        return [int(h.id) for h in hits]

    async def close(self) -> None:
        await self.backend.close()


class Chroma:
    """Chroma's ephemeral client: one collection, cosine HNSW (approximate), `where={"tenant": ...}`."""

    def __init__(self, folder: str) -> None:
        import chromadb

        self.client = chromadb.EphemeralClient()
        self.collection = self.client.create_collection("bench", metadata={"hnsw:space": "cosine"})

    async def ingest(self, data: Dataset) -> None:
        for start in range(0, len(data.tenants), BATCH):
            stop = min(start + BATCH, len(data.tenants))
            self.collection.add(
                ids=[str(i) for i in range(start, stop)],
                embeddings=data.vectors[start:stop],
                metadatas=[{"tenant": t} for t in data.tenants[start:stop]],
            )

    async def search(self, tenant: str, query: Matrix) -> list[int]:
        found = self.collection.query(
            query_embeddings=[query], n_results=TOP_K, where={"tenant": tenant}, include=["distances"]
        )
        return [int(i) for i in found["ids"][0]]

    async def close(self) -> None:
        self.client.delete_collection("bench")


class Lance:
    """LanceDB in a local folder: no vector index (exact scan), a scalar index on tenant, prefiltered."""

    def __init__(self, folder: str) -> None:
        import lancedb

        self.db = lancedb.connect(folder)

    async def ingest(self, data: Dataset) -> None:
        import pyarrow as pa

        def batch(start: int) -> pa.Table:
            stop = min(start + BATCH * 10, len(data.tenants))
            flat = pa.array(data.vectors[start:stop].reshape(-1))
            return pa.table(
                {
                    "id": pa.array(np.arange(start, stop)),
                    "tenant": pa.array(data.tenants[start:stop]),
                    "vector": pa.FixedSizeListArray.from_arrays(flat, DIM),
                }
            )

        self.table = self.db.create_table("bench", data=batch(0))
        for start in range(BATCH * 10, len(data.tenants), BATCH * 10):
            self.table.add(batch(start))
        from lancedb.index import BTree

        self.table.create_index("tenant", config=BTree())

    async def search(self, tenant: str, query: Matrix) -> list[int]:
        found = (
            self.table.search(query)
            .distance_type("cosine")
            .where(f"tenant = '{tenant}'", prefilter=True)
            .limit(TOP_K)
            .select(["id", "_distance"])
            .to_arrow()
        )
        return [int(i) for i in found["id"].to_pylist()]

    async def close(self) -> None:
        self.db.drop_table("bench")


class SqliteVec:
    """sqlite-vec (through apsw, which can load extensions): a vec0 table partitioned by tenant, cosine, exact."""

    def __init__(self, folder: str) -> None:
        import apsw
        import sqlite_vec

        self.db = apsw.Connection(":memory:")
        self.db.enable_load_extension(True)
        self.db.load_extension(sqlite_vec.loadable_path())
        self.db.execute(
            f"create virtual table bench using vec0(tenant text partition key, embedding float[{DIM}] distance_metric=cosine)"
        )

    async def ingest(self, data: Dataset) -> None:
        with self.db:
            self.db.executemany(
                "insert into bench(rowid, tenant, embedding) values (?, ?, ?)",
                ((i, t, data.vectors[i].tobytes()) for i, t in enumerate(data.tenants)),
            )

    async def search(self, tenant: str, query: Matrix) -> list[int]:
        rows = self.db.execute(
            "select rowid from bench where embedding match ? and k = ? and tenant = ?",
            (query.tobytes(), TOP_K, tenant),
        )
        return [int(r[0]) for r in rows]

    async def close(self) -> None:
        self.db.close()


class Qdrant:
    """qdrant-client's local in-memory mode: cosine, exact, a payload filter on tenant."""

    def __init__(self, folder: str) -> None:
        from qdrant_client import QdrantClient, models

        self.models = models
        self.client = QdrantClient(":memory:")
        self.client.create_collection(
            "bench", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE)
        )

    async def ingest(self, data: Dataset) -> None:
        for start in range(0, len(data.tenants), BATCH):
            stop = min(start + BATCH, len(data.tenants))
            self.client.upsert(
                "bench",
                points=self.models.Batch(
                    ids=list(range(start, stop)),
                    vectors=data.vectors[start:stop].tolist(),
                    payloads=[{"tenant": t} for t in data.tenants[start:stop]],
                ),
            )

    async def search(self, tenant: str, query: Matrix) -> list[int]:
        m = self.models
        only = m.Filter(must=[m.FieldCondition(key="tenant", match=m.MatchValue(value=tenant))])
        found = self.client.query_points("bench", query=query.tolist(), query_filter=only, limit=TOP_K)
        return [int(p.id) for p in found.points]

    async def close(self) -> None:
        self.client.close()


SYSTEMS: dict[str, Callable[[str], Any]] = {
    "bigrag_memory": Bigrag,
    "chroma": Chroma,
    "lancedb": Lance,
    "sqlite_vec": SqliteVec,
    "qdrant_local": Qdrant,
}


async def measure(
    make: Callable[[str], Any],
    data: Dataset,
    queries: dict[str, Matrix],
    truth: dict[str, list[set[int]]],
    budget: float,
) -> dict[str, Any]:
    """Build one system, ingest the dataset, time its queries per tenant (stopping a case after `budget` seconds),
    score them against `truth`; release it."""
    folder = tempfile.mkdtemp(prefix="bigrag-peers-")
    try:
        start = time.perf_counter()
        system = make(folder)
        await system.ingest(data)
        result: dict[str, Any] = {"ingest_seconds": round(time.perf_counter() - start, 2)}
        for tenant, block in queries.items():
            await system.search(tenant, block[0])  # warm-up, not timed
            samples: list[float] = []
            answers: list[list[int]] = []
            deadline = time.perf_counter() + budget
            for query in block:
                if len(samples) >= MIN_QUERIES and time.perf_counter() > deadline:
                    break  # a slow system: fewer queries, reported as such
                began = time.perf_counter()
                answers.append(await system.search(tenant, query))
                samples.append((time.perf_counter() - began) * 1000)
            found = sum(len(set(ids) & best) for ids, best in zip(answers, truth[tenant]))
            result[tenant] = {
                "size": len(data.rows[tenant]),
                "queries": len(samples),
                "p50_ms": round(percentile(samples, 50), 3),
                "p95_ms": round(percentile(samples, 95), 3),
                "recall": round(found / (TOP_K * len(answers)), 3),
            }
        await system.close()
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        gc.collect()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=20_000)
    parser.add_argument("--tenants", type=int, default=100, help="small tenants sharing half the vectors")
    parser.add_argument("--queries", type=int, default=100, help="per tenant case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per case before a slow system stops early")
    parser.add_argument("--only", nargs="*", choices=sorted(SYSTEMS), help="measure just these systems")
    args = parser.parse_args()
    compute.configure()  # as the service starts: one BLAS thread per call, for every system in this process
    rng = np.random.default_rng(args.seed)
    data = make_dataset(args.vectors, args.tenants, rng)
    queries = {tenant: rng.standard_normal((args.queries, DIM), dtype=np.float32) for tenant in data.rows}
    truth = {tenant: [exact_top(data, tenant, q) for q in block] for tenant, block in queries.items()}
    report: dict[str, Any] = {
        "vectors": args.vectors,
        "dimension": DIM,
        "tenants": args.tenants + 1,
        "top_k": TOP_K,
        "queries_per_case": args.queries,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    systems: dict[str, Any] = {}
    for name, make in SYSTEMS.items():
        if args.only is not None and name not in args.only and name != "bigrag_memory":
            continue
        try:
            systems[name] = await measure(make, data, queries, truth, args.budget)
        except ImportError as missing:
            systems[name] = {"skipped": "not installed", "module": missing.name}
    base = systems["bigrag_memory"]
    for name, figures in systems.items():
        for tenant in data.rows:
            if tenant in figures:
                figures[tenant]["p50_vs_bigrag"] = round(figures[tenant]["p50_ms"] / base[tenant]["p50_ms"], 1)
    report["systems"] = systems
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
