"""Embed many texts through a provider in batches of its size, checking what comes back."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence

from bigrag_mcp.errors import Unavailable
from bigrag_mcp.types import EmbeddingProvider, Purpose

Progress = Callable[[int, int], Awaitable[None]]


async def embed_all(
    provider: EmbeddingProvider, texts: Sequence[str], *, purpose: Purpose, progress: Progress | None = None
) -> tuple[list[list[float]], int | None]:
    """Vectors in input order and the summed token count (None when the provider reports none)."""
    vectors: list[list[float]] = []
    tokens: int | None = None
    step = max(1, provider.max_batch)
    for start in range(0, len(texts), step):
        batch = texts[start : start + step]
        reply = await provider.embed(batch, purpose=purpose)
        if len(reply.vectors) != len(batch):
            raise Unavailable(
                f"embedding provider {provider.name!r} returned {len(reply.vectors)} vectors for {len(batch)} texts"
            )
        for vector in reply.vectors:
            if len(vector) != provider.dimension or not all(math.isfinite(x) for x in vector):
                raise Unavailable(f"embedding provider {provider.name!r} returned a malformed vector")
        vectors.extend(reply.vectors)
        if reply.tokens is not None:
            tokens = (tokens or 0) + reply.tokens
        if progress is not None:
            await progress(len(vectors), len(texts))
    return vectors, tokens
