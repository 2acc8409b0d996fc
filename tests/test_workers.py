"""`serve --workers N`: several processes answer one port through the SDK's real client and share the store."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from importlib.resources import files
from pathlib import Path

import anyio
import httpx2
import pytest
from conftest import server_env
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from bigrag_mcp.services import collections, documents
from bigrag_mcp.services.keys import create_key, revoke_key
from bigrag_mcp.settings import Settings

pytestmark = pytest.mark.anyio
DEFAULT_POLICY = files("bigrag_mcp.policy").joinpath("default.toml").read_text(encoding="utf-8")
CAP = 6
QUERY = {"collection": "docs", "query": "refund window", "top_k": 3}


async def answered_by(url: str, key: str) -> tuple[int, str]:
    """Over one fresh connection: the worker that holds it, and how a `query` by `key` ends there (`ok` or the code)."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, limits=httpx2.Limits(max_connections=1), timeout=60) as http:
        worker = int((await http.get(f"{url}/healthz")).json()["worker"])
        try:
            async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
                result = await client.call_tool("query", QUERY)
        except (MCPError, BaseExceptionGroup) as exc:  # a refused key fails the SDK client's connect
            if isinstance(exc, BaseExceptionGroup) and exc.split(MCPError)[1] is not None:
                raise
            return worker, "refused"
    if result.is_error:
        return worker, result.content[0].text.split(":", 1)[0]  # type: ignore[union-attr]
    assert result.structured_content["results"][0]["document_filename"] == "refunds.md"  # type: ignore[index]
    return worker, "ok"


async def on_both_workers(url: str, key: str) -> set[str]:
    """Queries by `key` over fresh connections until both workers have answered one; the outcomes seen."""
    seen: dict[int, set[str]] = {}
    for _ in range(200):  # the kernel spreads connections by a hash: both workers come up within a few
        worker, outcome = await answered_by(url, key)
        seen.setdefault(worker, set()).add(outcome)
        if len(seen) == 2:
            return set().union(*seen.values())
    raise AssertionError(f"200 connections all reached worker(s) {sorted(seen)}")


async def test_two_workers_answer_one_port_and_share_keys_limits_and_revocation(rt, tmp_path: Path, http_server) -> None:
    await collections.create(rt, name="docs")
    for name, text in (("refunds.md", "Refunds: the refund window is 30 days."), ("shipping.md", "Shipping takes a week.")):
        await documents.upload(rt, "docs", text=text, filename=name)
    reader_info, reader = await create_key(rt.db, name="reader", scopes=["query:read"])
    capped_info, capped = await create_key(rt.db, name="capped", scopes=["query:read"])
    clients = [(await create_key(rt.db, name=f"client {n}", scopes=["query:read"]))[1] for n in range(6)]
    policy = tmp_path / "policy.toml"
    policy.write_text(
        DEFAULT_POLICY + f'\n[[limits]]\nname = "capped"\napplies_to = {{ key_id = "{capped_info.id}" }}\n'
        f'metric = "queries"\nmax = {CAP}\nper = "total"\n',
        encoding="utf-8",
    )

    # INFO: uvicorn's lines on each worker's start and graceful finish are checked below
    url = http_server("streamable-http", "--workers", "2", BIGRAG_POLICY_FILE=str(policy), BIGRAG_LOG_LEVEL="INFO")
    proc = http_server.procs[-1]
    try:
        assert await on_both_workers(url, reader) == {"ok"}

        async def session(key: str, calls: int) -> None:  # several clients, each its own session and connection
            async with (
                httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http,
                Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
            ):
                for _ in range(calls):
                    result = await client.call_tool("query", QUERY)
                    assert not result.is_error, result

        async with anyio.create_task_group() as tasks:
            for key in clients:
                tasks.start_soon(session, key, 8)

        outcomes: Counter[str] = Counter()

        async def capped_call() -> None:
            outcomes[(await answered_by(url, capped))[1]] += 1

        async with anyio.create_task_group() as tasks:
            for _ in range(2 * CAP):
                tasks.start_soon(capped_call)
        assert outcomes == {"ok": CAP, "limit_exceeded": CAP}  # one counter in the store for every worker

        await revoke_key(rt.db, reader_info.id)  # by another process on the store
        assert await on_both_workers(url, reader) == {"refused"}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stderr.decode()
    pids = [int(p) for p in re.findall(r"Started server process \[(\d+)\]", stderr.decode())]
    assert len(pids) == 2 and len(re.findall(r"Finished server process", stderr.decode())) == 2
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_need_streamable_http(settings: Settings) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bigrag_mcp", "serve", "--transport", "sse", "--workers", "2"],
        env=server_env(settings), capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 2 and "--workers needs --transport streamable-http" in done.stderr
