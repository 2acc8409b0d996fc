"""Cross-replica visibility: how long after a write through replica A a query through replica B returns it.

Two `bigrag-mcp serve --transport streamable-http` processes on one Postgres store (a throwaway `pgserver`; needs
`pip install -e "plugins/pgvector[test]"`), once with the memory backend and once with pgvector, driven through
the MCP SDK's HTTP client. A shared collection holds `--seed` chunks of one tenant (dimension 384, `hash`
embedder). Each round, interleaved: a plain query through B for the document of the previous round (the floor:
the same query, already visible), a one-chunk `documents_upload` through A, then the same query through B for
the new document (a metadata filter on the round) until one returns it.
Reported per backend: medians of the plain query, the upload, and the time from the upload's answer to B's
first answer holding the document, that time as a ratio to the plain query of the same run, and how many
queries B needed (1 = its next call saw the write).

Run by hand: `python benchmarks/replicas.py [--rounds N] [--seed N]`; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

import anyio
import numpy as np
from bigrag_pgvector.testing import postgres_server
from mcp import Client
from serving import http_session

from bigrag_mcp.services.keys import create_key
from bigrag_mcp.store.db import Database
from bigrag_mcp.testing.replicas import fresh_postgres_database, serve_replicas

DIM = 384
COLLECTION = "bench"
TENANT = {"tenant_id": "acme"}


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    if result.is_error or result.structured_content is None:
        raise RuntimeError(f"{tool}: {result.content}")
    return result.structured_content


async def query(client: Client, round_: int) -> list[dict[str, Any]]:
    answer = await call(client, "query", collection=COLLECTION, query=f"report number {round_}", top_k=5,
                        filters={**TENANT, "round": round_})
    return list(answer["results"])


async def upload(client: Client, round_: int) -> None:
    await call(client, "documents_upload", collection=COLLECTION, text=f"Quarterly report number {round_}.",
               metadata={**TENANT, "round": round_})


async def measure(url_a: str, url_b: str, key: str, rounds: int, seed: int) -> dict[str, Any]:
    async with http_session(url_a, key) as a, http_session(url_b, key) as b:
        await call(a, "collections_create", collection=COLLECTION, tenant_field="tenant_id", dimension=DIM)
        rng = np.random.default_rng(7)
        for start in range(0, seed, 1000):
            records = [{"id": f"seed{i}", "vector": rng.standard_normal(DIM).tolist(), "text": f"seed text {i}",
                        "metadata": {**TENANT, "seed": True}} for i in range(start, min(seed, start + 1000))]
            await call(a, "vectors_upsert", collection=COLLECTION, vectors=records)
        await upload(a, -1)
        for _ in range(3):  # B loads the partition and warms up
            assert await query(b, -1)
        plain, writes, visible, probes = [], [], [], []
        for r in range(rounds):
            started = time.perf_counter()
            assert await query(b, r - 1)  # the same query for the document written last round, already seen
            plain.append(time.perf_counter() - started)

            started = time.perf_counter()
            await upload(a, r)
            written = time.perf_counter()
            writes.append(written - started)
            asked = 1
            while not await query(b, r):
                asked += 1
            visible.append(time.perf_counter() - written)
            probes.append(asked)
    floor = statistics.median(plain)
    return {
        "plain_query_ms_p50": round(floor * 1000, 2),
        "upload_ms_p50": round(statistics.median(writes) * 1000, 2),
        "visible_after_write_ms_p50": round(statistics.median(visible) * 1000, 2),
        "visible_after_write_ms_max": round(max(visible) * 1000, 2),
        "visible_after_write_vs_plain_query": round(statistics.median(visible) / floor, 2),
        "queries_needed_max": max(probes),
    }


async def main(rounds: int, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": rounds, "seed_chunks": seed, "dimension": DIM, "load_average": os.getloadavg()}
    with postgres_server() as server:
        for backend in ("memory", "pgvector"):
            async with fresh_postgres_database(server) as url:
                store = Database(url)
                await store.migrate()
                _, key = await create_key(store, name="bench", scopes=["*:*"])
                await store.close()
                with tempfile.TemporaryDirectory() as data:
                    env = {k: v for k, v in os.environ.items() if not k.startswith("BIGRAG_")}
                    env.update(BIGRAG_DATA_DIR=data, BIGRAG_DATABASE_URL=url, BIGRAG_VECTOR_BACKEND=backend,
                               BIGRAG_EMBEDDING_PROVIDER="hash", BIGRAG_LOAD_PLUGINS="pgvector")
                    async with serve_replicas(env, 2) as (url_a, url_b):
                        out[backend] = await measure(url_a, url_b, key, rounds, seed)
    out["load_average_after"] = os.getloadavg()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="writes measured per backend")
    parser.add_argument("--seed", type=int, default=5000, help="chunks in the tenant before the first round")
    args = parser.parse_args()
    print(json.dumps(anyio.run(main, args.rounds, args.seed), indent=2))
