"""An HNSW graph (faiss, the optional `ann` extra) over the rows of one big in-memory partition.

The graph only proposes candidates: the partition scores them exactly, beside the rows the graph does not cover
yet (written since it last caught up), so scores, `min_score` and filters mean what they mean in exact search.
A label is faiss's insertion number; it dies when its row is rewritten or removed, and dead or filtered-out labels
are skipped inside the graph search (an IDSelectorBitmap). Every method but `add` runs under the backend's lock
(`add` under the graph's own, so searches fall back to exact while a batch goes in).

A saved graph is checked against the partition it is loaded for, label by label: a label counts only if its
record still holds exactly the vector the graph was built from, so a stale file loses what changed, never more.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bigrag_mcp.compute import ReadWriteLock
from bigrag_mcp.partition_files import crc32_of

faiss: Any = None  # imported by `available`, on the first partition big enough (it takes ~1 s)

log = logging.getLogger(__name__)

M = 16  # links per node
EF_CONSTRUCTION = 128
EF_SEARCH = 128  # default candidates explored per query (at least the depth asked for); see benchmarks/ann.py
ADD_BATCH = 1024  # rows per faiss add (about a second): searches go exact and `close` waits while one is added
REBUILD_DEAD = 0.25  # rebuild in the background once this share of the labels is dead
Rows = npt.NDArray[np.intp]
Matrix = npt.NDArray[np.float32]


def available() -> bool:
    """Whether faiss (the `ann` extra) is installed, importing it on first use; without it search stays exact.

    faiss then uses one OpenMP thread: a graph grows in the background beside the searches it must not slow,
    and a second thread gained nothing on a busy 2-core machine (`benchmarks/ann_candidates.py`)."""
    global faiss
    if faiss is None:
        try:
            faiss = importlib.import_module("faiss")
        except ImportError:
            return False
        faiss.omp_set_num_threads(1)
    return True


class Graph:
    """The faiss HNSW index of one partition and the two-way map between its labels and the partition's rows."""

    def __init__(self, dimension: int, index: Any = None) -> None:
        if index is None:
            index = faiss.IndexHNSWFlat(dimension, M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = EF_CONSTRUCTION
        self.index = index  # a loaded index has labels that `install` has yet to map
        self.label_row: Rows = np.empty(0, dtype=np.intp)  # row of each label, -1: dead
        self.label_ids: list[str | None] = []  # record of each live label (for saving)
        self.row_label: Rows = np.full(16, -1, dtype=np.intp)  # label of each row, -1: not covered
        self.dead = 0
        self.journal: set[str] | None = None  # records written while a batch was out of the lock
        self.lock = ReadWriteLock()
        self.busy = False  # a batch is being added: searches use exact
        self.unsaved = 0  # labels added since the graph was last saved or loaded
        self.ef = EF_SEARCH

    # --- kept in step with the partition's rows (under the backend's write lock) -----------------------

    def reserve(self, rows: int) -> None:
        if rows > len(self.row_label):
            grown = np.full(max(rows, 2 * len(self.row_label)), -1, dtype=np.intp)
            grown[: len(self.row_label)] = self.row_label
            self.row_label = grown

    def forget(self, row: int, record_id: str) -> None:
        """The row's record is rewritten or removed: its label dies and the row is no longer covered."""
        if self.journal is not None:
            self.journal.add(record_id)
        if row < len(self.row_label) and (label := int(self.row_label[row])) >= 0:
            self.label_row[label] = -1
            self.label_ids[label] = None
            self.dead += 1
            self.row_label[row] = -1

    def moved(self, source: int, target: int) -> None:
        """The record at `source` now lives at `target` (`source` is freed)."""
        label = int(self.row_label[source])
        self.row_label[target] = label
        self.row_label[source] = -1
        if label >= 0:
            self.label_row[label] = target

    # --- growing it -------------------------------------------------------------------------------------

    def uncovered(self, size: int) -> Rows:
        return np.flatnonzero(self.row_label[:size] < 0)

    def worn(self) -> bool:
        return self.index.ntotal > 0 and self.dead > REBUILD_DEAD * self.index.ntotal

    def add(self, vectors: Matrix) -> int:
        """Append vectors to the graph (outside the backend's lock); the first new label."""
        first = int(self.index.ntotal)
        self.busy = True
        try:
            with self.lock.writing():
                self.index.add(vectors)
        finally:
            self.busy = False
        return first

    def install(self, first: int, ids: Sequence[str | None], rows: dict[str, int]) -> None:
        """Map labels first.. to the current rows of `ids`; a record written meanwhile (or gone) leaves its label dead."""
        count = len(ids)
        self.label_row = np.concatenate([self.label_row, np.full(count, -1, dtype=np.intp)])
        self.label_ids.extend([None] * count)
        self.dead += count
        journal = self.journal or set()
        for label, record_id in enumerate(ids, start=first):
            row = rows.get(record_id) if record_id is not None and record_id not in journal else None
            if row is None or row >= len(self.row_label) or self.row_label[row] >= 0:
                continue
            self.row_label[row] = label
            self.label_row[label] = row
            self.label_ids[label] = record_id
            self.dead -= 1
        self.journal = None
        self.unsaved += count

    # --- searching (under the backend's read lock) ------------------------------------------------------

    def candidates(self, query: Matrix, allowed: npt.NDArray[np.bool_] | None, depth: int) -> Rows:
        """Rows of up to `depth` live, allowed labels nearest to the unit `query`."""
        live = self.label_row >= 0
        if allowed is not None:
            live &= allowed[np.maximum(self.label_row, 0)]
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef, depth)
        with self.lock.reading():
            total = int(self.index.ntotal)  # more than there are labels if a batch went in since this search began
            if total > len(live):
                live = np.concatenate([live, np.zeros(total - len(live), dtype=bool)])
            bits = None
            if not live.all():
                bits = np.packbits(live, bitorder="little")
                params.sel = faiss.IDSelectorBitmap(total, faiss.swig_ptr(bits))
            _, labels = self.index.search(query[None], min(depth, total), params=params)
            del bits  # the selector read it during the search
        found = labels[0]
        return self.label_row[found[found >= 0]]

    # --- files ------------------------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the graph and its label ids (the ids copied first: a label killed later fails the check at load)."""
        header_path = path.with_suffix(".json")
        ids = list(self.label_ids)
        header_path.unlink(missing_ok=True)
        tmp = path.with_suffix(".tmp")
        with self.lock.reading():
            faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)
        header = {"dimension": self.index.d, "count": len(ids), "crc32": crc32_of(path), "ids": ids}
        tmp.write_text(json.dumps(header))
        os.replace(tmp, header_path)
        self.unsaved = 0

    @classmethod
    def load(cls, path: Path, dimension: int) -> tuple[Graph, list[str | None]] | None:
        """A saved graph with no label installed yet and the ids its labels were built for; None (removed) if unusable."""
        header_path = path.with_suffix(".json")
        if not header_path.exists():
            return None
        try:
            header = json.loads(header_path.read_text())
            if crc32_of(path) != header["crc32"]:
                raise ValueError("it does not match its checksum")
            index = faiss.read_index(str(path))
            if (index.d, index.ntotal, header["dimension"], len(header["ids"])) != (
                dimension,
                header["count"],
                dimension,
                header["count"],
            ):
                raise ValueError("its shape does not match its header or the partition")
            return cls(dimension, index), list(header["ids"])
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            log.warning("HNSW graph %s is unusable (%s); removing it and building anew", path, exc)
            remove(path)
            return None

    def stored(self, first: int, count: int) -> Matrix:
        """The vectors of labels first..first+count as the graph holds them."""
        flat = faiss.downcast_index(self.index.storage)
        return faiss.rev_swig_ptr(flat.get_xb(), self.index.ntotal * self.index.d).reshape(
            self.index.ntotal, self.index.d
        )[first : first + count]


def remove(path: Path) -> None:
    for item in (path, path.with_suffix(".json")):
        item.unlink(missing_ok=True)
