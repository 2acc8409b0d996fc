"""Many streamable-HTTP sessions querying one partition while one more session uploads documents.

Measures, in one run against one `bigrag-mcp serve` process: one session alone (idle p50, QPS), then `--sessions`
sessions querying for `--seconds` while an extra session uploads: errors, p50/p99 and total QPS, as ratios to the
single session's; and the CPU each query costs the server process(es) and this client process, which bounds what
more sessions can gain on this machine's cores (`ceiling_qps_over_one_session`). Every session makes one call before
the window opens (the SDK lists the tools and compiles the result's schema on a session's first call), so the window
measures steady queries, not 33 warm-ups at once; then this client freezes its objects for the garbage collector
(`gc.freeze`, as `bigrag-mcp` does at start), else one full collection over 33 sessions stalls every query in flight.

Where the time goes: the server runs under `server_timings.py` (the same server, with each request's time inside its
ASGI app written down), and each query is matched to its request, so the JSON splits latency into the server's part
(`server_p50_ms`, `server_p99_ms`: from the app receiving the request to the last of its response written) and the rest (this
client process: the SDK before sending and after the response, and the way in between). `slowest_1pct_ms` averages
that split over the slowest 1 % of queries as the client saw them; `server_p99_over_idle_p50` is the server's p99
under load over the idle p50 the client saw. Run by hand: `python benchmarks/http_sessions.py [--sessions 32]
[--seconds 20] [--size 10000] [--blas-threads 1] [--workers 1]`; prints one JSON object (`--workers N`: `serve
--workers N`).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from server_timings import SESSION_HEADER, describe, read_timings
from serving import QUERY, cpu_seconds, http_server, http_session, ms, percentile, scratch_folder, seed, settings_for

from bigrag_mcp.compute import cores
from bigrag_mcp.services.runtime import Runtime


@dataclass
class Trace:
    """One session's queries as this client saw them: when each `tools/call` request left (with its JSON-RPC id), and
    each query's start and end (`time.monotonic()`, the clock the server's timings use)."""

    name: str
    sent: list[tuple[Any, float]] = field(default_factory=list)
    calls: list[tuple[int, float, float]] = field(default_factory=list)  # (index into `sent`, started, ended)

    async def sending(self, request: httpx2.Request) -> None:
        if request.method == "POST":
            request_id, method = describe(request.content)
            if request_id is not None and method is not None:
                self.sent.append((request_id, time.monotonic()))

    def options(self) -> dict[str, Any]:
        """`http_session` options that name the session to the server and note when its requests leave."""
        return {"headers": {SESSION_HEADER.decode(): self.name}, "event_hooks": {"request": [self.sending]}}


@dataclass
class Window:
    """What the sessions of one window share: opened once all have warmed up, closed at `until`."""

    sessions: int
    warm: anyio.Event = field(default_factory=anyio.Event)
    go: anyio.Event = field(default_factory=anyio.Event)
    until: float = 0.0
    warmed: int = 0

    def one_warm(self) -> None:
        self.warmed += 1
        if self.warmed == self.sessions:
            self.warm.set()


async def query_loop(url: str, key: str, shared: Window, latencies: list[float], errors: list[str], trace: Trace) -> None:
    async with http_session(url, key, **trace.options()) as client:
        await client.call_tool("query", QUERY)  # the session's first call (not measured)
        shared.one_warm()
        await shared.go.wait()
        while time.monotonic() < shared.until:
            started = time.monotonic()
            try:
                result = await client.call_tool("query", QUERY)
                if result.is_error:
                    errors.append(str(result.content[0].text)[:200])  # type: ignore[union-attr]
                    continue
            except Exception as exc:  # noqa: BLE001  (a transport failure counts as an error; the run goes on)
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            ended = time.monotonic()
            latencies.append(ended - started)
            trace.calls.append((len(trace.sent) - 1, started, ended))


async def upload_loop(url: str, key: str, shared: Window, done: list[int], errors: list[str]) -> None:
    async with http_session(url, key) as client:
        await warm(client)
        shared.one_warm()
        await shared.go.wait()
        n = 0
        while time.monotonic() < shared.until:
            n += 1
            text = " ".join(f"upload {n} paragraph {i} with some words to chunk and embed." for i in range(40))
            result = await client.call_tool("documents_upload", {"collection": QUERY["collection"], "text": text})
            if result.is_error:
                errors.append(str(result.content[0].text)[:200])  # type: ignore[union-attr]
            else:
                done.append(n)


async def warm(client: Client) -> None:
    """What a session's first call would do besides the call: list the tools (the SDK then compiles result schemas)."""
    await client.list_tools()


