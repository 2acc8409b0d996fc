"""Index sync of the memory backend on a 100k-chunk partition, each figure beside its floor from the same run.

- restart: the first query of a fresh process vs reading the same vectors from SQLite into one numpy matrix
  (the floor), and that process's resident memory growth vs the float32 matrix plus the ids;
- cross-process: a server's next query after another process uploads one document vs a steady query.

Run by hand: `python benchmarks/index_sync.py [--chunks N] [--texts] [--ann-min-rows N]`; prints one JSON object.
The restart is also measured with `BIGRAG_INDEX_SNAPSHOTS` on: once writing the snapshot, once loading from it.
`--texts` stores a short text per chunk, so the restart also builds the keyword index (the default stores vectors
only). `--ann-min-rows` is `BIGRAG_ANN_MIN_ROWS` for the measured processes (default: the setting's default; with
faiss installed a partition that big builds its HNSW graph in the background meanwhile, 0 keeps them exact).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bigrag_mcp.services import collections, documents, search
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings

DIM = 384
NAME = "bench"
QUERIES = 30
ROUNDS = 5  # another process writes, then the server queries: the median of these


ANN_MIN_ROWS = Settings.model_fields["ann_min_rows"].default


def settings(data: Path, snapshots: bool = False, ann_min_rows: int = ANN_MIN_ROWS) -> Settings:
    return Settings(  # type: ignore[call-arg]
        data_dir=data, embedding_provider="hash", vector_backend="memory", load_plugins="", index_snapshots=snapshots,
        ann_min_rows=ann_min_rows, _env_file=None,
    )


def rss_mb() -> float:
    """This process's resident set now, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def fill(data: Path, chunks: int, texts: bool) -> None:
    """A collection with `chunks` random vectors in one partition, written straight into the store."""
    rt = await Runtime.open(settings(data))
    await collections.create(rt, name=NAME, dimension=DIM)
    await rt.close()
    rng = np.random.default_rng(7)
    con = sqlite3.connect(data / "bigrag.db")
    (collection_id,) = con.execute("SELECT id FROM collections WHERE name = ?", (NAME,)).fetchone()
    for start in range(0, chunks, 10_000):
        block = rng.standard_normal((min(10_000, chunks - start), DIM), dtype=np.float32)
        con.executemany(
            "INSERT INTO chunks (collection_id, tenant, record_id, text, metadata, vector, created_at) "
            "VALUES (?, '', ?, ?, ?, ?, '2026-01-01')",
            (
                (collection_id, f"r{start + i}", f"chunk {start + i} words here" if texts else None,
                 json.dumps({"kind": f"k{(start + i) % 10}"}), row.astype("<f4").tobytes())
                for i, row in enumerate(block)
            ),
        )
    con.commit()
    con.close()


def floor(data: Path) -> float:
    """Seconds to read the partition's vectors from SQLite into one float32 matrix."""
    started = time.perf_counter()
    con = sqlite3.connect(data / "bigrag.db")
    blobs = [v for (v,) in con.execute("SELECT vector FROM chunks ORDER BY id")]
    ids = [i for (i,) in con.execute("SELECT record_id FROM chunks ORDER BY id")]
    matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), DIM)
    con.close()
    assert matrix.shape[0] == len(ids)
    return time.perf_counter() - started


async def restart(data: Path, snapshots: bool, ann_min_rows: int) -> dict[str, Any]:
    """The first query of a fresh runtime, and the memory it grew by (run in its own process)."""
    before = rss_mb()
    rt = await Runtime.open(settings(data, snapshots, ann_min_rows))
    started = time.perf_counter()
    await search.search(rt, NAME, "first query", top_k=10)
    first = time.perf_counter() - started
    grown = rss_mb() - before
    stats = rt.index.stats
    await rt.close()
    return {"first_query_s": first, "rss_growth_mb": grown, "from_snapshot": bool(stats.snapshot_loads)}


