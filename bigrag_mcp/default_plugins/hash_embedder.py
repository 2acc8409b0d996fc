"""The offline "hash" embedding provider: signed feature hashing of word unigrams and bigrams.

Text is NFKC-normalised and case-folded, then split into words (runs of letters and digits), single
CJK ideographs/kana/hangul, and single symbols such as emoji; punctuation is dropped, and so are English
stopwords (unless nothing else is left); a plural "s" is folded. Each unigram and each adjacent pair is
hashed with blake2b to a bucket and a sign, weighted by 1 + ln(count) (bigrams at half weight), and the
vector is L2-normalised. Text whose features cancel out or that has no token at all (empty, whitespace or
punctuation only) embeds to the uniform unit vector: a direction every backend accepts (a zero vector has
none), never NaN.
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
BIGRAM_WEIGHT = 0.5
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


_STOPWORD_LIST = """\
a about above after again all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here
hers him his how i if in into is it its itself just me more most my no nor not now of off on once only or
other our out over own same she should so some such than that the their them then there these they this
those through to too under until up very was we were what when where which while who whom why will with
would you your"""
_STOPWORDS = frozenset(_STOPWORD_LIST.split())


def terms(text: str) -> list[str]:
    """The content words of `text`: `words` without English stopwords (unless that leaves none), plural "s" dropped."""
    tokens = words(text)
    content = [t for t in tokens if t not in _STOPWORDS] or tokens
    return [t[:-1] if len(t) > 3 and t.endswith("s") and not t.endswith("ss") else t for t in content]


@lru_cache(maxsize=1 << 16)
def _bucket(feature: str, dimension: int) -> tuple[int, float]:
    digest = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
    return digest % dimension, (1.0 if digest >> 63 else -1.0)


def _features(text: str) -> dict[str, float]:
    """Each unigram and bigram of the text's terms with its weight: (1 + ln count), halved for bigrams."""
    tokens = terms(text)
    unigrams, bigrams = Counter(tokens), Counter(f"{a} {b}" for a, b in itertools.pairwise(tokens))
    features = {gram: 1.0 + math.log(count) for gram, count in unigrams.items()}
    features.update({gram: BIGRAM_WEIGHT * (1.0 + math.log(count)) for gram, count in bigrams.items()})
    return features


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
            for feature, weight in _features(text).items():
                bucket, sign = _bucket(feature, self.dimension)
                matrix[row, bucket] += sign * weight
        norms = np.linalg.norm(matrix, axis=1)
        matrix[norms == 0.0] = 1.0
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
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
