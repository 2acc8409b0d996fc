"""Shared pieces of the serving benchmarks: a seeded store, a server subprocess, MCP sessions, percentiles."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx2
import numpy as np
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from bigrag_mcp.services import collections, vectors
from bigrag_mcp.services.keys import create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings

COLLECTION = "bench"
DIM = 384
QUERY = {"collection": COLLECTION, "query": "alpha beta gamma", "top_k": 10}


def scratch_folder() -> Path:
    """A temporary folder for a benchmark's store, removed when the script exits."""
    folder = Path(tempfile.mkdtemp(prefix="bigrag-bench-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def settings_for(folder: Path) -> Settings:
    return Settings(data_dir=folder, embedding_provider="hash", vector_backend="memory", load_plugins="", _env_file=None)  # type: ignore[call-arg]


async def seed(rt: Runtime, size: int, seed: int = 7) -> str:
    """A collection with `size` raw vectors (with short texts) in one partition; returns an admin key."""
    rng = np.random.default_rng(seed)
    await collections.create(rt, name=COLLECTION, dimension=DIM)
    for start in range(0, size, 1000):
        block = rng.standard_normal((min(1000, size - start), DIM)).astype(np.float32)
        await vectors.upsert(rt, COLLECTION, [
            {"id": f"r{start + i}", "vector": row.tolist(), "text": f"record {start + i}", "metadata": {"n": start + i}}
            for i, row in enumerate(block)
        ])
    _, key = await create_key(rt.db, name="bench", scopes=["*:*"])
    return key


def server_env(folder: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIGRAG_")}
    env.update(BIGRAG_DATA_DIR=str(folder), BIGRAG_EMBEDDING_PROVIDER="hash", BIGRAG_VECTOR_BACKEND="memory",
               BIGRAG_LOAD_PLUGINS="", **extra)
    return env


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and all its live descendants, from /proc (Linux)."""
    total, stack = 0.0, [pid]
    while stack:
        current = stack.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        stack.extend(_children(current))
    return total


def context_switches(pid: int) -> int:
    """Voluntary context switches so far of a process's live threads (each a wait: for input, a lock, another thread)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in status.splitlines() if line.startswith("voluntary_ctxt_switches"))
    return total


def stdio_server_pid() -> int:
    """The `bigrag-mcp serve` (stdio) child of this process."""
    for pid in _children(os.getpid()):
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"serve" in words and b"streamable-http" not in words:
            return pid
    raise RuntimeError("no stdio server child")


@dataclass(frozen=True)
class Served:
    """A running HTTP server: its base URL and process id."""

    url: str
    pid: int


@asynccontextmanager
async def http_server(
    folder: Path, *options: str, program: Sequence[str] = ("-m", "bigrag_mcp"), **extra: str
) -> AsyncIterator[Served]:
    """`bigrag-mcp serve --transport streamable-http [options]` in a subprocess (`python <program> serve ...`);
    yields its URL and pid."""
    port = unused_port()
    proc = await anyio.open_process(
        [sys.executable, *program, "serve", "--transport", "streamable-http", "--port", str(port), *options],
        env=server_env(folder, **extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        await listening(proc, port)
        yield Served(f"http://127.0.0.1:{port}", proc.pid)
    finally:
        proc.terminate()
        await proc.wait()


async def listening(proc: anyio.abc.Process, port: int) -> None:
    """Return once `proc` accepts connections on `port` of the loopback; raise if it exits or 120 s pass first."""
    deadline = time.monotonic() + 120
    while True:
        try:
            await (await anyio.connect_tcp("127.0.0.1", port)).aclose()
            return
        except OSError:
            if proc.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError("the server did not start") from None
            await anyio.sleep(0.05)  # waiting for the port, not timing anything


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def http_session(url: str, key: str, **options: Any) -> AsyncIterator[Client]:
    """An MCP session over streamable HTTP with `key`; `options` go to `httpx2.AsyncClient` (`headers` beside the key's)."""
    headers = {"Authorization": f"Bearer {key}", **options.pop("headers", {})}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120, **options) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
    ):
        yield client


def stdio_session(folder: Path, key: str) -> Client:
    return Client(StdioServerParameters(command=sys.executable, args=["-m", "bigrag_mcp", "serve"],
                                        env=server_env(folder, BIGRAG_API_KEY=key)))


def percentile(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] if len(samples) > 1 else samples[0]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
