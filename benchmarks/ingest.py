"""Ingest throughput: `bigrag-mcp ingest` end to end against the embedder alone on the same chunk texts.

Usage: python benchmarks/ingest.py [--docs 2000] [--doc-bytes 2048] [--embedder hash|local] [--single 300] [--repeats 3]
                                  [--against CHECKOUT]
Prints JSON: chunks/s of the embedder alone (the floor, measured right before and right after the ingests and
averaged, so a machine whose load drifts does not favour either side), of `bigrag-mcp ingest` (the batch path, run
`--repeats` times into fresh stores: each run's and the median, measured inside the command and on the wall clock
including process start, with the package's bytecode compiled as an installed package has it), of the
one-document-at-a-time upload path, and their ratios to the floor, all from the same run.
With `--against`, another checkout of the project (e.g. `git worktree add ../base main`) ingests the same folder
right after each of this tree's runs, alternating which goes first, with this interpreter and its packages: each
pair's wall-clock ratio (this tree over the other) and their median, so a change is judged on a noisy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WORDS = ["orchard", "harvest", "ledger", "tariff", "harbour", "keeper", "lantern", "census", "invoice", "tenant", "quarterly", "forecast", "revenue", "refund", "policy", "shipment", "anchor", "plum", "cherry", "budget", "contract", "audit", "latency", "cluster", "replica", "partition", "vector"]


def corpus(count: int, size: int, seed: int = 7) -> list[str]:
    """`count` distinct documents of about `size` characters: paragraphs of random sentences."""
    rnd = random.Random(seed)
    docs = []
    for n in range(count):
        parts: list[str] = [f"Document {n}."]
        while sum(len(p) + 1 for p in parts) < size:
            sentence = " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(6, 14))).capitalize() + "."
            parts.append(sentence + ("\n\n" if rnd.random() < 0.25 else ""))
        docs.append(" ".join(parts))
    return docs


def env(data_dir: Path, embedder: str, tree: Path | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("BIGRAG_")}
    found = {"PYTHONPATH": str(tree)} if tree is not None else {}  # ahead of the installed package
    return base | found | {"BIGRAG_DATA_DIR": str(data_dir), "BIGRAG_EMBEDDING_PROVIDER": embedder, "BIGRAG_LOAD_PLUGINS": ""}


def cli(data_dir: Path, embedder: str, *args: str, tree: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m bigrag_mcp ARGS` run from the store's folder: `-m` puts the working directory first on the module
    path, so a checkout there would shadow the package (and `tree`) being measured."""
    return subprocess.run(
        [sys.executable, "-m", "bigrag_mcp", *args], env=env(data_dir, embedder, tree), capture_output=True, text=True,
        check=True, cwd=data_dir.parent,
    )


def ingest_once(data_dir: Path, embedder: str, folder: Path, tree: Path | None = None) -> tuple[float, float, int]:
    """One `bigrag-mcp ingest` of `folder` into a fresh store: chunks/s inside the command and on the wall clock."""
    cli(data_dir, embedder, "collections", "create", "bench", tree=tree)
    started = time.perf_counter()
    done = cli(data_dir, embedder, "ingest", "bench", str(folder), tree=tree)
    wall = time.perf_counter() - started
    counts = json.loads(done.stdout)["counts"]
    return counts["chunks_per_second"], round(counts["chunks"] / wall, 1), counts["chunks"]


