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

import functools
import hashlib
import itertools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence

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


@functools.cache
def _token() -> re.Pattern[str]:
    """The token pattern of non-ASCII text, built on first use (listing the marks takes tens of ms: not at start-up).

    A word is a run of word characters that may carry combining marks (Devanagari vowel signs, Arabic harakat); CJK
    characters are one token each; any other non-space character is a one-character candidate token."""
    return re.compile(rf"[{_CJK}]|(?:(?![{_CJK}])\w)(?:(?![{_CJK}])[\w{_combining_marks()}])*|[^\w\s]")


# On ASCII text `words` reduces to one pattern (no CJK, no combining marks; NFKC and casefold are lower()): a run of
# two or more word characters, a single letter or digit (a lone "_" is dropped), or one of ASCII's symbols (category S).
# The text is lowered first, so the word characters are [a-z0-9_]: spelled out, the pattern matches a quarter faster.
_ASCII_WORDS = re.compile(r"[a-z0-9_]{2,}|[a-z0-9]|[$+<=>^`|~]")


def words(text: str) -> list[str]:
    """The case-folded word, CJK-character and symbol tokens of `text`, in order; punctuation is dropped."""
    return _ASCII_WORDS.findall(text.lower()) if text.isascii() else _unicode_words(text)


def _unicode_words(text: str) -> list[str]:
    """`words` of any text (the definition the ASCII pattern shortens)."""
    tokens = _token().findall(unicodedata.normalize("NFKC", text).casefold())
    return [t for t in tokens if len(t) > 1 or t.isalnum() or unicodedata.category(t).startswith("S")]


_STOPWORD_LIST = """\
a about above after again all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here
hers him his how i if in into is it its itself just me more most my no nor not now of off on once only or
other our out over own same she should so some such than that the their them then there these they this
those through to too under until up very was we were what when where which while who whom why will with
would you your"""
_STOPWORDS = frozenset(_STOPWORD_LIST.split())


_CACHE_LIMIT = 1 << 16  # tokens, and features per dimension, whose term or bucket is remembered


def _fold(token: str) -> str:
    return token[:-1] if token[-1] == "s" and len(token) > 3 and token[-2] != "s" else token


class _Terms(dict[str, str | None]):
    """Token -> its term (plural "s" dropped), or None for a stopword; memoised."""

    def __missing__(self, token: str) -> str | None:
        term = None if token in _STOPWORDS else _fold(token)
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        self[token] = term
        return term


_terms = _Terms()


def terms(text: str) -> list[str]:
    """The content words of `text`: `words` without English stopwords (unless that leaves none), plural "s" dropped."""
    tokens = words(text)
    content = [t for t in map(_terms.__getitem__, tokens) if t is not None]
    return content if content or not tokens else [_fold(t) for t in tokens]


class _Buckets(dict[str, int]):
    """Feature -> its signed bucket code for one dimension (the bucket, or ~bucket for a negative sign), memoised."""

    def __init__(self, dimension: int) -> None:
        super().__init__()
        self.dimension = dimension

    def __missing__(self, feature: str) -> int:
        digest = int.from_bytes(hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest(), "little")
        bucket = digest % self.dimension
        code = bucket if digest >> 63 else ~bucket
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        self[feature] = code
        return code


_buckets: dict[int, _Buckets] = {}


def _weight(count: int) -> float:
    return 1.0 + math.log(count)


_WEIGHTS = [0.0, *(_weight(c) for c in range(1, 256))]  # unigram weight by count, looked up rather than computed
_BIGRAM_WEIGHTS = [BIGRAM_WEIGHT * w for w in _WEIGHTS]


def _weights(counts: Counter[str], table: list[float], scale: float) -> list[float]:
    try:
        return list(map(table.__getitem__, counts.values()))
    except IndexError:  # a count beyond the table
        return [scale * _weight(c) for c in counts.values()]


def _features(text: str) -> tuple[list[str], list[float]]:
    """Each unigram and bigram of the text's terms, and its weight: (1 + ln count), halved for bigrams."""
    tokens = terms(text)
    unigrams, bigrams = Counter(tokens), Counter(map(" ".join, itertools.pairwise(tokens)))
    return [*unigrams, *bigrams], _weights(unigrams, _WEIGHTS, 1.0) + _weights(bigrams, _BIGRAM_WEIGHTS, BIGRAM_WEIGHT)


class HashEmbedder:
    """Deterministic, dependency-free embeddings for offline use and tests; not a metered model (tokens=None)."""

    name = "hash"
    model = MODEL
    max_batch = 1024
    process_safe = True  # pure CPU work on its own state: a batch may run `matrix` in a worker process

    def __init__(self, dimension: int = DEFAULT_DIMENSION) -> None:
        if not 1 <= dimension <= MAX_DIMENSION:
            raise InvalidArgument(f"hash embedder dimension must be between 1 and {MAX_DIMENSION}, got {dimension}.")
        self.dimension = dimension

    def embed_sync(self, texts: Sequence[str]) -> list[list[float]]:
        """The vectors of `texts`, in order, computed on the calling thread."""
        vectors: list[list[float]] = self.matrix(texts).tolist()
        return vectors

    def matrix(self, texts: Sequence[str]) -> np.ndarray[tuple[int, int], np.dtype[np.float64]]:
        """The vectors of `texts` as rows of one float64 matrix: every feature's signed weight summed into its bucket
        in feature order (one bincount, the same sums as adding them one at a time), then L2-normalised."""
        buckets = _buckets.get(self.dimension)
        if buckets is None:
            buckets = _buckets.setdefault(self.dimension, _Buckets(self.dimension))
        codes: list[int] = []
        weights: list[float] = []
        sizes: list[int] = []
        for text in texts:
            features, weighed = _features(text)
            codes.extend(map(buckets.__getitem__, features))
            weights.extend(weighed)
            sizes.append(len(features))
        code = np.asarray(codes, dtype=np.int64)
        negative = code < 0
        flat = np.repeat(np.arange(len(texts), dtype=np.int64) * self.dimension, sizes) + np.where(negative, ~code, code)
        values = np.where(negative, -1.0, 1.0) * np.asarray(weights, dtype=np.float64)
        summed = np.bincount(flat, weights=values, minlength=len(texts) * self.dimension)
        matrix = summed.astype(np.float64, copy=False).reshape(len(texts), self.dimension)  # no features: int zeros
        norms = np.linalg.norm(matrix, axis=1)
        matrix[norms == 0.0] = 1.0
        matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
        return matrix

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
