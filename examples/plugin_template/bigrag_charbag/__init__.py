"""A minimal embedding-provider plugin for bigrag-mcp: hashed character trigrams, offline and deterministic.

Copy this folder, rename the package, and replace `CharBagEmbedder.embed` with calls to your model or API.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.types import EmbeddingProviderFactory, Embeddings, Purpose

DEFAULT_DIMENSION = 256


class CharBagEmbedder:
    """Counts hashed character trigrams into `dimension` buckets and L2-normalises the counts."""

    name = "charbag"
    max_batch = 256

    def __init__(self, *, model: str | None, dimension: int | None) -> None:
        if model not in (None, "charbag-v1"):
            raise InvalidArgument(f"charbag has one model, 'charbag-v1', not {model!r}")
        if dimension is not None and not 8 <= dimension <= 4096:
            raise InvalidArgument("charbag dimension must be between 8 and 4096")
        self.model = "charbag-v1"
        self.dimension = dimension or DEFAULT_DIMENSION

    def _vector(self, text: str) -> list[float]:
        padded = f"  {text.casefold()}  "
        counts = [0.0] * self.dimension
        for start in range(len(padded) - 2):
            digest = hashlib.blake2b(padded[start : start + 3].encode(), digest_size=4).digest()
            counts[int.from_bytes(digest, "little") % self.dimension] += 1.0
        norm = math.sqrt(sum(c * c for c in counts))
        return [c / norm for c in counts]  # never zero: the padding alone gives trigrams

    async def embed(self, texts: Sequence[str], *, purpose: Purpose) -> Embeddings:
        return Embeddings(vectors=[self._vector(text) for text in texts], tokens=None)


@hookimpl
def register_embedding_providers(register: Callable[[str, EmbeddingProviderFactory], None]) -> None:
    register("charbag", CharBagEmbedder)