async def measure(texts: list[str], embedder: str, data_dir: Path, single: int) -> dict[str, Any]:
    """The embedder alone on the chunks the collection would make, and (`single` > 0) the per-document upload path."""
    from bigrag_mcp.chunking import chunk_text
    from bigrag_mcp.services import collections, documents
    from bigrag_mcp.services.embedding import embed_all
    from bigrag_mcp.services.runtime import Runtime
    from bigrag_mcp.settings import Settings

    rt = await Runtime.open(Settings(data_dir=data_dir, embedding_provider=embedder, load_plugins="", _env_file=None))  # type: ignore[call-arg]
    try:
        info = await collections.create(rt, name="single")
        pieces = [p.text for t in texts for p in chunk_text(t, size=info.chunk_size, overlap=info.chunk_overlap, strategy="recursive")]
        provider = rt.embedder(info.embedding_provider, info.embedding_model, info.dimension)
        await provider.embed(["warm up"], purpose="document")
        started = time.perf_counter()
        await embed_all(provider, pieces, purpose="document")
        floor = len(pieces) / (time.perf_counter() - started)
        started, chunks = time.perf_counter(), 0
        for text in texts[:single]:
            chunks += (await documents.upload(rt, "single", text=text)).document.chunk_count
        per_document = chunks / (time.perf_counter() - started) if single else None
    finally:
        await rt.close()
    return {"chunks": len(pieces), "floor": floor, "per_document": per_document}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--doc-bytes", type=int, default=2048)
    parser.add_argument("--embedder", default="hash")
    parser.add_argument("--single", type=int, default=300, help="documents for the one-at-a-time path")
    parser.add_argument("--repeats", type=int, default=3, help="ingest runs, each into a fresh store")
    parser.add_argument("--against", type=Path, help="another checkout whose ingest runs alternate with this tree's")
    args = parser.parse_args()
    texts = corpus(args.docs, args.doc_bytes)
    import bigrag_mcp

    # bytecode for the package, as an installed (not editable) package has it: process start then reads .pyc files
    for package in [Path(bigrag_mcp.__file__).parent, *([args.against / "bigrag_mcp"] if args.against else [])]:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        for n, text in enumerate(texts):
            (folder / f"{n:05}.txt").write_text(text, encoding="utf-8")
        before = asyncio.run(measure(texts, args.embedder, Path(tmp) / "before", 0))
        inside, walls, other_inside, other_walls = [], [], [], []
        for n in range(args.repeats):
            trees = [None] if args.against is None else [None, args.against][:: 1 if n % 2 == 0 else -1]
            for tree in trees:
                if tree is None:
                    speed, wall, chunks = ingest_once(Path(tmp) / f"ingest{n}", args.embedder, folder)
                    inside.append(speed)
                    walls.append(wall)
                else:
                    speed, wall, _ = ingest_once(Path(tmp) / f"against{n}", args.embedder, folder, tree)
                    other_inside.append(speed)
                    other_walls.append(wall)
        measured = asyncio.run(measure(texts, args.embedder, Path(tmp) / "after", args.single))
    floor = (before["floor"] + measured["floor"]) / 2
    result = {
        "embedder": args.embedder,
        "documents": args.docs,
        "doc_bytes": args.doc_bytes,
        "chunks": chunks,
        "embedder_alone_chunks_per_s": round(floor, 1),
        "embedder_alone_before_after": [round(before["floor"], 1), round(measured["floor"], 1)],
        "ingest_chunks_per_s": statistics.median(inside),
        "ingest_wall_chunks_per_s": statistics.median(walls),
        "ingest_runs_chunks_per_s": inside,
        "ingest_runs_wall_chunks_per_s": walls,
        "per_document_upload_chunks_per_s": round(measured["per_document"] or 0, 1),
        "ratio_ingest_to_floor": round(statistics.median(inside) / floor, 3),
        "ratio_ingest_wall_to_floor": round(statistics.median(walls) / floor, 3),
        "ratio_per_document_to_floor": round((measured["per_document"] or 0) / floor, 3),
        "load_average": os.getloadavg()[0],
    }
    if args.against is not None:
        ratios = [round(mine / theirs, 3) for mine, theirs in zip(walls, other_walls)]
        result["against"] = {
            "checkout": str(args.against),
            "ingest_runs_chunks_per_s": other_inside,
            "ingest_runs_wall_chunks_per_s": other_walls,
            "ingest_wall_chunks_per_s": statistics.median(other_walls),
            "pair_ratios_wall": ratios,
            "median_pair_ratio_wall": statistics.median(ratios),
        }
    assert chunks == measured["chunks"], "ingest made other chunks than the floor embedded"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