async def cross_process(data: Path, ann_min_rows: int) -> dict[str, Any]:
    """A loaded server's steady query p50, then its next query after another process uploads one document."""
    rt = await Runtime.open(settings(data, ann_min_rows=ann_min_rows))
    await search.search(rt, NAME, "warm up", top_k=10)
    steady = []
    for i in range(QUERIES):
        started = time.perf_counter()
        await search.search(rt, NAME, f"steady {i}", top_k=10)
        steady.append(time.perf_counter() - started)
    after, rows_read = [], []
    for i in range(ROUNDS):
        other = await asyncio.create_subprocess_exec(sys.executable, __file__, "--phase", "upload", "--data", str(data), str(i))
        assert await other.wait() == 0
        read = rt.index.stats.rows_read
        started = time.perf_counter()
        result = await search.search(rt, NAME, f"the uploaded document {i}", top_k=10)
        after.append(time.perf_counter() - started)
        rows_read.append(rt.index.stats.rows_read - read)
        assert result.results, "the query found nothing"
    await rt.close()
    p50 = statistics.median(steady)
    next_p50 = statistics.median(after)
    return {
        "steady_query_p50_s": p50,
        "next_query_after_other_write_p50_s": next_p50,
        "rounds": ROUNDS,
        "ratio": next_p50 / p50,
        "rows_read_per_round": rows_read,
    }


async def upload_one(data: str, label: str) -> None:
    """The other process: upload one small document."""
    rt = await Runtime.open(settings(Path(data)))
    await documents.upload(rt, NAME, text=f"the uploaded document {label}, written by another process")
    await rt.close()


def restart_child(data: Path, snapshots: bool, ann_min_rows: int) -> dict[str, Any]:
    """`restart` in a fresh process, so its memory growth is its own."""
    command = [sys.executable, __file__, "--phase", "restart", "--data", str(data)] + (["--snapshots"] if snapshots else [])
    command += ["--ann-min-rows", str(ann_min_rows)]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--texts", action="store_true")
    parser.add_argument("--ann-min-rows", type=int, default=ANN_MIN_ROWS)
    parser.add_argument("--phase", choices=["restart", "upload"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--snapshots", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("label", nargs="?", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase == "restart":
        print(json.dumps(asyncio.run(restart(Path(args.data), args.snapshots, args.ann_min_rows))))
        return
    if args.phase == "upload":
        asyncio.run(upload_one(args.data, args.label))
        return
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        asyncio.run(fill(data, args.chunks, args.texts))
        floor_s = min(floor(data) for _ in range(3))
        first, writing, mapped = (restart_child(data, snapshots, args.ann_min_rows) for snapshots in (False, True, True))
        assert mapped["from_snapshot"] and not writing["from_snapshot"]
        matrix_mb = args.chunks * DIM * 4 / 2**20
        ids_mb = args.chunks * (49 + 8 + 8) / 2**20  # a short str object and its list and dict slots
        report = {
            "chunks": args.chunks,
            "dimension": DIM,
            "texts": args.texts,
            "ann_min_rows": args.ann_min_rows,  # a graph is built in the background, after the first load
            "faiss_installed": importlib.util.find_spec("faiss") is not None,
            "restart": {
                "sqlite_to_numpy_floor_s": floor_s,
                "first_query_s": first["first_query_s"],
                "ratio": first["first_query_s"] / floor_s,
                "rss_growth_mb": first["rss_growth_mb"],
                "matrix_plus_ids_mb": matrix_mb + ids_mb,
                "rss_ratio": first["rss_growth_mb"] / (matrix_mb + ids_mb),
                "with_snapshots": {
                    "first_query_writing_the_snapshot_s": writing["first_query_s"],
                    "first_query_from_the_snapshot_s": mapped["first_query_s"],
                    "ratio_to_floor": mapped["first_query_s"] / floor_s,
                    "rss_growth_mb": mapped["rss_growth_mb"],
                },
            },
            "cross_process": asyncio.run(cross_process(data, args.ann_min_rows)),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
