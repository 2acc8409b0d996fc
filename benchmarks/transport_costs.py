"""What a hand-off between threads and uvicorn's HTTP parser cost on this machine, each against its floor in one run.

- Thread hand-offs: `await anyio.to_thread.run_sync(<no-op>)` against `await anyio.lowlevel.checkpoint()` (wall and
  CPU per call); a queue round trip between two threads free to run on every core against the same pinned to one core
  (what is left is the wake-up of the other core). This is why the stdio transport and small searches avoid them.
- HTTP parser: two `serve --transport streamable-http` processes on one store, uvicorn on its C parser (httptools, a
  dependency) against uvicorn on the pure-Python h11 (what it uses without httptools), `query` calls
  alternating between them.

Run by hand: `python benchmarks/transport_costs.py [--rounds 2000] [--queries 300]`; prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.lowlevel
import anyio.to_thread
from serving import QUERY, http_server, http_session, ms, scratch_folder, seed, settings_for

from bigrag_mcp.services.runtime import Runtime

QUEUE_ROUND_TRIPS = """
import queue, statistics, sys, threading, time
there, back = queue.SimpleQueue(), queue.SimpleQueue()
def echo():
    while (item := there.get()) is not None:
        back.put(item)
worker = threading.Thread(target=echo)
worker.start()
samples, cpu = [], time.process_time()
for _ in range(int(sys.argv[1])):
    started = time.perf_counter()
    there.put(1)
    back.get()
    samples.append(time.perf_counter() - started)
print(statistics.median(samples), (time.process_time() - cpu) / len(samples))
there.put(None)
"""

PARSERS = ("httptools", "h11")


def serve_with(parser: str) -> tuple[str, str]:
    """`python -c` arguments running `bigrag-mcp` with uvicorn's automatic choice of HTTP parser set to `parser`."""
    return "-c", (
        f"import sys, uvicorn.config as c; c.HTTP_PROTOCOLS['auto'] = c.HTTP_PROTOCOLS[{parser!r}]; "
        "from bigrag_mcp.cli import run; sys.argv[0] = 'bigrag-mcp'; run()"
    )


async def per_call(work: Callable[[], Awaitable[Any]], rounds: int) -> dict[str, float]:
    """Median wall time and mean CPU time of one `work()`, in microseconds."""
    samples, cpu = [], time.process_time()
    for _ in range(rounds):
        started = time.perf_counter()
        await work()
        samples.append(time.perf_counter() - started)
    return {"wall_us": round(statistics.median(samples) * 1e6, 1), "cpu_us": round((time.process_time() - cpu) / rounds * 1e6, 1)}


def queue_round_trip(rounds: int, pinned: bool) -> dict[str, float]:
    """Median wall and mean CPU of a round trip between two threads of a fresh interpreter, in microseconds."""
    done = subprocess.run(
        [sys.executable, "-c", QUEUE_ROUND_TRIPS, str(rounds)], capture_output=True, text=True, check=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})) if pinned else None,
    )
    wall, cpu = map(float, done.stdout.split())
    return {"wall_us": round(wall * 1e6, 1), "cpu_us": round(cpu * 1e6, 1)}


async def http_parsers(queries: int) -> dict[str, Any]:
    """p50 of a streamable-HTTP `query` with each parser, calls alternating between two servers on one store."""
    folder = scratch_folder()
    rt = await Runtime.open(settings_for(folder))
    key = await seed(rt, 10_000)
    await rt.close()
    async with (
        http_server(folder, program=serve_with(PARSERS[0])) as with_httptools, http_server(folder, program=serve_with(PARSERS[1])) as with_h11,
        http_session(with_httptools.url, key) as on_httptools, http_session(with_h11.url, key) as on_h11,
    ):
        samples: dict[str, list[float]] = {parser: [] for parser in PARSERS}
        for round_ in range(queries + 10):
            for parser, client in zip(PARSERS, (on_httptools, on_h11)):
                started = time.perf_counter()
                result = await client.call_tool("query", QUERY)
                assert not result.is_error, result
                if round_ >= 10:  # the first rounds warm caches and connections
                    samples[parser].append(time.perf_counter() - started)
    p50 = {parser: statistics.median(values) for parser, values in samples.items()}
    return {"query_p50_ms": {parser: ms(value) for parser, value in p50.items()}, "httptools_minus_h11_ms": ms(p50["httptools"] - p50["h11"])}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=300)
    a = parser.parse_args()
    logging.disable(logging.INFO)
    out: dict[str, Any] = {"load_average": os.getloadavg()[0]}
    to_thread = await per_call(lambda: anyio.to_thread.run_sync(lambda: None), a.rounds)
    floor = await per_call(anyio.lowlevel.checkpoint, a.rounds)
    out["to_thread_no_op"] = {**to_thread, "floor_checkpoint": floor, "wall_over_floor": round(to_thread["wall_us"] / floor["wall_us"], 1)}
    free, pinned = queue_round_trip(a.rounds, pinned=False), queue_round_trip(a.rounds, pinned=True)
    out["thread_queue_round_trip"] = {"any_core": free, "one_core": pinned, "ratio": round(free["wall_us"] / pinned["wall_us"], 1)}

    if importlib.util.find_spec("httptools") is None:
        out["http_parser"] = {"skipped": "httptools is not installed"}
    else:
        out["http_parser"] = await http_parsers(a.queries)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
