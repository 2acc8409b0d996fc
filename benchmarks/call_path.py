"""The per-call path: a query through the service, in-memory MCP, stdio and streamable HTTP vs the backend alone,
tools/list, and cold start vs the bare SDK import — all in one run, so the ratios share the machine's load.

Each transport also gets its floor: the same request and response bytes through a bare server of that transport
(a process that answers every line on stdin with the response line; uvicorn with a bare ASGI app answering every
POST with the response), the client writing the request and parsing the answer's JSON. What a transport adds over
in-memory MCP, less its floor, is what the SDK's client and server transports and this server's layers add. Client
CPU per call is measured beside each server's, so a call's time splits into the client's and the server's work.

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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from anyio.streams.buffered import BufferedByteReceiveStream
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from mcp import Client
from serving import (
    QUERY,
    context_switches,
    cpu_seconds,
    http_server,
    http_session,
    listening,
    ms,
    percentile,
    scratch_folder,
    seed,
    settings_for,
    stdio_server_pid,
    stdio_session,
    unused_port,
)

from bigrag_mcp.policy import load_policy
from bigrag_mcp.server import build_server
from bigrag_mcp.services import search
from bigrag_mcp.services.collections import load
from bigrag_mcp.services.embedding import embed_all
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.types import SearchRequest

STDIO_FLOOR = """
import sys
answer = open(sys.argv[1], "rb").read()
for line in sys.stdin.buffer:
    sys.stdout.buffer.write(answer)
    sys.stdout.buffer.flush()
"""

HTTP_FLOOR = """
import sys, uvicorn
answer = open(sys.argv[1], "rb").read()
headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
async def app(scope, receive, send):
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), lifespan="off", log_level="warning")
"""


async def interleaved(
    paths: dict[str, Callable[[], Awaitable[Any]]], n: int, cpu: dict[str, float] | None = None
) -> dict[str, list[float]]:
    """`n` rounds of one call on each path in turn, so every path sees the same machine load; `cpu` (if given) gets
    each path's mean CPU time of this process per call, in ms."""
    samples: dict[str, list[float]] = {name: [] for name in paths}
    used = dict.fromkeys(paths, 0.0)
    for round_ in range(n + 5):
        for name, work in paths.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            await work()
            if round_ >= 5:  # the first rounds warm caches and connections
                samples[name].append(time.perf_counter() - started)
                used[name] += time.process_time() - cpu_started
    if cpu is not None:
        cpu.update({name: ms(total / n) for name, total in used.items()})
    return samples


@asynccontextmanager
async def floors(request: bytes, answer: bytes, key: str) -> AsyncIterator[dict[str, Callable[[], Awaitable[Any]]]]:
    """One call of each transport's floor (see the module docstring): `request` out, `answer` back and parsed."""
    folder = tempfile.TemporaryDirectory(prefix="bigrag-floor-")
    answer_file = Path(folder.name) / "answer"
    answer_file.write_bytes(answer + b"\n")
    port = unused_port()
    async with (
        await anyio.open_process([sys.executable, "-c", STDIO_FLOOR, str(answer_file)]) as echo,
        await anyio.open_process([sys.executable, "-c", HTTP_FLOOR, str(answer_file), str(port)]) as bare,
        httpx2.AsyncClient(timeout=120) as http,
    ):
        assert echo.stdin is not None and echo.stdout is not None
        lines = BufferedByteReceiveStream(echo.stdout)
        # what the SDK's client sends with a call
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json",
                   "accept": "application/json, text/event-stream"}
        await listening(bare, port)

        async def stdio() -> None:
            await echo.stdin.send(request + b"\n")  # type: ignore[union-attr]
            json.loads(await lines.receive_until(b"\n", len(answer) + 1))

        async def streamable_http() -> None:
            answered = await http.post(f"http://127.0.0.1:{port}/mcp", content=request, headers=headers)
            json.loads(answered.content)

        try:
            yield {"stdio_floor": stdio, "streamable_http_floor": streamable_http}
        finally:
            echo.terminate()
            bare.terminate()
            folder.cleanup()


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
    folder = scratch_folder()
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
        answered = await in_memory.call_tool("query", QUERY)
        # what the SDK client does with every result: validate it against the tool's published output schema
        schema = next(t.output_schema for t in (await in_memory.list_tools()).tools if t.name == "query")
        validator = Draft202012Validator(schema)

        async def validate() -> None:
            assert best_match(validator.iter_errors(answered.structured_content)) is None

        call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "query", "arguments": QUERY}}
        answer = {"jsonrpc": "2.0", "id": 1, "result": answered.model_dump(by_alias=True, mode="json", exclude_none=True)}
        async with floors(json.dumps(call).encode(), json.dumps(answer).encode(), key) as floor:
            cpu_before = {name: cpu_seconds(pid) for name, pid in servers.items()}
            waits_before = {name: context_switches(pid) for name, pid in servers.items()}
            client_cpu: dict[str, float] = {}
            queries = await interleaved({
                "backend": lambda: rt.backend.search(where, request),
                "embed_and_backend": embed_and_search,
                "service": lambda: search.search(rt, QUERY["collection"], QUERY["query"], top_k=10),
                "mcp_in_memory": lambda: mcp_query(in_memory),
                "stdio": lambda: mcp_query(stdio),
                "streamable_http": lambda: mcp_query(http),
                "client_output_validation": validate,
                **floor,
            }, n, client_cpu)
            # each server process answered only its own transport's queries (n, plus the 5 warm-up rounds)
            out["server_cpu_ms_per_query"] = {
                name: ms((cpu_seconds(pid) - cpu_before[name]) / (n + 5)) for name, pid in servers.items()
            }
            out["server_context_switches_per_query"] = {
                name: round((context_switches(pid) - waits_before[name]) / (n + 5), 1) for name, pid in servers.items()
            }
        out["client_cpu_ms_per_query"] = {
            name: client_cpu[name] for name in ("service", "mcp_in_memory", "stdio", "streamable_http", *floor)
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
        out[f"{transport}_floor_ms"] = ms(p50[f"{transport}_floor"])
        out[f"{transport}_over_in_memory_mcp_less_floor_ms"] = ms(p50[transport] - p50["mcp_in_memory"] - p50[f"{transport}_floor"])
    out["tools_list"] = {name: summary(samples) for name, samples in listings.items()}
    sdk = wall("import mcp.server.mcpserver")
    serve = wall("from bigrag_mcp.cli import build_parser; build_parser(['serve']).parse_args(['serve'])")
    # and the installed plugins' entry points, which every process loads as it starts
    plugins = wall(
        "from bigrag_mcp.cli import build_parser; build_parser(['serve']).parse_args(['serve']); "
        "from bigrag_mcp.plugins import plugin_manager; plugin_manager()"
    )
    out["cold_start"] = {
        "bare_sdk_import_s": round(sdk, 3),
        "serve_imports_s": round(serve, 3),
        "ratio": round(serve / sdk, 2),
        "with_installed_plugins_s": round(plugins, 3),
        "with_installed_plugins_ratio": round(plugins / sdk, 2),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
