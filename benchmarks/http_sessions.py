"""Many streamable-HTTP sessions querying one partition while one more session uploads documents.

Measures, in one run against one `bigrag-mcp serve` process: one session alone (idle p50, QPS), then `--sessions`
sessions querying for `--seconds` while an extra session uploads: errors, p50/p99 and total QPS, as ratios to the
single session's; and the CPU each query costs the server process(es) and this client process, which bounds what
more sessions can gain on this machine's cores (`ceiling_qps_over_one_session`). Run by hand: `python benchmarks/http_sessions.py [--sessions 32] [--seconds 20] [--size 10000]
[--blas-threads 1] [--workers 1]`; prints one JSON object (`--workers N`: `serve --workers N`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from serving import QUERY, cpu_seconds, http_server, http_session, ms, percentile, seed, settings_for

from bigrag_mcp.services.runtime import Runtime


async def query_loop(
    url: str, key: str, go: anyio.Event, until: list[float], latencies: list[float], errors: list[str]
) -> None:
    async with http_session(url, key) as client:
        await go.wait()  # sessions open first: the window measures queries, not handshakes
        while time.monotonic() < until[0]:
            started = time.perf_counter()
            try:
                result = await client.call_tool("query", QUERY)
                if result.is_error:
                    errors.append(str(result.content[0].text)[:200])  # type: ignore[union-attr]
                    continue
            except Exception as exc:  # noqa: BLE001  (a transport failure counts as an error; the run goes on)
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            latencies.append(time.perf_counter() - started)


async def upload_loop(url: str, key: str, go: anyio.Event, until: list[float], done: list[int], errors: list[str]) -> None:
    async with http_session(url, key) as client:
        await go.wait()
        n = 0
        while time.monotonic() < until[0]:
            n += 1
            text = " ".join(f"upload {n} paragraph {i} with some words to chunk and embed." for i in range(40))
            result = await client.call_tool("documents_upload", {"collection": QUERY["collection"], "text": text})
            if result.is_error:
                errors.append(str(result.content[0].text)[:200])  # type: ignore[union-attr]
            else:
                done.append(n)


async def window(
    url: str, key: str, sessions: int, seconds: float, latencies: list[float], uploads: list[int] | None, errors: list[str],
    server_pid: int | None = None,
) -> dict[str, float]:
    """`sessions` query sessions (and an uploading one, given `uploads`) for `seconds`: queries a second, and the
    server's and this client's CPU milliseconds per query over the window."""
    go, until = anyio.Event(), [0.0]
    cpu: dict[str, float] = {}
    async with anyio.create_task_group() as tasks:
        for _ in range(sessions):
            tasks.start_soon(query_loop, url, key, go, until, latencies, errors)
        if uploads is not None:
            tasks.start_soon(upload_loop, url, key, go, until, uploads, errors)
        await anyio.sleep(1 + sessions * 0.1)  # let the sessions open (not part of any figure)
        server_cpu = cpu_seconds(server_pid) if server_pid else 0.0
        client_cpu = time.process_time()
        started = time.monotonic()
        until[0] = started + seconds
        go.set()
    elapsed = time.monotonic() - started
    count = max(len(latencies), 1)
    if server_pid:
        cpu["server_cpu_ms_per_query"] = round((cpu_seconds(server_pid) - server_cpu) * 1000 / count, 2)
    cpu["client_cpu_ms_per_query"] = round((time.process_time() - client_cpu) * 1000 / count, 2)
    return {"qps": round(len(latencies) / elapsed, 1), **cpu}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--blas-threads", default="1")
    parser.add_argument("--workers", type=int, default=1)
    a = parser.parse_args()
    logging.disable(logging.INFO)
    folder = Path(tempfile.mkdtemp(prefix="bigrag-bench-"))
    rt = await Runtime.open(settings_for(folder))
    key = await seed(rt, a.size)
    await rt.close()
    out: dict[str, Any] = {"sessions": a.sessions, "seconds": a.seconds, "partition_size": a.size,
                           "blas_threads": a.blas_threads, "workers": a.workers}
    async with http_server(folder, "--workers", str(a.workers), BIGRAG_BLAS_THREADS=a.blas_threads) as served:
        url = served.url
        alone: list[float] = []
        errors: list[str] = []
        await window(url, key, 1, 2, [], None, errors)  # warm: loads the partition
        single = await window(url, key, 1, a.seconds / 2, alone, None, errors, served.pid)
        loaded: list[float] = []
        uploads: list[int] = []
        total = await window(url, key, a.sessions, a.seconds, loaded, uploads, errors, served.pid)
    # with every core busy, queries a second cannot pass cores / (CPU a query costs, server and client together)
    cpu_per_query = (single.get("server_cpu_ms_per_query", 0.0) + single["client_cpu_ms_per_query"]) / 1000
    ceiling = (os.cpu_count() or 1) / cpu_per_query if cpu_per_query else float("inf")
    out.update({
        "errors": len(errors),
        "error_samples": errors[:3],
        "one_session": {"queries": len(alone), **single, "p50_ms": ms(statistics.median(alone))},
        "loaded": {"queries": len(loaded), **total, "p50_ms": ms(statistics.median(loaded)),
                   "p99_ms": ms(percentile(loaded, 99)), "uploads": len(uploads)},
        "p99_over_idle_p50": round(percentile(loaded, 99) / statistics.median(alone), 2),
        "qps_over_one_session": round(total["qps"] / single["qps"], 2),
        "ceiling_qps_over_one_session": round(ceiling / single["qps"], 2),
    })
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
