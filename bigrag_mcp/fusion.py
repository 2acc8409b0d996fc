"""Fusing a semantic and a keyword ranking into one hybrid ranking.

`rrf` (reciprocal rank fusion) adds 1 / (RRF_K + rank) per ranking; `weighted` rescales each ranking's scores
to [0, 1] and adds them with weights (semantic `alpha`, keyword 1 - alpha): cosines by the candidates' own
minimum and maximum, BM25 scores by their maximum only (BM25 has a true zero: no query term), so a chunk that
both sides found always gains from its keyword match.
Which one the memory backend uses, and how deep each side is read, were chosen by `benchmarks/retrieval.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from bigrag_mcp.types import Hit

FusionMethod = Literal["rrf", "weighted"]
RRF_K = 60
ALPHA = 0.5


def best(scored: Iterable[tuple[str, float]], depth: int) -> list[Hit]:
    """Hits sorted by score, ties broken by id, at most `depth` long."""
    ordered = sorted(scored, key=lambda pair: (-pair[1], pair[0]))
    return [Hit(record_id, score) for record_id, score in ordered[:depth]]


def rrf(rankings: Sequence[Sequence[Hit]], depth: int, k: int = RRF_K) -> list[Hit]:
    """Reciprocal rank fusion of best-first rankings."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (k + rank)
    return best(scores.items(), depth)


def weighted(semantic: Sequence[Hit], keyword: Sequence[Hit], depth: int, alpha: float = ALPHA) -> list[Hit]:
    """Normalised scores of both rankings (see the module docstring), summed with weights alpha and 1 - alpha."""
    scores: dict[str, float] = {}
    for ranking, weight, floor in ((semantic, alpha, None), (keyword, 1.0 - alpha, 0.0)):
        if not ranking:
            continue
        values = [hit.score for hit in ranking]
        low = min(values) if floor is None else floor
        span = max(values) - low
        for hit in ranking:
            share = (hit.score - low) / span if span > 0 else 1.0
            scores[hit.id] = scores.get(hit.id, 0.0) + weight * share
    return best(scores.items(), depth)


def fuse(method: FusionMethod, semantic: Sequence[Hit], keyword: Sequence[Hit], depth: int) -> list[Hit]:
    """The hybrid ranking of `method`, at most `depth` long."""
    return rrf([semantic, keyword], depth) if method == "rrf" else weighted(semantic, keyword, depth)
