"""Several `bigrag-mcp serve --transport streamable-http` processes on one store, for tests and benchmarks.

`serve_replicas(env, 3)` starts three servers on free loopback ports, waits until each answers `GET /readyz`
with 200 (bounded), yields their base URLs, and stops them afterwards. `fresh_postgres_database(url)` makes an
empty database on a Postgres server (e.g. the `pgserver` wheel's) and drops it afterwards.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import IO

import anyio
import httpx
from anyio.abc import Process
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

READY_POLL_SECONDS = 0.05  # between readiness probes: polling a condition, not timing anything


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def asyncpg_url(url: str, database: str | None = None) -> str:
    """A Postgres URL as SQLAlchemy's asyncpg URL, optionally naming another database on the same server."""
    parsed = make_url(url).set(drivername="postgresql+asyncpg")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@asynccontextmanager
async def fresh_postgres_database(server_url: str) -> AsyncIterator[str]:
    """An empty database on the server at `server_url`; yields its asyncpg URL and drops it afterwards."""
    name = f"bigrag_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(asyncpg_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield asyncpg_url(server_url, name)
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


def _tail(log: IO[bytes], limit: int = 4000) -> str:
    log.seek(0)
    return log.read().decode(errors="replace")[-limit:]


def _open_logs(folder: Path, count: int) -> list[IO[bytes]]:
    return [open(folder / f"replica-{i}.log", "w+b") for i in range(count)]  # the caller closes them


async def _wait_ready(url: str, process: Process, log: IO[bytes], deadline: float) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        while anyio.current_time() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"replica {url} exited with {process.returncode}:\n{_tail(log)}")
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await anyio.sleep(READY_POLL_SECONDS)
    raise RuntimeError(f"replica {url} was not ready in time:\n{_tail(log)}")


async def _stop(process: Process) -> None:
    with suppress(ProcessLookupError):  # it may have exited already
        process.terminate()
    with anyio.move_on_after(15):
        await process.wait()
        return
    with suppress(ProcessLookupError):
        process.kill()
    await process.wait()


@asynccontextmanager
async def serve_replicas(
    env: Mapping[str, str], count: int, *, log_dir: Path | None = None, ready_within: float = 120.0
) -> AsyncIterator[list[str]]:
    """Start `count` streamable-HTTP servers with environment `env`; yield their base URLs once all are ready.

    Each server's stderr goes to `log_dir/replica-N.log` (kept) or to a temporary file; a failure inside the
    block prints their tails."""
    processes: list[Process] = []
    with tempfile.TemporaryDirectory(prefix="bigrag-replicas-") as scratch:
        logs = _open_logs(log_dir or Path(scratch), count)
        try:
            urls = []
            for log in logs:
                port = free_port()
                command = [sys.executable, "-m", "bigrag_mcp", "serve", "--transport", "streamable-http", "--port", str(port)]
                processes.append(await anyio.open_process(command, env=dict(env), stdout=subprocess.DEVNULL, stderr=log))
                urls.append(f"http://127.0.0.1:{port}")
            deadline = anyio.current_time() + ready_within
            async with anyio.create_task_group() as tasks:
                for url, process, log in zip(urls, processes, logs, strict=True):
                    tasks.start_soon(_wait_ready, url, process, log, deadline)
            try:
                yield urls
            except BaseException:
                for url, log in zip(urls, logs, strict=True):  # shown with the failure, e.g. by pytest
                    print(f"--- stderr of replica {url}:\n{_tail(log)}", file=sys.stderr)
                raise
        finally:
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as tasks:
                    for process in processes:
                        tasks.start_soon(_stop, process)
            for log in logs:
                log.close()