async def window(
    url: str, key: str, sessions: int, seconds: float, latencies: list[float], uploads: list[int] | None, errors: list[str],
    server_pid: int | None = None, traces: list[Trace] | None = None,
) -> dict[str, float]:
    """`sessions` query sessions (and an uploading one, given `uploads`) for `seconds`: queries a second, and the
    server's and this client's CPU milliseconds per query over the window."""
    shared = Window(sessions + (uploads is not None))
    traces = traces if traces is not None else []
    cpu: dict[str, float] = {}
    async with anyio.create_task_group() as tasks:
        for n in range(sessions):
            traces.append(Trace(f"q{len(traces)}-{n}"))
            tasks.start_soon(query_loop, url, key, shared, latencies, errors, traces[-1])
        if uploads is not None:
            tasks.start_soon(upload_loop, url, key, shared, uploads, errors)
        await shared.warm.wait()  # every session open and warm: the window measures queries, not handshakes
        gc.freeze()  # this client's sessions live to the end: its collections need not walk them (a 0.15-0.2 s pause)
        server_cpu = cpu_seconds(server_pid) if server_pid else 0.0
        client_cpu = time.process_time()
        started = time.monotonic()
        shared.until = started + seconds
        shared.go.set()
    elapsed = time.monotonic() - started
    count = max(len(latencies), 1)
    if server_pid:
        cpu["server_cpu_ms_per_query"] = round((cpu_seconds(server_pid) - server_cpu) * 1000 / count, 2)
    cpu["client_cpu_ms_per_query"] = round((time.process_time() - client_cpu) * 1000 / count, 2)
    return {"qps": round(len(latencies) / elapsed, 1), **cpu}


def split(traces: list[Trace], timings: list[dict[str, Any]]) -> dict[str, Any]:
    """Each query's time in this client before its request left, on the way to the server's app, inside the app and
    in this client after the app wrote the response; the server's p50/p99 and the slowest 1 %'s split (milliseconds)."""
    served = {(t["session"], t["id"]): t for t in timings if t["method"] == "query"}
    parts: list[tuple[float, float, float, float, float]] = []
    for trace in traces:
        for index, started, ended in trace.calls:
            request_id, sent = trace.sent[index]
            found = served.get((trace.name, request_id))
            if found is not None:
                arrived, inside = found["start"], found["seconds"]
                parts.append((ended - started, sent - started, arrived - sent, inside, ended - arrived - inside))
    if not parts:
        return {"matched": 0}
    parts.sort()
    inside = [p[3] for p in parts]
    slowest = parts[-max(1, len(parts) // 100):]
    names = ("total", "client_before_send", "to_server_app", "in_server_app", "client_after_response")
    return {
        "matched": len(parts),
        "server_p50_ms": ms(statistics.median(inside)),
        "server_p99_ms": ms(percentile(inside, 99)),
        "slowest_1pct_ms": {name: ms(statistics.mean(p[i] for p in slowest)) for i, name in enumerate(names)},
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--blas-threads", default="1")
    parser.add_argument("--workers", type=int, default=1)
    a = parser.parse_args()
    logging.disable(logging.INFO)
    folder = scratch_folder()
    rt = await Runtime.open(settings_for(folder))
    key = await seed(rt, a.size)
    await rt.close()
    out: dict[str, Any] = {"sessions": a.sessions, "seconds": a.seconds, "partition_size": a.size,
                           "blas_threads": a.blas_threads, "workers": a.workers, "load_average_before": os.getloadavg()[0]}
    timed = folder / "server-timings"
    timed.mkdir()
    program = (str(Path(__file__).with_name("server_timings.py")),)
    async with http_server(folder, "--workers", str(a.workers), program=program, BIGRAG_BLAS_THREADS=a.blas_threads,
                           BENCH_TIMINGS_DIR=str(timed)) as served:
        url = served.url
        alone: list[float] = []
        errors: list[str] = []
        await window(url, key, 1, 2, [], None, errors)  # warm: loads the partition
        alone_traces: list[Trace] = []
        single = await window(url, key, 1, a.seconds / 2, alone, None, errors, served.pid, alone_traces)
        loaded: list[float] = []
        uploads: list[int] = []
        traces: list[Trace] = []
        total = await window(url, key, a.sessions, a.seconds, loaded, uploads, errors, served.pid, traces)
    timings = read_timings(timed)
    # with every core busy, queries a second cannot pass cores / (CPU a query costs, server and client together)
    cpu_per_query = (single.get("server_cpu_ms_per_query", 0.0) + single["client_cpu_ms_per_query"]) / 1000
    ceiling = cores() / cpu_per_query if cpu_per_query else float("inf")
    idle_p50 = statistics.median(alone)
    under_load = split(traces, timings)
    out.update({
        "load_average_after": os.getloadavg()[0],
        "errors": len(errors),
        "error_samples": errors[:3],
        "one_session": {"queries": len(alone), **single, "p50_ms": ms(idle_p50),
                        "server_p50_ms": split(alone_traces, timings).get("server_p50_ms")},
        "loaded": {"queries": len(loaded), **total, "p50_ms": ms(statistics.median(loaded)),
                   "p99_ms": ms(percentile(loaded, 99)), "uploads": len(uploads), **under_load},
        "p99_over_idle_p50": round(percentile(loaded, 99) / idle_p50, 2),
        "server_p99_over_idle_p50": round(under_load["server_p99_ms"] / 1000 / idle_p50, 2) if under_load["matched"] else None,
        "qps_over_one_session": round(total["qps"] / single["qps"], 2),
        "ceiling_qps_over_one_session": round(ceiling / single["qps"], 2),
    })
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
