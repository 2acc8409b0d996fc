"""The built-in in-memory vector backend: exact cosine search, BM25 keyword search (`bigrag_mcp.lexical`) and
their fusion (`bigrag_mcp.fusion`).

Each (collection, tenant) partition is its own index, so a query costs what that partition holds. Every call
runs in a worker thread (`bigrag_mcp.compute`), searches side by side, a write alone: no call sees a half-applied
write, and the event loop keeps answering while numpy works. A search of a small exact partition
(`INLINE_SEARCH_CELLS`) runs on the event loop when no write holds or awaits the lock: it takes about as long as
the hand-off to a worker thread and back, which costs 0.2–0.45 ms of CPU on a small virtual machine.

A partition of at least `ann_min_rows` records also gets an HNSW graph (`hnsw`), built and caught up in one
background thread a batch at a time, and saved beside the snapshots when a folder is given; until it is ready the
partition answers exactly, and a selective filter is always answered exactly.
"""

from __future__ import annotations

import logging
import operator
import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio.to_thread
import numpy as np
import numpy.typing as npt

from bigrag_mcp import compute
from bigrag_mcp.compute import ReadWriteLock
from bigrag_mcp.default_plugins import hnsw
from bigrag_mcp.default_plugins.hnsw import Graph
from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.filters import And, Compare, FilterNode, Or
from bigrag_mcp.fusion import FusionMethod, fuse
from bigrag_mcp.fusion import best as _best
from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.lexical.index import KeywordIndex
from bigrag_mcp.partition_files import partition_key
from bigrag_mcp.types import Hit, Partition, PartitionRows, SearchRequest, VectorBackendFactory, VectorRecord

T = TypeVar("T")
Mask = npt.NDArray[np.bool_]
Key = tuple[str, Any]

HYBRID_FUSION: FusionMethod = "weighted"
HYBRID_MIN_DEPTH = 100
INLINE_SEARCH_CELLS = 4_000_000  # rows × dimension: ≈ 10k rows of 384 dimensions, a 1–2 ms exact search
FILTERED_EXACT_BELOW = 0.1  # a filter letting through less than this share of a partition is answered exactly
log = logging.getLogger(__name__)
_RANGE: dict[str, Callable[[Any, Any], Any]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}


