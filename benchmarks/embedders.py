"""Throughput of the built-in embedders on sentences from the CISI abstracts.

Usage: python benchmarks/embedders.py [--data DIR] [--sentences N] [--embedders hash,local]
Prints JSON: for each embedder the load time (factory + first call) and sentences per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrieval import load_beir

from bigrag_mcp.default_plugins.hash_embedder import create_hash_embedder
from bigrag_mcp.default_plugins.local_embedder import create_local_embedder
from bigrag_mcp.types import EmbeddingProvider

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cisi"
EMBEDDERS: dict[str, Callable[[], EmbeddingProvider]] = {"hash": create_hash_embedder, "local": create_local_embedder}


async def embed_all(provider: EmbeddingProvider, texts: list[str]) -> None:
    """Embed `texts` in batches of the provider's max_batch."""
    for start in range(0, len(texts), provider.max_batch):
        await provider.embed(texts[start : start + provider.max_batch], purpose="document")


def sentences(data: Path, count: int) -> list[str]:
    """The first `count` sentences of 8 to 40 words from the CISI abstracts, in corpus order."""
    corpus, _, _ = load_beir(data)
    found = (s for text in corpus.values() for s in re.split(r"(?<=[.!?])\s+", text) if 8 <= len(s.split()) <= 40)
    return [s for _, s in zip(range(count), found)]


async def measure(name: str, texts: list[str]) -> dict[str, float]:
    started = time.perf_counter()
    provider = EMBEDDERS[name]()
    await provider.embed(["warm up"], purpose="query")
    loaded = time.perf_counter()
    await embed_all(provider, texts)
    elapsed = time.perf_counter() - loaded
    return {"load_seconds": round(loaded - started, 3), "sentences_per_second": round(len(texts) / elapsed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with the CISI files")
    parser.add_argument("--sentences", type=int, default=500)
    parser.add_argument("--embedders", default=",".join(EMBEDDERS), help="comma-separated: hash,local")
    args = parser.parse_args()
    texts = sentences(args.data, args.sentences)
    report: dict[str, Any] = {
        "sentences": len(texts),
        "mean_words": round(sum(len(t.split()) for t in texts) / len(texts), 1),
    }
    for name in args.embedders.split(","):
        report[name] = asyncio.run(measure(name, texts))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
