"""A sparse BM25 index of one partition, updated in place as records come and go.

Each record with text gets a slot. Postings (term, slot, term frequency) live in a few immutable segments, each
sorted by term, so one query term is a contiguous slice of a segment. A write appends one segment; segments of
equal size are merged (a binary counter), so there are O(log n) of them and each posting is re-sorted
O(log n) times. A removal only marks slots dead and corrects document frequencies; merges drop dead postings, and
when dead slots outnumber live ones the index is compacted (slots renumbered, unused terms forgotten).

Scoring is Lucene's BM25: idf = ln(1 + (N - df + 0.5) / (df + 0.5)) and a term adds
idf · tf · (k1 + 1) / (tf + k1 · (1 - b + b · length / average length)) for each time it occurs in the query.
N, df and the average length count the live records of the partition only (each tenant its own statistics).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from bigrag_mcp.lexical.analyzer import DEFAULT_LANGUAGE, analyzer

K1 = 1.2  # term-frequency saturation: Lucene's and Elasticsearch's default
B = 0.75  # length normalisation: 0 ignores chunk length, 1 fully normalises by it
MIN_COMPACT = 1024  # dead slots tolerated before a compaction is considered

Ints = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


class _Segment:
    """Postings sorted by (term, slot): `terms[i]`'s postings are `slots[starts[i]:starts[i + 1]]`."""

    __slots__ = ("slots", "starts", "terms", "tfs")

    def __init__(self, terms: Ints, slots: npt.NDArray[np.int32], tfs: npt.NDArray[np.float32]) -> None:
        self.terms, first = np.unique(terms, return_index=True)
        self.starts = np.append(first, len(terms)).astype(np.int64)
        self.slots = slots
        self.tfs = tfs

    def __len__(self) -> int:
        return len(self.slots)

    def term_column(self) -> Ints:
        """The term of every posting."""
        return np.repeat(self.terms, np.diff(self.starts))

    def postings(self, terms: Ints) -> tuple[Ints, npt.NDArray[np.int64]]:
        """Indices into `slots` of the postings of `terms`, and for each the position in `terms` it belongs to."""
        if not len(self.terms):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.terms, terms), len(self.terms) - 1)
        found = np.flatnonzero(self.terms[pos] == terms)
        starts, ends = self.starts[pos[found]], self.starts[pos[found] + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        offsets = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        return np.arange(total, dtype=np.int64) + offsets, np.repeat(found, lengths)


def _segment(terms: Ints, slots: npt.NDArray[np.int32], tfs: npt.NDArray[np.float32]) -> _Segment:
    """A segment of postings given in any order (slots ascending within a term is kept by a stable sort)."""
    order = np.argsort(terms, kind="stable")
    return _Segment(terms[order], slots[order], tfs[order])


class KeywordIndex:
    """BM25 over the texts of one partition, keyed by record id; see the module docstring."""

    def __init__(self, language: str = DEFAULT_LANGUAGE, *, k1: float = K1, b: float = B) -> None:
        self.analyzer = analyzer(language)
        self.k1, self.b = k1, b
        self.vocabulary: dict[str, int] = {}
        self.df = np.zeros(0, dtype=np.int64)
        self.ids: list[str | None] = []  # slot -> record id, None once removed
        self.slot_of: dict[str, int] = {}
        self.lengths = np.zeros(0, dtype=np.float32)
        self.alive = np.zeros(0, dtype=bool)
        self.total_length = 0
        self.segments: list[_Segment] = []

    def __len__(self) -> int:
        return len(self.slot_of)

    @property
    def language(self) -> str:
        return self.analyzer.language

    # --- writes --------------------------------------------------------------------------------------------

    def add(self, ids: Sequence[str], texts: Sequence[str | None]) -> None:
        """Index `texts` under `ids`, replacing what those ids held; a None text only removes the id."""
        latest = dict(zip(ids, texts))
        self.remove(latest)
        fresh = [(i, t) for i, t in latest.items() if t is not None]
        if not fresh:
            return
        first = len(self.ids)
        vocabulary = self.vocabulary
        flat: list[int] = []
        counts: list[int] = []
        for record_id, text in fresh:
            words = self.analyzer.terms(text)
            flat.extend([vocabulary.setdefault(w, len(vocabulary)) for w in words])
            counts.append(len(words))
            self.slot_of[record_id] = len(self.ids)
            self.ids.append(record_id)
        size = len(self.ids)
        self._grow(size)
        lengths = np.asarray(counts, dtype=np.int64)
        self.lengths[first:size] = lengths
        self.alive[first:size] = True
        self.total_length += int(lengths.sum())
        if not flat:
            return
        keys, tfs = np.unique(
            np.asarray(flat, dtype=np.int64) * size + np.repeat(np.arange(first, size, dtype=np.int64), lengths),
            return_counts=True,
        )
        terms = keys // size
        self.df = np.concatenate([self.df, np.zeros(len(vocabulary) - len(self.df), dtype=np.int64)])
        self.df += np.bincount(terms, minlength=len(vocabulary))
        self.segments.append(_Segment(terms, (keys % size).astype(np.int32), tfs.astype(np.float32)))
        while len(self.segments) > 1 and len(self.segments[-2]) <= len(self.segments[-1]):
            last = self.segments.pop()
            self.segments[-1] = self._merge([self.segments[-1], last])

    def remove(self, ids: Sequence[str] | dict[str, str | None]) -> int:
        """Forget the given ids (unknown ones are ignored); returns how many were indexed."""
        slots = [self.slot_of.pop(i) for i in dict.fromkeys(ids) if i in self.slot_of]
        if not slots:
            return 0
        gone = np.asarray(slots, dtype=np.int64)
        for slot in slots:
            self.ids[slot] = None
        self.alive[gone] = False
        self.total_length -= int(self.lengths[gone].sum())
        dead = np.zeros(len(self.ids), dtype=bool)
        dead[gone] = True
        for segment in self.segments:
            hit = np.flatnonzero(dead[segment.slots])
            if len(hit):
                owners = np.searchsorted(segment.starts, hit, side="right") - 1
                self.df -= np.bincount(segment.terms[owners], minlength=len(self.df))
        if len(self.ids) - len(self.slot_of) > max(MIN_COMPACT, len(self.slot_of)):
            self._compact()
        return len(slots)

    def _grow(self, size: int) -> None:
        if size > len(self.alive):
            capacity = max(size, 2 * len(self.alive), 64)
            self.alive = np.concatenate([self.alive, np.zeros(capacity - len(self.alive), dtype=bool)])
            self.lengths = np.concatenate([self.lengths, np.zeros(capacity - len(self.lengths), dtype=np.float32)])

    def _merge(self, segments: Sequence[_Segment], remap: tuple[Ints, Ints] | None = None) -> _Segment:
        """One segment holding the live postings of `segments`, slots renumbered by `remap` if given."""
        terms = np.concatenate([s.term_column() for s in segments])
        slots = np.concatenate([s.slots for s in segments])
        tfs = np.concatenate([s.tfs for s in segments])
        live = self.alive[slots]
        terms, slots, tfs = terms[live], slots[live], tfs[live]
        if remap is not None:
            terms, slots = remap[0][terms], remap[1][slots].astype(np.int32)
        return _segment(terms, slots, tfs)

    def _compact(self) -> None:
        """Renumber live slots densely and drop terms no live record uses."""
        live_slots = np.flatnonzero(self.alive[: len(self.ids)])
        slot_map = np.full(len(self.ids), -1, dtype=np.int64)
        slot_map[live_slots] = np.arange(len(live_slots))
        used = self.df > 0
        term_map = np.full(len(self.df), -1, dtype=np.int64)
        term_map[used] = np.arange(int(used.sum()))
        merged = self._merge(self.segments, (term_map, slot_map)) if self.segments else None
        self.segments = [merged] if merged is not None and len(merged) else []
        self.vocabulary = {t: int(term_map[i]) for t, i in self.vocabulary.items() if used[i]}
        self.df = self.df[used]
        self.ids = [self.ids[s] for s in live_slots.tolist()]
        self.slot_of = {record_id: slot for slot, record_id in enumerate(self.ids) if record_id is not None}
        self.lengths = self.lengths[live_slots].copy()
        self.alive = np.ones(len(live_slots), dtype=bool)

    # --- reads ---------------------------------------------------------------------------------------------

    def search(self, text: str, depth: int, allowed: Mask | None = None) -> list[tuple[str, float]]:
        """The best `depth` (id, score) pairs holding a query term, best first, ties by id.

        `allowed`, if given, is a mask over slots (`ids`): other slots are never returned.
        """
        live = len(self.slot_of)
        wanted = Counter(i for t in self.analyzer.terms(text) if (i := self.vocabulary.get(t)) is not None)
        if not live or not wanted or depth < 1:
            return []
        terms = np.fromiter(wanted.keys(), dtype=np.int64, count=len(wanted))
        repeats = np.fromiter(wanted.values(), dtype=np.float64, count=len(wanted))
        df = self.df[terms]
        idf = np.log1p((live - df + 0.5) / (df + 0.5)) * repeats
        average = self.total_length / live or 1.0
        size = len(self.ids)
        norm = self.k1 * (1.0 - self.b + self.b * self.lengths[:size] / average)
        scores = np.zeros(size, dtype=np.float64)
        for segment in self.segments:
            index, owner = segment.postings(terms)
            if not len(index):
                continue
            slots, tfs = segment.slots[index], segment.tfs[index]
            gain = idf[owner] * tfs * (self.k1 + 1.0) / (tfs + norm[slots])
            scores += np.bincount(slots, weights=gain, minlength=size)
        keep = self.alive[:size] if allowed is None else self.alive[:size] & allowed[:size]
        found = np.flatnonzero((scores > 0) & keep)
        picked = scores[found]
        if len(found) > depth:
            cut = np.partition(picked, len(picked) - depth)[len(picked) - depth]
            best = picked >= cut
            found, picked = found[best], picked[best]
        ids = self.ids
        ranked = sorted(zip(picked.tolist(), (ids[s] for s in found.tolist())), key=lambda p: (-p[0], p[1]))
        return [(str(record_id), score) for score, record_id in ranked[:depth]]
