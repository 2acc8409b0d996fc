"""What the limits check adds to a call: a `query` through the MCP client by a key that counts against limits,
against the same query by a key that counts against none, interleaved in one run on one store.

Usage: python benchmarks/limits.py [--calls N]
Prints JSON: median milliseconds per query for both keys, the difference (the target is at most 0.2 ms) and the
ratio, and the median of the admission alone (`admit`: two counters, one statement) against one read transaction
of the store in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from typing import Any

import anyio
from mcp import Client
from sqlalchemy import select

from bigrag_mcp.policy import load_policy
from bigrag_mcp.server import build_server
from bigrag_mcp.services import collections, documents
from bigrag_mcp.services.keys import authenticate, create_key
from bigrag_mcp.services.ledger import Caller
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings

LIMITS = """
[[limits]]
name = "requests per key"
applies_to = { role = "tenant-app", key_id = "*" }
metric = "requests"
max = 100000000
per = "minute"

[[limits]]
name = "queries per tenant"
applies_to = { role = "tenant-app", collection = "*", tenant = "*" }
metric = "queries"
max = 100000000
per = "day"
warn_at = [0.8]
"""
SCOPES = ["query:read", "chat:write", "document:upload"]


async def session(rt: Runtime, key: str) -> Client:
    server = build_server(rt, load_policy(rt.settings.policy_file), session_key=key, principal=await authenticate(rt.db, key))
    return Client(server)


async def timed(client: Client, args: dict[str, Any]) -> float:
    started = time.perf_counter()
    result = await client.call_tool("query", args)
    elapsed = (time.perf_counter() - started) * 1000
    assert not result.is_error, result.content
    return elapsed


async def main(calls: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        policy = Path(folder) / "policy.toml"
        policy.write_text(files("bigrag_mcp.policy").joinpath("default.toml").read_text() + LIMITS, encoding="utf-8")
        settings = Settings(data_dir=Path(folder), policy_file=policy, load_plugins="", _env_file=None)  # type: ignore[call-arg]
        rt = await Runtime.open(settings)
        try:
            await collections.create(rt, name="support", tenant_field="tenant_id", dimension=64)
            for i in range(50):
                await documents.upload(rt, "support", text=f"Document {i} on refunds and shipping, part {i}.", metadata={"tenant_id": "acme"})
            _, limited = await create_key(rt.db, name="limited", scopes=SCOPES, collection="support", tenant="acme", role="tenant-app")
            _, free = await create_key(rt.db, name="free", scopes=SCOPES, collection="support", tenant="acme")
            args = {"collection": "support", "query": "refund shipping", "top_k": 5}
            with_limits: list[float] = []
            without: list[float] = []
            async with await session(rt, limited) as a, await session(rt, free) as b:
                for _ in range(20):  # warm both paths (index load, caches)
                    await timed(a, args)
                    await timed(b, args)
                for i in range(calls):  # interleaved, alternating who goes first, so both see the same noise
                    first, second = (a, b) if i % 2 else (b, a)
                    x, y = await timed(first, args), await timed(second, args)
                    (with_limits if first is a else without).append(x)
                    (without if first is a else with_limits).append(y)
            principal = await authenticate(rt.db, limited)
            caller = Caller(principal, "bench")
            admit: list[float] = []
            floor: list[float] = []
            for _ in range(calls):  # the admission (two counters), and one read transaction of the store as a floor
                started = time.perf_counter()
                hold = await rt.limits.admit(caller, "query", {"query": "x", "search_mode": "keyword"}, "support", "acme")
                admit.append((time.perf_counter() - started) * 1000)
                await rt.limits.release(hold)
                started = time.perf_counter()
                async with rt.db.session() as s:
                    await s.execute(select(1))
                floor.append((time.perf_counter() - started) * 1000)
        finally:
            await rt.close()
    limited_ms, free_ms = statistics.median(with_limits), statistics.median(without)
    return {
        "calls": calls,
        "query_median_ms_with_limits": round(limited_ms, 3),
        "query_median_ms_without_limits": round(free_ms, 3),
        "added_median_ms": round(limited_ms - free_ms, 3),
        "ratio": round(limited_ms / free_ms, 3),
        "admit_statement_median_ms": round(statistics.median(admit), 3),
        "store_read_transaction_median_ms": round(statistics.median(floor), 3),
        "admit_to_read_transaction_ratio": round(statistics.median(admit) / statistics.median(floor), 3),
        "target_added_ms": 0.2,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=400)
    print(json.dumps(anyio.run(main, parser.parse_args().calls), indent=2))
