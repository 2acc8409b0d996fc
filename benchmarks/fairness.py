"""Fairness: another tenant's trivial calls while one tenant uploads a big document, through the real MCP client.

Two in-memory MCP sessions of the SDK share one server runtime (SQLite store, memory backend, `hash` embedder):
tenant A uploads a document of `--mb` MB of text; meanwhile tenant B calls `collections_get` back to back. The
same loop first runs with nobody uploading (the idle floor of the same run). Prints one JSON object.

Run by hand: `.venv/bin/python benchmarks/fairness.py [--mb 4]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

from bigrag_mcp.policy import load_policy
from bigrag_mcp.server import build_server
from bigrag_mcp.services.keys import authenticate, create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "sigma"]


def document(megabytes: float) -> str:
    """Paragraphs of words: `megabytes` MiB of ASCII text."""
    lines, size, i = [], 0, 0
    while size < megabytes * 1024 * 1024:
        line = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(12)) + f" line {i}.\n"
        if i % 8 == 7:
            line += "\n"
        lines.append(line)
        size += len(line)
        i += 1
    return "".join(lines)[: int(megabytes * 1024 * 1024)]


def summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    p99 = statistics.quantiles(ms, n=100, method="inclusive")[98] if len(ms) > 1 else ms[0]
    return {"calls": len(ms), "p50_ms": round(statistics.median(ms), 2), "p99_ms": round(p99, 2), "max_ms": round(ms[-1], 2)}


async def session(rt: Runtime, secret: str) -> Client:
    principal = await authenticate(rt.db, secret)
    return Client(build_server(rt, load_policy(None), session_key=secret, principal=principal))


async def probe(client: Client, until: anyio.Event, samples: list[float], floor_calls: int | None = None) -> None:
    """Call collections_get back to back until `until` is set (or `floor_calls` calls are made)."""
    while not until.is_set() and (floor_calls is None or len(samples) < floor_calls):
        start = time.perf_counter()
        result = await client.call_tool("collections_get", {"collection": "tenant_b"})
        samples.append(time.perf_counter() - start)
        assert not result.is_error, result.content


async def main(megabytes: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), embedding_provider="hash", load_plugins="", _env_file=None)  # type: ignore[call-arg]
        rt = await Runtime.open(settings)
        try:
            _, admin = await create_key(rt.db, name="admin", scopes=["*:*"])
            async with await session(rt, admin) as ops:
                for name in ("tenant_a", "tenant_b"):
                    await ops.call_tool("collections_create", {"collection": name})
            _, a_key = await create_key(rt.db, name="a", scopes=["*:*"], collection="tenant_a")
            _, b_key = await create_key(rt.db, name="b", scopes=["*:*"], collection="tenant_b")
            text = document(megabytes)
            async with await session(rt, a_key) as a, await session(rt, b_key) as b:
                idle: list[float] = []
                await probe(b, anyio.Event(), idle, floor_calls=200)
                busy: list[float] = []
                done = anyio.Event()
                upload: dict[str, Any] = {}

                async def upload_a() -> None:
                    start = time.perf_counter()
                    result = await a.call_tool("documents_upload", {"collection": "tenant_a", "text": text})
                    upload["seconds"] = round(time.perf_counter() - start, 2)
                    upload["error"] = result.content[0].text if result.is_error else None  # type: ignore[union-attr]
                    upload["chunks"] = None if result.is_error else result.structured_content["document"]["chunk_count"]  # type: ignore[index]
                    done.set()

                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(upload_a)
                    tasks.start_soon(probe, b, done, busy)
            during = summary(busy)
            floor = summary(idle)
            return {
                "document_mb": megabytes,
                "upload": upload,
                "collections_get_idle": floor,
                "collections_get_during_upload": during,
                "p99_over_idle_p99": round(during["p99_ms"] / floor["p99_ms"], 1),
                "target_p99_ms": 100,
            }
        finally:
            await rt.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=4.0, help="size of tenant A's document in MB")
    print(json.dumps(anyio.run(main, parser.parse_args().mb), indent=2))
