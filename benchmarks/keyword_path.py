"""Keyword (BM25) search over one partition: the memory backend alone vs the whole service call, interleaved.

Run by hand: `python benchmarks/keyword_path.py [--chunks 20000] [--queries 200]`; prints one JSON object with
each path's p50/p90 and the service's p50 over the backend's (ratio and milliseconds), from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics

import numpy as np
from call_path import interleaved, summary
from ingest import WORDS
from serving import COLLECTION, DIM, ms, scratch_folder, settings_for

from bigrag_mcp.services import collections, search, vectors
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.types import SearchRequest

QUERIES = ["refund policy for the quarterly ledger", "harbour shipment tariff", "replica latency audit", "plum cherry orchard"]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=200)
    a = parser.parse_args()
    rt = await Runtime.open(settings_for(scratch_folder()))
    rng, words = np.random.default_rng(7), random.Random(7)
    await collections.create(rt, name=COLLECTION, dimension=DIM)
    for start in range(0, a.chunks, 1000):
        block = rng.standard_normal((min(1000, a.chunks - start), DIM)).astype(np.float32)
        await vectors.upsert(rt, COLLECTION, [
            {"id": f"r{start + i}", "vector": row.tolist(), "text": " ".join(words.choice(WORDS) for _ in range(120))}
            for i, row in enumerate(block)
        ])
    collection = await collections.load(rt, COLLECTION)
    where = await rt.index.ready(collection, None)
    turn = iter(range(10**9))

    async def backend() -> None:
        await rt.backend.search(where, SearchRequest(top_k=10, mode="keyword", text=QUERIES[next(turn) % len(QUERIES)]))

    async def service() -> None:
        found = await search.search(rt, COLLECTION, QUERIES[next(turn) % len(QUERIES)], top_k=10, search_mode="keyword")
        assert len(found.results) == 10

    samples = await interleaved({"backend": backend, "service": service}, a.queries)
    await rt.close()
    p50 = {name: statistics.median(values) for name, values in samples.items()}
    print(json.dumps({
        "chunks": a.chunks, "queries": a.queries,
        "keyword": {name: summary(values) for name, values in samples.items()},
        "service_over_backend_ratio": round(p50["service"] / p50["backend"], 2),
        "service_over_backend_ms": ms(p50["service"] - p50["backend"]),
    }, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
