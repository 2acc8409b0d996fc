"""Peak memory of a big upload over stdio: `bigrag-mcp serve` as a subprocess, one document of `--mb` MB as base64.

Prints one JSON object: the server's peak RSS (VmHWM) after it started and after the upload, the upload's
time and chunk count, and the peak as a multiple of the document size. Linux only (reads /proc).

Run by hand: `.venv/bin/python benchmarks/upload_memory.py [--mb 20]`.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from fairness import document
from mcp import Client, StdioServerParameters

from bigrag_mcp.services.keys import create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmHWM")


def server_pid() -> int:
    """The one `bigrag_mcp serve` child of this process."""
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    for pid in children:
        if b"bigrag_mcp" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return int(pid)
    raise RuntimeError("server process not found")


async def main(megabytes: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BIGRAG_")}
        env.update(BIGRAG_DATA_DIR=tmp, BIGRAG_EMBEDDING_PROVIDER="hash", BIGRAG_LOAD_PLUGINS="")
        rt = await Runtime.open(Settings(data_dir=Path(tmp), embedding_provider="hash", load_plugins="", _env_file=None))  # type: ignore[call-arg]
        _, key = await create_key(rt.db, name="admin", scopes=["*:*"])
        await rt.close()
        payload = base64.b64encode(document(megabytes).encode()).decode()
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "bigrag_mcp", "serve"], env={**env, "BIGRAG_API_KEY": key}
        )
        async with Client(params) as client:
            await client.call_tool("collections_create", {"collection": "big"})
            pid = server_pid()
            started = peak_rss_mb(pid)
            t0 = time.perf_counter()
            result = await client.call_tool("documents_upload", {"collection": "big", "content_base64": payload, "filename": "big.txt"})
            seconds = time.perf_counter() - t0
            peak = peak_rss_mb(pid)
        if result.is_error:
            raise RuntimeError(result.content[0].text)  # type: ignore[union-attr]
        return {
            "document_mb": megabytes,
            "chunks": result.structured_content["document"]["chunk_count"],  # type: ignore[index]
            "upload_seconds": round(seconds, 1),
            "server_peak_rss_mb_before_upload": started,
            "server_peak_rss_mb": peak,
            "peak_growth_over_document_size": round((peak - started) / megabytes, 1),
        }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=20.0, help="document size in MB")
    print(json.dumps(anyio.run(main, parser.parse_args().mb), indent=2))