def _key(value: Any) -> Key | None:
    """An index key that is equal exactly when the filter language calls two values the same."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return None


class _FieldColumn:
    """One metadata field of a partition, laid out so a filter condition becomes a few numpy operations."""

    def __init__(self, name: str, metadata: Sequence[Mapping[str, Any]]) -> None:
        self.size = len(metadata)
        self.present = np.zeros(self.size, dtype=bool)
        self.rows_by_key: dict[Key, list[int]] = {}
        ordered: dict[str, tuple[list[int], list[Any]]] = {"n": ([], []), "s": ([], [])}
        for row, meta in enumerate(metadata):
            value = meta.get(name)
            if value is None:
                continue
            self.present[row] = True
            for item in value if isinstance(value, list) else (value,):
                key = _key(item)
                if key is None:
                    continue
                self.rows_by_key.setdefault(key, []).append(row)
                if key[0] in ordered:
                    ordered[key[0]][0].append(row)
                    ordered[key[0]][1].append(item)
        self.ordered = {
            kind: (np.asarray(rows, dtype=np.intp), np.asarray(values, dtype=object))
            for kind, (rows, values) in ordered.items()
        }

    def rows_equal(self, values: Iterable[Any]) -> Mask:
        mask = np.zeros(self.size, dtype=bool)
        for value in values:
            key = _key(value)
            if key is not None and key in self.rows_by_key:
                mask[self.rows_by_key[key]] = True
        return mask

    def mask(self, op: str, value: Any) -> Mask:
        if op == "$exists":
            return self.present.copy() if value else ~self.present
        if op in ("$eq", "$ne"):
            hit = self.rows_equal((value,))
            return hit if op == "$eq" else ~hit
        if op in ("$in", "$nin"):
            hit = self.rows_equal(value)
            return hit if op == "$in" else ~hit
        mask = np.zeros(self.size, dtype=bool)
        kind = _key(value)
        if kind is None or kind[0] not in self.ordered:
            return mask
        rows, values = self.ordered[kind[0]]
        if len(rows):
            mask[rows[_RANGE[op](values, value).astype(bool)]] = True
        return mask


class _Partition:
    """The records of one (collection, tenant): L2-normalised float32 rows, ids, metadata and a keyword index.

    Texts are not kept: the keyword index holds term counts and the store joins texts into results.
    """

    def __init__(self, dimension: int, language: str) -> None:
        self.dimension = dimension
        self.matrix = np.empty((16, dimension), dtype=np.float32)
        self.ids: list[str] = []
        self.rows: dict[str, int] = {}
        self.metadata: list[Mapping[str, Any]] = []
        self.keywords = KeywordIndex(language)
        self._keyword_rows: npt.NDArray[np.intp] | None = None  # row of each keyword slot (-1: none), for filters
        self.columns: dict[str, _FieldColumn] = {}
        self.graph: Graph | None = None  # the HNSW graph searches use
        self.building: Graph | None = None  # one being built in the background, to replace it when caught up

    @classmethod
    def build(cls, data: PartitionRows, language: str) -> _Partition:
        """A partition holding exactly `data`, built in one pass (the matrix is normalised in one operation)."""
        part = cls(data.vectors.shape[1], language)
        size = len(data.ids)
        if data.vectors.flags.writeable and data.vectors.dtype == np.float32:  # normalised in place, room kept
            part.matrix = data.vectors
        else:
            part.matrix = np.empty((size + size // 8 + 16, part.dimension), dtype=np.float32)
        _unit_rows(data.vectors[:size], data.ids, part.dimension, out=part.matrix[:size])
        part.ids = list(data.ids)
        part.rows = {record_id: row for row, record_id in enumerate(part.ids)}
        if len(part.rows) != len(part.ids):
            raise InvalidArgument("a partition cannot hold the same id twice")
        part.metadata = list(data.metadata)
        part.keywords.add(part.ids, list(data.texts))
        return part

    def __len__(self) -> int:
        return len(self.ids)

    # --- writes ----------------------------------------------------------------------------------------

    def put(self, records: Sequence[VectorRecord], vectors: npt.NDArray[np.float32]) -> None:
        fresh = sum(1 for record_id in {r.id for r in records} if record_id not in self.rows)  # O(records), not O(rows)
        self._reserve(len(self.ids) + fresh)
        for record, vector in zip(records, vectors):
            row = self.rows.get(record.id)
            if row is not None:
                for graph in self.graphs():
                    graph.forget(row, record.id)
            else:
                row = len(self.ids)
                self.rows[record.id] = row
                self.ids.append(record.id)
                self.metadata.append({})
            self.matrix[row] = vector
            self.metadata[row] = {k: list(v) if isinstance(v, list) else v for k, v in record.metadata.items()}
        self.keywords.add([r.id for r in records], [r.text for r in records])
        self._keyword_rows = None
        self.columns.clear()

    def remove(self, ids: Iterable[str]) -> int:
        removed = 0
        wanted = set(ids)
        for record_id in wanted:
            row = self.rows.pop(record_id, None)
            if row is None:
                continue
            removed += 1
            for graph in self.graphs():
                graph.forget(row, record_id)
            self._move_last_into(row)
        if removed:
            self.keywords.remove(list(wanted))
            self._keyword_rows = None
            self.columns.clear()
        return removed

    def _move_last_into(self, row: int) -> None:
        """Fill a freed row with the last record, keeping the rows dense."""
        last = len(self.ids) - 1
        if row != last:
            self.matrix[row] = self.matrix[last]
            self.ids[row], self.metadata[row] = self.ids[last], self.metadata[last]
            self.rows[self.ids[row]] = row
            for graph in self.graphs():
                graph.moved(last, row)
        self.ids.pop()
        self.metadata.pop()

    def _reserve(self, size: int) -> None:
        if size > len(self.matrix):
            grown = np.empty((max(size, 2 * len(self.matrix)), self.dimension), dtype=np.float32)
            grown[: len(self.ids)] = self.matrix[: len(self.ids)]
            self.matrix = grown
        for graph in self.graphs():
            graph.reserve(len(self.matrix))

    # --- the HNSW graph ----------------------------------------------------------------------------------

    def graphs(self) -> list[Graph]:
        return [g for g in (self.graph, self.building) if g is not None]

    def graph_to_grow(self, min_rows: int) -> Graph | None:
        """The graph to add uncovered rows to: a new one when the partition is big and has none or a worn one."""
        if self.building is None and len(self) >= min_rows and (self.graph is None or self.graph.worn()):
            self.building = Graph(self.dimension)
            self.building.reserve(len(self.matrix))
        return self.building or self.graph

    def adopt(self, graph: Graph, ids: Sequence[str | None]) -> bool:
        """Take a saved graph as the one being built, keeping labels whose record has exactly their vector; False if worn."""
        stored = graph.stored(0, len(ids))
        kept: list[str | None] = []
        for start in range(0, len(ids), 16_384):
            block = [self.rows.get(i) if i is not None else None for i in ids[start : start + 16_384]]
            known = np.asarray([r is not None for r in block], dtype=bool)
            rows = np.asarray([r if r is not None else 0 for r in block], dtype=np.intp)
            same = known & (self.matrix[rows] == stored[start : start + len(block)]).all(axis=1)
            kept.extend(i if ok else None for i, ok in zip(ids[start : start + len(block)], same.tolist()))
        graph.reserve(len(self.matrix))
        graph.install(0, kept, self.rows)
        if graph.worn():
            return False
        graph.unsaved = graph.dead
        self.building = graph
        return True

    def promote(self, graph: Graph) -> None:
        if self.building is graph:
            self.graph, self.building = graph, None

    # --- reads -----------------------------------------------------------------------------------------

    def allowed(self, node: FilterNode | None) -> Mask | None:
        """The rows a filter lets through (None: every row)."""
        return None if node is None else self._mask(node)

    def _mask(self, node: FilterNode) -> Mask:
        if isinstance(node, Compare):
            column = self.columns.get(node.field)
            if column is None:
                column = self.columns[node.field] = _FieldColumn(node.field, self.metadata)
            return column.mask(node.op, node.value)
        if isinstance(node, And):
            return np.logical_and.reduce([self._mask(item) for item in node.items])
        if isinstance(node, Or):
            return np.logical_or.reduce([self._mask(item) for item in node.items])
        return ~self._mask(node.item)

    def nearest(self, vector: Sequence[float], allowed: Mask | None, depth: int) -> list[Hit]:
        """Cosine ranking of the allowed rows, best first, at most `depth` long."""
        query = _unit_rows(_as_matrix([vector]), [None], self.dimension)[0]
        size, graph = len(self.ids), self.graph
        if graph is not None and not graph.busy and (allowed is None or allowed.sum() >= FILTERED_EXACT_BELOW * size):
            uncovered = graph.uncovered(size)  # written since the graph last caught up: scored exactly
            if allowed is not None:
                uncovered = uncovered[allowed[uncovered]]
            rows = np.concatenate([graph.candidates(query, allowed, depth), uncovered])
            picked = self.matrix[rows] @ query
        else:
            rows = np.arange(size) if allowed is None else np.flatnonzero(allowed)
            picked = (self.matrix[:size] @ query)[rows]
        if len(rows) > depth:
            cut = np.partition(picked, len(picked) - depth)[len(picked) - depth]
            keep = picked >= cut
            rows, picked = rows[keep], picked[keep]
        clipped = np.clip(picked, -1.0, 1.0).tolist()
        return _best(((self.ids[r], s) for r, s in zip(rows.tolist(), clipped)), depth)

    def keyword(self, text: str, allowed: Mask | None, depth: int) -> list[Hit]:
        """BM25 ranking of the allowed rows that hold a query term, best first, at most `depth` long."""
        slots = None
        if allowed is not None:
            if self._keyword_rows is None:
                self._keyword_rows = np.asarray(
                    [-1 if i is None else self.rows.get(i, -1) for i in self.keywords.ids], dtype=np.intp
                )
            rows = self._keyword_rows
            slots = (rows >= 0) & allowed[np.maximum(rows, 0)] if len(rows) else np.zeros(0, dtype=bool)
        return [Hit(record_id, score) for record_id, score in self.keywords.search(text, depth, slots)]


def _unit_rows(
    vectors: npt.NDArray[np.float32],
    ids: Sequence[str | None],
    dimension: int | None,
    out: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]:
    """Check shape and values and scale each row to length one (into `out` when given); InvalidArgument names the first bad vector."""
    if (dimension is not None and vectors.shape[1] != dimension) or vectors.shape[1] == 0:
        want = dimension if dimension is not None else "of at least 1"
        raise InvalidArgument(f"vectors here must have dimension {want}; got {vectors.shape[1]}")
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))  # no temporary matrix, unlike linalg.norm
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        which = ids[int(np.flatnonzero(bad)[0])]
        label = f"vector of {which!r}" if which is not None else "query vector"
        raise InvalidArgument(f"{label} must be finite and non-zero")
    if out is not None:
        return np.divide(vectors, norms[:, None], out=out)
    return (vectors / norms[:, None]).astype(np.float32, copy=False)


def _as_matrix(vectors: Sequence[Sequence[float]]) -> npt.NDArray[np.float32]:
    """Stack vectors of one shared length into a float32 matrix; InvalidArgument otherwise."""
    lengths = {len(v) for v in vectors}
    if len(lengths) > 1:
        raise InvalidArgument(f"every vector in one call must have the same dimension; got {sorted(lengths)}")
    try:
        matrix = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"vectors must be lists of numbers: {exc}") from exc
    if matrix.ndim != 2:
        raise InvalidArgument("vectors must be flat lists of numbers")
    return matrix


class MemoryBackend:
    """Search over numpy matrices, one per (collection, tenant), exact or through an HNSW graph when big."""

    name = "memory"
    persistent = False
    search_modes: frozenset[str] = frozenset({"semantic", "keyword", "hybrid"})

    def __init__(
        self,
        ann_min_rows: int = 0,
        ann_folder: Path | None = None,
        background: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        """`ann_min_rows` 0 keeps search exact; `background` runs graph work (default: one thread of its own)."""
        self._partitions: dict[Partition, _Partition] = {}
        self._lock = ReadWriteLock()
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] | None = None  # the graph thread's work
        self._worker: threading.Thread | None = None
        self._background = background
        self._tending: set[Partition] = set()
        self._closed = False
        self.configure_ann(ann_min_rows, ann_folder)

    def configure_ann(self, min_rows: int, folder: Path | None, ef: int = hnsw.EF_SEARCH) -> None:
        """Give partitions of at least `min_rows` records (0: none) an HNSW graph searched with `ef`, saved in `folder`."""
        self.ann_min_rows = min_rows
        self.ann_folder = folder
        self.ann_ef = ef

    async def upsert(self, where: Partition, records: Sequence[VectorRecord]) -> None:
        if records:
            await compute.run(self._write, self._upsert, where, records)
            self._kick(where)

    async def delete(self, where: Partition, ids: Sequence[str]) -> int:
        removed = await compute.run(self._write, self._delete, where, ids)
        self._kick(where)
        return removed

    async def search(self, where: Partition, request: SearchRequest) -> list[Hit]:
        request.check(self.search_modes)
        part = self._partitions.get(where)
        if part is not None and part.graph is None and len(part) * part.dimension <= INLINE_SEARCH_CELLS:
            with self._lock.reading_now() as held:
                if held:  # no write holds or awaits the lock: nothing on the event loop can wait here
                    return self._search(where, request)
        return await compute.run(self._read, self._search, where, request)

    async def drop(self, collection: str, tenant: str | None = None) -> None:
        await compute.run(self._write, self._drop, collection, tenant)

    def _write(self, work: Callable[..., T], *args: Any) -> T:
        with self._lock.writing():
            return work(*args)

    def _read(self, work: Callable[..., T], *args: Any) -> T:
        with self._lock.reading():
            return work(*args)

    def _upsert(self, where: Partition, records: Sequence[VectorRecord]) -> None:
        for record in records:
            if not isinstance(record.id, str) or not record.id:
                raise InvalidArgument("every record needs a non-empty string id")
        part = self._partitions.get(where)
        vectors = _unit_rows(
            _as_matrix([r.vector for r in records]), [r.id for r in records], part.dimension if part else None
        )
        if part is None:
            part = self._partitions[where] = _Partition(vectors.shape[1], where.language)
        part.put(records, vectors)

    async def replace(self, where: Partition, rows: PartitionRows) -> None:
        """Swap in a partition built from `rows`: built in a worker thread, swapped in under the write lock."""
        built = await compute.run(_Partition.build, rows, where.language) if rows.ids else None
        await compute.run(self._write, self._swap, where, built)
        self._kick(where)

    def _swap(self, where: Partition, part: _Partition | None) -> None:
        if part is None:
            self._partitions.pop(where, None)
        else:
            self._partitions[where] = part

    def _delete(self, where: Partition, ids: Sequence[str]) -> int:
        part = self._partitions.get(where)
        if part is None:
            return 0
        removed = part.remove(ids)
        if not len(part):
            del self._partitions[where]
        return removed

    def _search(self, where: Partition, request: SearchRequest) -> list[Hit]:
        part = self._partitions.get(where)
        if part is None:
            return []
        allowed = part.allowed(request.filter)
        if request.mode == "semantic":
            assert request.vector is not None
            hits = part.nearest(request.vector, allowed, request.top_k)
        elif request.mode == "keyword":
            assert request.text is not None
            hits = part.keyword(request.text, allowed, request.top_k)
        else:
            assert request.vector is not None and request.text is not None
            depth = max(request.top_k * 4, HYBRID_MIN_DEPTH)
            rankings = [part.nearest(request.vector, allowed, depth), part.keyword(request.text, allowed, depth)]
            hits = fuse(HYBRID_FUSION, rankings[0], rankings[1], request.top_k)
        if request.min_score is not None:
            hits = [h for h in hits if h.score >= request.min_score]
        return hits

    def _drop(self, collection: str, tenant: str | None) -> None:
        doomed = [p for p in self._partitions if p.collection == collection and (tenant is None or p.tenant == tenant)]
        for where in doomed:
            del self._partitions[where]
        if self.ann_folder is not None and self.ann_folder.exists():
            if tenant is not None:
                doomed_files = [self._graph_path(Partition(collection, tenant))]
            else:
                uid = collection.rsplit(".", 1)[-1]
                doomed_files = list(self.ann_folder.glob(f"{uid}-*.hnsw.faiss")) if "." in collection else []
            for path in doomed_files:
                if path is not None:
                    hnsw.remove(path)

    async def close(self) -> None:
        """Stop the graph thread after the batch it is adding (at most seconds) and wait for it: a process that
        exits while faiss is mid-batch can abort in its threads' teardown ("terminate called ...")."""
        self._closed = True
        if self._jobs is not None and self._worker is not None:
            self._jobs.put(None)
            await anyio.to_thread.run_sync(self._worker.join)
        self._partitions.clear()

    # --- HNSW graphs, grown in the background --------------------------------------------------------------

    def _graph_path(self, where: Partition) -> Path | None:
        """Where the partition's graph is saved; None without a folder or for an address no store made."""
        if self.ann_folder is None or "." not in where.collection:
            return None
        try:
            return self.ann_folder / f"{partition_key(where.collection.rsplit('.', 1)[1], where.tenant)}.hnsw.faiss"
        except ValueError:
            return None

    def _kick(self, where: Partition) -> None:
        """Have the partition's graph built or caught up in the background, if it is big enough to have one."""
        part = self._partitions.get(where)
        if self._closed or part is None or where in self._tending:
            return
        if self.ann_min_rows <= 0 or (len(part) < self.ann_min_rows and not part.graphs()):
            return
        if not hnsw.available():
            log.warning("a partition reached ann_min_rows but faiss (the `ann` extra) is not installed: exact search")
            self.ann_min_rows = 0
            return
        self._tending.add(where)
        (self._background or self._submit)(partial(self._tend, where))

    def _submit(self, job: Callable[[], None]) -> None:
        """Queue `job` for the graph thread (`close` stops it between batches; saves write and rename)."""
        if self._jobs is None or self._worker is None:
            self._jobs = queue.SimpleQueue()
            self._worker = threading.Thread(target=_work, args=(self._jobs,), name="bigrag-hnsw", daemon=True)
            self._worker.start()
        self._jobs.put(job)

    def _tend(self, where: Partition) -> None:
        self._tending.discard(where)
        try:
            self._grow(where)
        except Exception:  # searches stay exact for this partition; the next write tries again
            log.exception("could not build the HNSW graph of %s", where)

    def _grow(self, where: Partition) -> None:
        """Add the partition's uncovered rows to its graph a batch at a time, then use it and save it."""
        with self._lock.writing():
            part = self._partitions.get(where)
            graph = part.graph_to_grow(self.ann_min_rows) if part is not None else None
        if part is None or graph is None:
            return
        path = self._graph_path(where)
        if path is not None and part.graph is None and graph.index.ntotal == 0:  # this process's first graph of it
            graph = self._restore(where, part, graph, path)
        graph.ef = self.ann_ef
        while not self._closed:
            with self._lock.reading():
                if self._partitions.get(where) is not part:
                    return
                rows = graph.uncovered(len(part))[: hnsw.ADD_BATCH]
                if not len(rows):
                    break
                vectors, ids = part.matrix[rows], [part.ids[r] for r in rows.tolist()]
                graph.journal = set()
            first = graph.add(vectors)
            with self._lock.writing():
                graph.install(first, ids, part.rows)
        with self._lock.writing():
            part.promote(graph)
        if path is not None and graph.unsaved > graph.index.ntotal // 10:
            graph.save(path)

    def _restore(self, where: Partition, part: _Partition, graph: Graph, path: Path) -> Graph:
        """The saved graph, checked against the partition, in place of the empty `graph`; `graph` if none is usable."""
        loaded = Graph.load(path, part.dimension)
        if loaded is None:
            return graph
        with self._lock.writing():
            if self._partitions.get(where) is not part or part.building is not graph or not part.adopt(*loaded):
                return graph
        return loaded[0]


def _work(jobs: queue.SimpleQueue[Callable[[], None] | None]) -> None:
    while (job := jobs.get()) is not None:
        job()


@hookimpl
def register_vector_backends(register: Callable[[str, VectorBackendFactory], None]) -> None:
    register("memory", MemoryBackend)
