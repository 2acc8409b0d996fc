"""Embed many texts through a provider in batches of its size, checking what comes back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor

import numpy as np
import numpy.typing as npt

from bigrag_mcp import compute
from bigrag_mcp.errors import Unavailable
from bigrag_mcp.types import EmbeddingProvider, Embeddings, ProcessEmbedder, Purpose

Progress = Callable[[int, int], Awaitable[None]]


def process_embedder(provider: EmbeddingProvider) -> ProcessEmbedder | None:
    """`provider`, if a batch may compute its vectors in a worker process (a `ProcessEmbedder` declaring it safe)."""
    return provider if isinstance(provider, ProcessEmbedder) and provider.process_safe else None


def _float32_matrix(embedder: ProcessEmbedder, texts: list[str]) -> npt.NDArray[np.float32]:
    """`embedder.matrix(texts)` as float32, run in a worker process: half the bytes to send back."""
    return np.asarray(embedder.matrix(texts), dtype=np.float32)


async def embed_matrix(
    provider: EmbeddingProvider,
    texts: Sequence[str],
    *,
    purpose: Purpose,
    progress: Progress | None = None,
    worker: Executor | None = None,
) -> tuple[npt.NDArray[np.float32], int | None]:
    """A float32 matrix of the vectors in input order (one row per text), and the summed token count (None when the
    provider reports none). Each batch is checked and packed as it arrives, so a big upload never holds its vectors
    as Python floats. With a `worker` process, a `ProcessEmbedder` computes its batches there."""
    matrix = np.empty((len(texts), provider.dimension), dtype=np.float32)
    tokens: int | None = None
    step = max(1, provider.max_batch)
    offloaded = process_embedder(provider) if worker is not None else None
    for start in range(0, len(texts), step):
        batch = texts[start : start + step]
        reply: Embeddings | None = None
        if worker is not None and offloaded is not None:
            vectors: Sequence[Sequence[float]] | npt.NDArray[np.floating] = await compute.in_worker(worker, _float32_matrix, offloaded, list(batch))
        else:
            reply = await provider.embed(batch, purpose=purpose)
            vectors = reply.vectors
        if len(vectors) != len(batch):
            raise Unavailable(f"embedding provider {provider.name!r} returned {len(vectors)} vectors for {len(batch)} texts")
        try:
            rows = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            rows = None
        if rows is None or rows.shape != (len(batch), provider.dimension) or not np.isfinite(rows).all():
            raise Unavailable(f"embedding provider {provider.name!r} returned a malformed vector")
        matrix[start : start + len(batch)] = rows
        if reply is not None and reply.tokens is not None:
            tokens = (tokens or 0) + reply.tokens
        if progress is not None:
            await progress(start + len(batch), len(texts))
    return matrix, tokens


async def embed_all(
    provider: EmbeddingProvider, texts: Sequence[str], *, purpose: Purpose, progress: Progress | None = None
) -> tuple[list[list[float]], int | None]:
    """Vectors in input order as lists and the summed token count (None when the provider reports none)."""
    matrix, tokens = await embed_matrix(provider, texts, purpose=purpose, progress=progress)
    return matrix.tolist(), tokens
