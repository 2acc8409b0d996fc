"""The per-call path: a query through the service, in-memory MCP, stdio and streamable HTTP vs the backend alone,
tools/list, and cold start vs the bare SDK import — all in one run, so the ratios share the machine's load.

Run by hand: `python benchmarks/call_path.py [--size 10000] [--queries 200]`; prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from mcp import Client
from serving import (
    QUERY,
    context_switches,
    cpu_seconds,
    http_server,
    http_session,
    ms,
    percentile,
    seed,
    settings_for,
    stdio_server_pid,
    stdio_session,
)

from bigrag_mcp.policy import load_policy
from bigrag_mcp.server import build_server
from bigrag_mcp.services import search
from bigrag_mcp.services.collections import load
from bigrag_mcp.services.embedding import embed_all
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.types import SearchRequest


async def interleaved(paths: dict[str, Callable[[], Awaitable[Any]]], n: int) -> dict[str, list[float]]:
    """`n` rounds of one call on each path in turn, so every path sees the same machine load."""
    samples: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(n + 5):
        for name, work in paths.items():
            started = time.perf_counter()
            await work()
            if round_ >= 5:  # the first rounds warm caches and connections
                samples[name].append(time.perf_counter() - started)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": ms(statistics.median(samples)), "p90_ms": ms(percentile(samples, 90))}


async def mcp_query(client: Client) -> None:
    result = await client.call_tool("query", QUERY)
    assert not result.is_error and len(result.structured_content["results"]) == 10, result  # type: ignore[index]


def wall(code: str, repeats: int = 3) -> float:
    """The fastest of `repeats` fresh interpreters running `code`."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        best = min(best, time.perf_counter() - started)
    return best


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    a = parser.parse_args()
    logging.disable(logging.INFO)  # the HTTP client logs every request at INFO
    folder = Path(tempfile.mkdtemp(prefix="bigrag-bench-"))
    rt = await Runtime.open(settings_for(folder))
    key = await seed(rt, a.size)
    collection = await load(rt, QUERY["collection"])
    where = await rt.index.ready(collection, None)
    provider = rt.embedder(collection.embedding_provider, collection.embedding_model, collection.dimension)
    vector = (await embed_all(provider, [QUERY["query"]], purpose="query"))[0][0]
    request = SearchRequest(top_k=10, mode="semantic", vector=vector, text=QUERY["query"])
    n = a.queries
    out: dict[str, Any] = {"partition_size": a.size, "queries": n}

    async def embed_and_search() -> None:
        await embed_all(provider, [QUERY["query"]], purpose="query")
        await rt.backend.search(where, request)

    server = build_server(rt, load_policy(None), session_key=key, principal=await rt.lookups.principal(key))
    async with (
        Client(server) as in_memory,
        stdio_session(folder, key) as stdio,
        http_server(folder) as served,
        http_session(served.url, key) as http,
    ):
        servers = {"stdio": stdio_server_pid(), "streamable_http": served.pid}
        # what the SDK client does with every result: validate it against the tool's published output schema
        schema = next(t.output_schema for t in (await in_memory.list_tools()).tools if t.name == "query")
        content = (await in_memory.call_tool("query", QUERY)).structured_content
        validator = Draft202012Validator(schema)

        async def validate() -> None:
            assert best_match(validator.iter_errors(content)) is None
        cpu_before = {name: cpu_seconds(pid) for name, pid in servers.items()}
        waits_before = {name: context_switches(pid) for name, pid in servers.items()}
        queries = await interleaved({
            "backend": lambda: rt.backend.search(where, request),
            "embed_and_backend": embed_and_search,
            "service": lambda: search.search(rt, QUERY["collection"], QUERY["query"], top_k=10),
            "mcp_in_memory": lambda: mcp_query(in_memory),
            "stdio": lambda: mcp_query(stdio),
            "streamable_http": lambda: mcp_query(http),
            "client_output_validation": validate,
        }, n)
        # each server process answered only its own transport's queries (n, plus the 5 warm-up rounds)
        out["server_cpu_ms_per_query"] = {
            name: ms((cpu_seconds(pid) - cpu_before[name]) / (n + 5)) for name, pid in servers.items()
        }
        out["server_context_switches_per_query"] = {
            name: round((context_switches(pid) - waits_before[name]) / (n + 5), 1) for name, pid in servers.items()
        }
        listings = await interleaved(
            {"in_memory": in_memory.list_tools, "stdio": stdio.list_tools, "streamable_http": http.list_tools}, 50
        )
    await rt.close()
    p50 = {name: statistics.median(samples) for name, samples in queries.items()}
    out["query"] = {name: summary(samples) for name, samples in queries.items()}
    out["service_over_embed_and_backend_ms"] = ms(p50["service"] - p50["embed_and_backend"])
    out["mcp_in_memory_over_service_ms"] = ms(p50["mcp_in_memory"] - p50["service"])
    for transport in ("stdio", "streamable_http"):
        out[f"{transport}_over_service_ms"] = ms(p50[transport] - p50["service"])
        out[f"{transport}_over_in_memory_mcp_ms"] = ms(p50[transport] - p50["mcp_in_memory"])
    out["tools_list"] = {name: summary(samples) for name, samples in listings.items()}
    sdk = wall("import mcp.server.mcpserver")
    serve = wall("from bigrag_mcp.cli import build_parser; build_parser(['serve']).parse_args(['serve'])")
    out["cold_start"] = {"bare_sdk_import_s": round(sdk, 3), "serve_imports_s": round(serve, 3), "ratio": round(serve / sdk, 2)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
