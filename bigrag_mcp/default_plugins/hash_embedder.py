"""The offline "hash" embedding provider: signed feature hashing of word unigrams and bigrams.

Text is NFKC-normalised and case-folded, then split into words (runs of letters and digits), single
CJK ideographs/kana/hangul, and single symbols such as emoji; punctuation is dropped. Each unigram and
each adjacent pair is hashed with blake2b to a bucket and a sign, weighted by 1 + ln(count), and the
vector is L2-normalised. Text with no such token at all (empty, whitespace or punctuation only) embeds
to the zero vector, which scores 0 against everything instead of producing NaN.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache

import anyio.to_thread
import numpy as np

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.types import EmbeddingProviderFactory, Embeddings, Purpose

MODEL = "hash-v1"
DEFAULT_DIMENSION = 384
MAX_DIMENSION = 65_536
_INLINE_LIMIT = 64  # batches up to this many texts are hashed on the event loop; larger ones in a worker thread

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"


def _combining_marks() -> str:
    """A regex class body of the combining marks (categories M*) in the Basic Multilingual Plane."""
    marks = [chr(c) for c in range(0x300, 0x10000) if unicodedata.category(chr(c)).startswith("M")]
    return "".join(re.escape(m) for m in marks)


# A word is a run of word characters that may carry combining marks (Devanagari vowel signs, Arabic harakat);
# CJK characters are one token each; any other non-space character is a one-character candidate token.
_TOKEN = re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])\w)(?:(?![{_CJK}])[\w{_combining_marks()}])*|[^\w\s]")


def words(text: str) -> list[str]:
    """The case-folded word, CJK-character and symbol tokens of `text`, in order; punctuation is dropped."""
    tokens = _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())
    return [t for t in tokens if len(t) > 1 or t.isalnum() or unicodedata.category(t).startswith("S")]


@lru_cache(maxsize=1 << 16)
def _bucket(feature: str, dimension: int) -> tuple[int, float]:
    digest = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
    return digest % dimension, (1.0 if digest >> 63 else -1.0)


def _features(text: str) -> Counter[str]:
    tokens = words(text)
    return Counter(tokens + [f"{a} {b}" for a, b in itertools.pairwise(tokens)])


class HashEmbedder:
    """Deterministic, dependency-free embeddings for offline use and tests; not a metered model (tokens=None)."""

    name = "hash"
    model = MODEL
    max_batch = 1024

    def __init__(self, dimension: int = DEFAULT_DIMENSION) -> None:
        if not 1 <= dimension <= MAX_DIMENSION:
            raise InvalidArgument(f"hash embedder dimension must be between 1 and {MAX_DIMENSION}, got {dimension}.")
        self.dimension = dimension

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        """The vectors of `texts`, in order, computed on the calling thread."""
        matrix = np.zeros((len(texts), self.dimension), dtype=np.float64)
        for row, text in enumerate(texts):
            for feature, count in _features(text).items():
                bucket, sign = _bucket(feature, self.dimension)
                matrix[row, bucket] += sign * (1.0 + math.log(count))
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix /= np.where(norms > 0.0, norms, 1.0)
        vectors: list[list[float]] = matrix.tolist()
        return vectors

    async def embed(self, texts: Sequence[str], *, purpose: Purpose) -> Embeddings:
        """Queries and documents embed alike; large batches run in a worker thread."""
        if len(texts) <= _INLINE_LIMIT:
            return Embeddings(vectors=self.embed_sync(texts))
        return Embeddings(vectors=await anyio.to_thread.run_sync(self.embed_sync, list(texts)))


def create_hash_embedder(*, model: str | None = None, dimension: int | None = None) -> HashEmbedder:
    """The factory registered as "hash"."""
    if model not in (None, MODEL):
        raise InvalidArgument(f'hash embedder has one model, "{MODEL}"; got "{model}".')
    return HashEmbedder(DEFAULT_DIMENSION if dimension is None else dimension)


@hookimpl
def register_embedding_providers(register: Callable[[str, EmbeddingProviderFactory], None]) -> None:
    register("hash", create_hash_embedder)
