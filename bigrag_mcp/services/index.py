"""Keeps the vector backend in step with the store: a per-partition change log, delta sync, write locks, repair.

Every write to a partition bumps its sequence and logs the record ids it touched, in the write's own transaction.
A process holding an in-memory copy that is behind re-reads only those records; it refills the whole partition
only when it never loaded it, when the log was compacted past its position, or when a write reset the partition.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import ColumnElement, Row, Select, Text, bindparam, cast, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.limits.fastpath import Prepared, SqliteFastPath, read
from bigrag_mcp.services import bulk
from bigrag_mcp.services.fences import check_admitted
from bigrag_mcp.services.snapshots import SnapshotStore
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import NO_TENANT, Chunk, Collection, IndexChange, IndexGeneration
from bigrag_mcp.types import Partition, PartitionRows, Refillable, StoreJoinable, VectorBackend, VectorRecord

log = logging.getLogger(__name__)

KEEP_CHANGES = 1000  # writes per partition the change log keeps; a copy further behind refills
COMPACT_EVERY = 100  # compact a partition's log on every this-many-th write
IN_BATCH = 500  # record ids per IN (...) when re-reading changed records
FILL_BLOCK = 10_000  # rows per block when refilling a whole partition
SNAPSHOT_MIN_ROWS = 10_000  # smaller partitions load from the store about as fast as from a snapshot
# The metadata as its JSON text (a cast, not a type_coerce: asyncpg would otherwise hand back parsed objects)
_COLUMNS = (Chunk.record_id, Chunk.vector, cast(Chunk.metadata_, Text), Chunk.text)
# (an UPDATE reserves its columns' own names for what it sets: the parameters are named apart from them)
_PARTITION_ROW = (IndexGeneration.collection_uid == bindparam("p_uid"), IndexGeneration.tenant == bindparam("p_tenant"))
SEQUENCE = Prepared(select(IndexGeneration.generation).where(*_PARTITION_ROW))


def _partition_values(collection: Collection, tenant: str | None) -> dict[str, str]:
    """The parameters of SEQUENCE and `_next_sequence`: which partition."""
    return {"p_uid": collection.uid, "p_tenant": tenant or NO_TENANT}


@functools.cache
def _next_sequence() -> Prepared:
    """The bump of a partition's sequence (compiled on first use)."""
    return Prepared(update(IndexGeneration).where(*_PARTITION_ROW).values(generation=IndexGeneration.generation + 1))


def partition_of(collection: Collection, tenant: str | None) -> Partition:
    """The backend address of a collection's tenant; the uid keeps a re-created name from meeting old vectors."""
    return Partition(f"{collection.name}.{collection.uid}", tenant or None, collection.language)


