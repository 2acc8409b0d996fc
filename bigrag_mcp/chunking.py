"""Split text into overlapping chunks that keep their character offsets in the source."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from bigrag_mcp.errors import LimitExceeded

ChunkStrategy = Literal["paragraph", "recursive"]
SEPARATORS = ("\n\n", "\n", ". ", " ")


@dataclass(frozen=True)
class TextChunk:
    text: str
    start: int
    end: int


def _pieces(text: str, start: int, end: int, size: int, seps: tuple[str, ...]) -> list[tuple[int, int]]:
    """Split [start, end) into spans no longer than `size`, cutting at the coarsest separator that works."""
    if end - start <= size:
        return [(start, end)]
    if not seps:
        return [(i, min(i + size, end)) for i in range(start, end, size)]
    sep, rest = seps[0], seps[1:]
    spans: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        cut = text.find(sep, pos, end)
        stop = end if cut < 0 else cut + len(sep)
        spans.extend(_pieces(text, pos, stop, size, rest) if stop - pos > size else [(pos, stop)])
        pos = stop
    return spans


def _paragraph_spans(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\S(?:.*?\S)??(?=\s*\n\s*\n|\s*\Z)", text, re.DOTALL)]


def _merge(text: str, spans: list[tuple[int, int]], size: int, overlap: int, max_chunks: int | None) -> list[TextChunk]:
    """Pack consecutive spans (each at most `size`) into chunks of at most `size` characters.

    A chunk after the first starts at the earliest span boundary within `overlap` characters before the end of the
    previous chunk (if the chunk then still fits), so neighbours share up to `overlap` characters of context.
    Stops with LimitExceeded as soon as the text needs more than `max_chunks` chunks (None: no bound).
    """
    chunks: list[TextChunk] = []
    i = 0
    while i < len(spans):
        start = spans[i][0]
        j = i + 1
        while j < len(spans) and spans[j][1] - start <= size:
            j += 1
        chunk = _strip(text, start, spans[j - 1][1])
        if chunk is not None:
            if len(chunks) == max_chunks:
                raise LimitExceeded(
                    f"the document needs more than {max_chunks} chunks (the per-document bound) at chunk_size {size}; "
                    "split it, or use a collection with a larger chunk_size"
                )
            chunks.append(chunk)
        if j == len(spans):
            break
        prev_end = spans[j - 1][1]
        i = next(
            (k for k in range(i + 1, j) if spans[k][0] >= prev_end - overlap and spans[j][1] - spans[k][0] <= size),
            j,
        )
    return chunks


def _strip(text: str, start: int, end: int) -> TextChunk | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return TextChunk(text[start:end], start, end) if end > start else None


def chunk_text(
    text: str, *, size: int, overlap: int, strategy: ChunkStrategy, max_chunks: int | None = None
) -> list[TextChunk]:
    """Chunks of at most `size` characters; consecutive chunks share up to `overlap` characters; at most `max_chunks`."""
    if not text.strip():
        return []
    if strategy == "paragraph":
        spans = [p for s, e in _paragraph_spans(text) for p in _pieces(text, s, e, size, SEPARATORS[1:])]
    else:
        spans = _pieces(text, 0, len(text), size, SEPARATORS)
    return _merge(text, spans, size, overlap, max_chunks)
