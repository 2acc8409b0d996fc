"""Keeps the vector backend in step with the store: lazy refill, per-partition write locks, repair on failure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import numpy as np
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.services.fences import check_admitted
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import NO_TENANT, Chunk, Collection, IndexGeneration
from bigrag_mcp.types import Partition, VectorBackend, VectorRecord

log = logging.getLogger(__name__)


def partition_of(collection: Collection, tenant: str | None) -> Partition:
    """The backend address of a collection's tenant; the id keeps a re-created name from meeting old vectors."""
    return Partition(f"{collection.name}.{collection.id}", tenant or None)


def vector_bytes(vector: Sequence[float]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def record_of(chunk: Chunk) -> VectorRecord:
    return VectorRecord(
        id=chunk.record_id,
        vector=np.frombuffer(chunk.vector, dtype="<f4").tolist(),
        text=chunk.text,
        metadata=chunk.metadata_ or {},
    )


class IndexGate:
    """The only way services touch the backend."""

    def __init__(self, db: Database, backend: VectorBackend) -> None:
        self.db = db
        self.backend = backend
        self._loaded: dict[Partition, int] = {}  # in-memory partitions and the store generation they reflect
        self._locks: dict[Partition, asyncio.Lock] = {}

    def _lock(self, where: Partition) -> asyncio.Lock:
        return self._locks.setdefault(where, asyncio.Lock())

    @staticmethod
    def _generation_row(collection: Collection, where: Partition) -> list[ColumnElement[bool]]:
        return [IndexGeneration.collection_id == collection.id, IndexGeneration.tenant == (where.tenant or NO_TENANT)]

    async def _generation(self, session: AsyncSession, collection: Collection, where: Partition) -> int:
        found = await session.scalar(select(IndexGeneration.generation).where(*self._generation_row(collection, where)))
        return int(found or 0)

    async def bump(self, session: AsyncSession, collection: Collection, tenant: str | None) -> int:
        """Mark a write to the partition in the caller's transaction; returns the new generation."""
        where = partition_of(collection, tenant)
        row = self._generation_row(collection, where)
        changed = await session.execute(
            update(IndexGeneration).where(*row).values(generation=IndexGeneration.generation + 1)
        )
        if not changed.rowcount:  # type: ignore[attr-defined]
            session.add(IndexGeneration(collection_id=collection.id, tenant=where.tenant or NO_TENANT, generation=1))
            await session.flush()
        return await self._generation(session, collection, where)

    async def _refresh(self, session: AsyncSession, collection: Collection, where: Partition) -> None:
        """Bring an in-memory partition to the store's generation: refill it when this or another process missed writes."""
        if self.backend.persistent:
            return
        current = await self._generation(session, collection, where)
        if self._loaded.get(where) == current:
            return
        if where in self._loaded:  # another process wrote since this one loaded the partition
            await self.backend.drop(where.collection, where.tenant)
        rows = await session.scalars(
            select(Chunk)
            .where(Chunk.collection_id == collection.id, Chunk.tenant == (where.tenant or NO_TENANT))
            .order_by(Chunk.id)
        )
        batch: list[VectorRecord] = []
        for chunk in rows:
            batch.append(record_of(chunk))
            if len(batch) >= 1000:
                await self.backend.upsert(where, batch)
                batch = []
        if batch:
            await self.backend.upsert(where, batch)
        self._loaded[where] = current

    async def ready(self, collection: Collection, tenant: str | None) -> Partition:
        """The partition, refilled from the store first when this process's copy is missing or stale."""
        where = partition_of(collection, tenant)
        if not self.backend.persistent:
            async with self.db.session() as session:
                current = await self._generation(session, collection, where)
            if self._loaded.get(where) != current:
                async with self._lock(where), self.db.session() as session:
                    await self._refresh(session, collection, where)
        return where

    @asynccontextmanager
    async def writing(self, collection: Collection, tenant: str | None) -> AsyncIterator[IndexWrite]:
        """A store transaction and the partition, held under the partition's lock.

        The backend is changed inside the transaction; if anything fails after that, the touched ids are
        repaired from the committed store state, so the index never disagrees with the store. Each write
        bumps the partition's generation, so other processes refill their in-memory copy. A fenced (offboarded)
        tenant is refused up front, and again after the bump, when the transaction holds the write lock (SQLite)
        or the generation row's lock (other databases), so an offboarding that committed meanwhile wins.
        """
        where = partition_of(collection, tenant)
        async with self._lock(where):
            write: IndexWrite | None = None
            try:
                async with self.db.session() as session:
                    await check_admitted(session, collection.name, tenant)
                    await self._refresh(session, collection, where)
                    before = self._loaded.get(where)
                    write = IndexWrite(session, where, self.backend)
                    yield write
                    generation = await self.bump(session, collection, tenant)
                    await check_admitted(session, collection.name, tenant)
                if not self.backend.persistent:
                    if before is not None and generation == before + 1:
                        self._loaded[where] = generation
                    else:  # another process wrote in between: refill on the next read
                        self._loaded.pop(where, None)
            except BaseException:
                if write is not None and write.touched:
                    await self._repair(collection, where, write.touched)
                raise

    async def _repair(self, collection: Collection, where: Partition, ids: set[str]) -> None:
        try:
            async with self.db.session() as session:
                rows = list(
                    await session.scalars(
                        select(Chunk).where(
                            Chunk.collection_id == collection.id,
                            Chunk.tenant == (where.tenant or NO_TENANT),
                            Chunk.record_id.in_(ids),
                        )
                    )
                )
            kept = {c.record_id for c in rows}
            if rows:
                await self.backend.upsert(where, [record_of(c) for c in rows])
            gone = sorted(ids - kept)
            if gone:
                await self.backend.delete(where, gone)
        except Exception:  # the index may now hold records the store lacks: force a refill or flag it
            self._loaded.pop(where, None)
            log.exception("could not repair index partition %s after a failed write", where)

    async def drop(self, collection: Collection, tenant: str | None = None) -> None:
        """Remove a collection (or one tenant of it) from the backend, after the store has let go of it."""
        where = partition_of(collection, tenant)
        self._loaded = {
            p: g for p, g in self._loaded.items() if p.collection != where.collection or (tenant and p != where)
        }
        try:
            await self.backend.drop(where.collection, tenant)
        except Exception:  # orphans are harmless: results are always joined with store rows
            log.exception("backend could not drop %s; orphaned vectors are ignored by search", where)


class IndexWrite:
    """One transaction's view: the store session and the backend partition it writes to."""

    def __init__(self, session: AsyncSession, where: Partition, backend: VectorBackend) -> None:
        self.session = session
        self.where = where
        self._backend = backend
        self.touched: set[str] = set()

    async def upsert(self, records: Sequence[VectorRecord]) -> None:
        self.touched.update(r.id for r in records)
        await self._backend.upsert(self.where, records)

    async def delete(self, ids: Sequence[str]) -> int:
        self.touched.update(ids)
        return await self._backend.delete(self.where, ids)