def vector_bytes(vector: Sequence[float]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def record_of(chunk: Chunk) -> VectorRecord:
    return VectorRecord(
        id=chunk.record_id,
        vector=np.frombuffer(chunk.vector, dtype="<f4").tolist(),
        text=chunk.text,
        metadata=chunk.metadata_ or {},
    )


def decode(rows: Sequence[Row[str, bytes, str, str | None]], dimension: int) -> PartitionRows:
    """Store rows (id, vector bytes, metadata JSON, text) as one matrix; each distinct metadata text is parsed once."""
    data = PartitionRows(ids=[], vectors=np.empty((len(rows), dimension), dtype="<f4"), texts=[], metadata=[])
    _decode_into(data, rows, {})
    return data


def _decode_into(data: PartitionRows, rows: Sequence[Row[str, bytes, str, str | None]], parsed: dict[str, Any]) -> None:
    """Append `rows` to `data`, copying each vector's bytes straight into the matrix; `parsed` caches metadata."""
    if not rows:
        return
    width = data.vectors.shape[1] * 4
    target = data.vectors.data.cast("B")
    offset = len(data.ids) * width
    for record_id, vector, meta_text, text in rows:
        if len(vector) != width:
            raise ValueError(f"stored vector of {record_id!r} does not have dimension {data.vectors.shape[1]}")
        target[offset : offset + width] = vector
        offset += width
        meta = parsed.get(meta_text)
        if meta is None:
            meta = parsed[meta_text] = json.loads(meta_text) if meta_text else {}
        data.ids.append(record_id)
        data.texts.append(text)
        data.metadata.append(meta)


async def _blocks(
    session: AsyncSession, statement: Select[str, bytes, str, str | None]
) -> AsyncIterator[Sequence[Any]]:
    """The statement's rows, FILL_BLOCK at a time; on a `bulk.DIRECT_DRIVERS` store straight from the driver's cursor (2-3x
    faster than result rows)."""
    conn = await session.connection()
    driver = await bulk.driver_connection(conn)
    if driver is not None:
        compiled = statement.compile(dialect=conn.dialect)
        params = tuple(compiled.params[name] for name in compiled.positiontup or ())
        cursor = await driver.execute(str(compiled), params)
        try:
            while rows := await cursor.fetchmany(FILL_BLOCK):
                yield rows
        finally:
            await cursor.close()
        return
    result = await conn.stream(statement.execution_options(yield_per=FILL_BLOCK))
    async for block in result.partitions():
        yield block


@dataclass
class SyncStats:
    """What bringing in-memory partitions up to date has cost this process."""

    full_loads: int = 0
    snapshot_loads: int = 0
    delta_loads: int = 0
    rows_read: int = 0  # chunk rows read from the store


class IndexGate:
    """The only way services touch the backend."""

    def __init__(
        self, db: Database, backend: VectorBackend, snapshots: SnapshotStore | None = None, fast: SqliteFastPath | None = None
    ) -> None:
        self.db = db
        self.backend = backend
        self.snapshots = snapshots
        self.fast = fast
        self.stats = SyncStats()
        self._loaded: dict[Partition, int] = {}  # in-memory partitions and the sequence they reflect
        self._locks: dict[Partition, asyncio.Lock] = {}
        self._identities: dict[str, str] = {}  # collection name -> the uid this process last served it as

    def _lock(self, where: Partition) -> asyncio.Lock:
        return self._locks.setdefault(where, asyncio.Lock())

    @staticmethod
    def _row(collection: Collection, tenant: str | None) -> list[ColumnElement[bool]]:
        return [IndexGeneration.collection_uid == collection.uid, IndexGeneration.tenant == (tenant or NO_TENANT)]

    async def _position(self, session: AsyncSession, collection: Collection, tenant: str | None) -> tuple[int, int]:
        """(sequence, compacted_through) of a partition; (0, 0) before its first write."""
        found = (
            await session.execute(
                select(IndexGeneration.generation, IndexGeneration.compacted_through).where(*self._row(collection, tenant))
            )
        ).first()
        return (int(found[0]), int(found[1])) if found else (0, 0)

    async def _sequence(self, collection: Collection, tenant: str | None) -> int:
        """The partition's sequence now, read on the loop's thread when the fast path can answer at once."""
        found = await read(self.fast, self.db, SEQUENCE, _partition_values(collection, tenant))
        return int(found[0][0]) if found else 0

    async def record(
        self, session: AsyncSession, collection: Collection, tenant: str | None, record_ids: Iterable[str] | None
    ) -> int:
        """Log a write to the partition in the caller's transaction (None: all of it changed); returns its sequence."""
        partition = _partition_values(collection, tenant)
        if not await bulk.run(session, _next_sequence(), partition):
            session.add(
                IndexGeneration(
                    collection_uid=collection.uid, tenant=tenant or NO_TENANT, generation=1, compacted_through=0
                )
            )
            await session.flush()
        seq = int((await bulk.fetch(session, SEQUENCE, partition))[0][0])
        ids = None if record_ids is None else sorted(set(record_ids))
        change = {"collection_uid": collection.uid, "tenant": tenant or NO_TENANT, "seq": seq, "record_ids": ids}
        await bulk.insert_rows(session, IndexChange, [change])
        if seq % COMPACT_EVERY == 0 and seq > KEEP_CHANGES:
            await self.compact(session, collection, tenant, seq - KEEP_CHANGES)
        return seq

    async def compact(self, session: AsyncSession, collection: Collection, tenant: str | None, through: int) -> None:
        """Remove the partition's change rows up to sequence `through`; copies older than that will refill."""
        await session.execute(
            delete(IndexChange).where(
                IndexChange.collection_uid == collection.uid,
                IndexChange.tenant == (tenant or NO_TENANT),
                IndexChange.seq <= through,
            )
        )
        await session.execute(update(IndexGeneration).where(*self._row(collection, tenant)).values(compacted_through=through))

    async def _refresh(self, session: AsyncSession, collection: Collection, where: Partition) -> None:
        """Bring an in-memory partition to the store's sequence: the delta when the log has it, else a refill."""
        if self.backend.persistent:
            return
        seq, compacted = await self._position(session, collection, where.tenant)
        loaded = self._loaded.get(where)
        if loaded == seq:
            return
        changed = None
        if loaded is not None and compacted <= loaded < seq:
            changed = await self._changed_since(session, collection, where, loaded)
        if changed is None:
            if not await self._from_snapshot(session, collection, where, seq, compacted):
                await self._fill(session, collection, where, seq)
        else:
            await self._apply(session, collection, where, sorted(changed))
        self._loaded[where] = seq

    async def _changed_since(
        self, session: AsyncSession, collection: Collection, where: Partition, seq: int
    ) -> set[str] | None:
        """The record ids written after `seq`, or None when one of those writes reset the whole partition."""
        changed: set[str] = set()
        for ids in await session.scalars(
            select(IndexChange.record_ids).where(
                IndexChange.collection_uid == collection.uid,
                IndexChange.tenant == (where.tenant or NO_TENANT),
                IndexChange.seq > seq,
            )
        ):
            if ids is None:
                return None
            changed.update(ids)
        return changed

    def _chunks(self, collection: Collection, where: Partition) -> list[ColumnElement[bool]]:
        return [Chunk.collection_id == collection.id, Chunk.tenant == (where.tenant or NO_TENANT)]

    async def _from_snapshot(
        self, session: AsyncSession, collection: Collection, where: Partition, seq: int, compacted: int
    ) -> bool:
        """Load the partition from its snapshot plus the changes since; False (and the snapshot removed) if unusable."""
        if self.snapshots is None:
            return False
        snapshot = await asyncio.to_thread(self.snapshots.load, collection.uid, where.tenant, collection.dimension)
        if snapshot is None:
            return False
        changed = None
        if compacted <= snapshot.seq <= seq:  # older than the log, newer than the store or reset since: stale
            changed = await self._changed_since(session, collection, where, snapshot.seq)
        if changed is None:
            await asyncio.to_thread(self.snapshots.remove, collection.uid, where.tenant)
            return False
        await self._install(where, snapshot.rows)
        self.stats.snapshot_loads += 1
        if changed:
            await self._apply(session, collection, where, sorted(changed))
        return True

    async def _fill(self, session: AsyncSession, collection: Collection, where: Partition, seq: int) -> None:
        """Replace the partition with everything the store holds for it, and snapshot it when it is big.

        Rows stream in blocks straight into one preallocated matrix, decoded off the event loop, so memory
        holds one block of row objects at a time beside the matrix.
        """
        scope = self._chunks(collection, where)
        size = int(await session.scalar(select(func.count()).select_from(Chunk).where(*scope)) or 0)
        room = size + size // 8 + 16  # spare rows, so the next writes need not copy the matrix
        data = PartitionRows(ids=[], vectors=np.empty((room, collection.dimension), dtype="<f4"), texts=[], metadata=[])
        parsed: dict[str, Any] = {}
        async for block in _blocks(session, select(*_COLUMNS).where(*scope)):
            if len(data.ids) + len(block) > len(data.vectors):  # rows added since the count (no snapshot reads)
                data = replace(data, vectors=np.concatenate([data.vectors, np.empty_like(data.vectors[: len(block)])]))
            await asyncio.to_thread(_decode_into, data, block, parsed)
        self.stats.full_loads += 1
        self.stats.rows_read += len(data.ids)
        if self.snapshots is not None:  # rows newer than `seq` are fine: a restore re-reads what changed after it
            if len(data.ids) >= SNAPSHOT_MIN_ROWS:
                await asyncio.to_thread(self.snapshots.save, collection.uid, where.tenant, seq, data)
            else:
                await asyncio.to_thread(self.snapshots.remove, collection.uid, where.tenant)
        await self._install(where, data)

    async def _install(self, where: Partition, data: PartitionRows) -> None:
        """Make the backend partition hold exactly `data`."""
        if isinstance(self.backend, Refillable):
            await self.backend.replace(where, data)
            return
        await self.backend.drop(where.collection, where.tenant)
        for start in range(0, len(data.ids), IN_BATCH):
            await self.backend.upsert(where, _records(data, range(start, min(start + IN_BATCH, len(data.ids)))))

    async def _apply(self, session: AsyncSession, collection: Collection, where: Partition, ids: list[str]) -> None:
        """Re-read the changed records: upsert those the store holds, delete the rest."""
        self.stats.delta_loads += 1
        for start in range(0, len(ids), IN_BATCH):
            batch = ids[start : start + IN_BATCH]
            rows = (
                await session.execute(
                    select(*_COLUMNS).where(*self._chunks(collection, where), Chunk.record_id.in_(batch))
                )
            ).all()
            self.stats.rows_read += len(rows)
            data = decode(rows, collection.dimension)
            if rows:
                await self.backend.upsert(where, _records(data, range(len(rows))))
            gone = sorted(set(batch) - set(data.ids))
            if gone:
                await self.backend.delete(where, gone)

    async def _forget_old_identity(self, collection: Collection) -> None:
        """Drop what this process holds of an earlier collection that had this name (deleted elsewhere)."""
        old = self._identities.get(collection.name)
        if old == collection.uid:
            return
        self._identities[collection.name] = collection.uid
        if old is not None:
            stale = f"{collection.name}.{old}"
            self._loaded = {p: s for p, s in self._loaded.items() if p.collection != stale}
            await self.backend.drop(stale)
            await self._forget_snapshots(old, None)

    async def ready(self, collection: Collection, tenant: str | None) -> Partition:
        """The partition, brought up to the store's sequence first when this process's copy is missing or behind."""
        where = partition_of(collection, tenant)
        if not self.backend.persistent:
            await self._forget_old_identity(collection)
            current = await self._sequence(collection, tenant)
            if self._loaded.get(where) != current:
                async with self._lock(where), self.db.session() as session:
                    await self._refresh(session, collection, where)
        return where

    @asynccontextmanager
    async def writing(self, collection: Collection, tenant: str | None) -> AsyncIterator[IndexWrite]:
        """A store transaction and the partition, held under the partition's lock.

        The backend is changed inside the transaction; if anything fails after that, the touched ids are
        repaired from the committed store state, so the index never disagrees with the store. A backend that
        shares the store's database (`StoreJoinable`) writes through the store's own transaction instead, so the
        two commit or roll back together and nothing needs repair; such a write takes the partition's generation
        row first, the order offboarding takes it in. Each write logs the ids it touched under the partition's
        next sequence, so other processes apply just that. A process that holds no copy of an in-memory partition
        (a CLI ingest beside a server) writes the store and the log only: it never loads the partition to write to it. A fenced (offboarded) tenant is refused up front, and
        again after the log entry, when the transaction holds the write lock (SQLite) or the generation row's lock
        (other databases), so an offboarding that committed meanwhile wins.
        """
        where = partition_of(collection, tenant)
        held = self.backend.persistent or where in self._loaded
        if not self.backend.persistent:
            await self._forget_old_identity(collection)
        async with self._lock(where):
            write: IndexWrite | None = None
            joined: VectorBackend | None = None
            try:
                async with self.db.session() as session:
                    await check_admitted(session, collection.name, tenant)
                    joined = await self._joined(session)
                    if joined is not None:
                        generation = select(IndexGeneration.generation).where(*self._row(collection, tenant))
                        await session.execute(generation.with_for_update())
                    if held:
                        await self._refresh(session, collection, where)
                    before = self._loaded.get(where)
                    write = IndexWrite(session, where, joined or (self.backend if held else None))
                    yield write
                    seq = await self.record(session, collection, tenant, write.touched)
                    await check_admitted(session, collection.name, tenant)
                # When another process wrote in between, the copy stays at `before`: the next read applies the
                # delta since then, this write included.
                if before is not None and seq == before + 1 and not self.backend.persistent:
                    self._loaded[where] = seq
            except BaseException:
                if write is not None and write.touched and held and joined is None:
                    await self._repair(collection, where, write.touched)
                raise

    async def _joined(self, session: AsyncSession) -> VectorBackend | None:
        """The backend bound to the session's transaction when it shares the store's database, else None."""
        if not isinstance(self.backend, StoreJoinable):
            return None
        return self.backend.joined(await session.connection())

    async def drop_joined(self, session: AsyncSession, collection: Collection, tenant: str | None = None) -> None:
        """Drop the partition in the store's transaction when the backend shares the store's database (see
        `writing`); `drop` after the commit still forgets what this process holds and lets the backend finish
        outside the transaction (pgvector drops the partition's HNSW index there)."""
        joined = await self._joined(session)
        if joined is not None:
            await joined.drop(partition_of(collection, tenant).collection, tenant)

    async def _repair(self, collection: Collection, where: Partition, ids: set[str]) -> None:
        try:
            async with self.db.session() as session:
                await self._apply(session, collection, where, sorted(ids))
        except Exception:  # the index may now hold records the store lacks: force a refill or flag it
            self._loaded.pop(where, None)
            log.exception("could not repair index partition %s after a failed write", where)

    async def drop(self, collection: Collection, tenant: str | None = None) -> None:
        """Remove a collection (or one tenant of it) from the backend, after the store has let go of it."""
        where = partition_of(collection, tenant)
        self._loaded = {
            p: g for p, g in self._loaded.items() if p.collection != where.collection or (tenant and p != where)
        }
        await self._forget_snapshots(collection.uid, tenant)
        try:
            await self.backend.drop(where.collection, tenant)
        except Exception:  # orphans are harmless: results are always joined with store rows
            log.exception("backend could not drop %s; orphaned vectors are ignored by search", where)

    async def _forget_snapshots(self, uid: str, tenant: str | None) -> None:
        """Remove the snapshots of a dropped collection (tenant None) or of one tenant of it."""
        if self.snapshots is None:
            return
        if tenant is None:
            await asyncio.to_thread(self.snapshots.remove_collection, uid)
        else:
            await asyncio.to_thread(self.snapshots.remove, uid, tenant)


def _check_vectors(ids: Sequence[str], vectors: npt.NDArray[Any]) -> None:
    """Refuse a vector that is not finite or is zero (no direction): it would make every later load fail."""
    lengths = np.linalg.norm(vectors.astype(np.float64, copy=False), axis=1)
    bad = np.flatnonzero(~np.isfinite(lengths) | (lengths == 0))
    if len(bad):
        raise InvalidArgument(f"vector of {ids[int(bad[0])]!r} must be finite and non-zero")


def _records(data: PartitionRows, rows: Iterable[int]) -> list[VectorRecord]:
    return [VectorRecord(data.ids[i], data.vectors[i].tolist(), data.texts[i], data.metadata[i]) for i in rows]


class IndexWrite:
    """One transaction's view: the store session and the backend partition it writes to."""

    def __init__(self, session: AsyncSession, where: Partition, backend: VectorBackend | None) -> None:
        self.session = session
        self.where = where
        self._backend = backend  # None: this process holds no copy of the partition, only the log is written
        self.touched: set[str] = set()

    async def upsert(self, records: Sequence[VectorRecord]) -> None:
        """Index the records; without a copy, still refuse what would make every later load of the partition fail."""
        self.touched.update(r.id for r in records)
        if self._backend is not None:
            await self._backend.upsert(self.where, records)
        elif records:
            _check_vectors([r.id for r in records], np.asarray([r.vector for r in records], dtype=np.float64))

    async def upsert_rows(
        self, ids: Sequence[str], vectors: npt.NDArray[np.float32], texts: Sequence[str | None], metadata: Sequence[Mapping[str, Any]]
    ) -> None:
        """`upsert` of rows given as one matrix: the records (plain floats) are made only when a backend copy takes them."""
        if self._backend is not None:
            await self.upsert([VectorRecord(i, v, t, m) for i, v, t, m in zip(ids, vectors.tolist(), texts, metadata)])
        elif len(ids):
            self.touched.update(ids)
            _check_vectors(ids, vectors)

    async def delete(self, ids: Sequence[str]) -> None:
        self.touched.update(ids)
        if self._backend is not None:
            await self._backend.delete(self.where, ids)
