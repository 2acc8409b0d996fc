"""reindex_collection: every chunk reaches the target in its partition, in batches, and a failed run resumes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from bigrag_mcp.default_plugins.memory_backend import MemoryBackend
from bigrag_mcp.errors import InvalidArgument, NotFound, Unavailable
from bigrag_mcp.services.index import partition_of, vector_bytes
from bigrag_mcp.services.reindex import reindex_collection
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import NO_TENANT, Chunk, Collection
from bigrag_mcp.types import Partition, SearchRequest, VectorRecord

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]
DIM = 4
TENANTS = [NO_TENANT, "acme", "globex"]


def vector(i: int) -> list[float]:
    return [1.0, float(i), float(i % 3), 0.5]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path}/t.db")
    await database.migrate()
    async with database.session() as s:
        for name in ("docs", "other"):
            s.add(
                Collection(
                    name=name, embedding_provider="hash", embedding_model="m", dimension=DIM,
                    chunk_size=500, chunk_overlap=50, chunk_strategy="recursive",
                )
            )
        await s.flush()
        docs, other = (await s.get(Collection, 1)), (await s.get(Collection, 2))
        assert docs is not None and other is not None
        for i in range(23):
            s.add(
                Chunk(
                    collection_id=docs.id, tenant=TENANTS[i % 3], record_id=f"r{i}", text=f"chunk {i}",
                    metadata_={"i": i}, vector=vector_bytes(vector(i)),
                )
            )
        s.add(Chunk(collection_id=other.id, tenant=NO_TENANT, record_id="x", vector=vector_bytes(vector(0))))
    yield database
    await database.close()


async def docs_collection(db: Database) -> Collection:
    async with db.session() as s:
        found = await s.get(Collection, 1)
        assert found is not None
        return found


async def stored(backend: MemoryBackend, where: Partition) -> dict[str, float]:
    hits = await backend.search(where, SearchRequest(top_k=100, vector=[1.0, 1.0, 1.0, 1.0]))
    return {h.id: h.score for h in hits}


async def test_every_chunk_lands_in_its_partition(db: Database) -> None:
    target = MemoryBackend()
    seen: list[tuple[int, int]] = []
    assert await reindex_collection(db, "docs", target, batch_size=5, progress=lambda d, t: seen.append((d, t))) == 23
    collection = await docs_collection(db)
    for k, tenant in enumerate(TENANTS):
        where = partition_of(collection, tenant)
        assert set(await stored(target, where)) == {f"r{i}" for i in range(23) if i % 3 == k}
    assert where.tenant == "globex" and partition_of(collection, NO_TENANT).tenant is None
    hits = await target.search(
        partition_of(collection, "acme"), SearchRequest(top_k=1, vector=vector(4), filter=None)
    )
    assert hits[0].id == "r4" and hits[0].score == pytest.approx(1.0, abs=1e-6)
    assert seen == [(5, 23), (10, 23), (15, 23), (20, 23), (23, 23)]


class FailingOnce(MemoryBackend):
    """A target that goes away after `ok` upserts, as a remote backend might mid-run."""

    def __init__(self, ok: int) -> None:
        super().__init__()
        self.ok = ok
        self.upserted: list[str] = []

    async def upsert(self, where: Partition, records: Sequence[VectorRecord]) -> None:
        if self.ok == 0:
            raise Unavailable("target went away")
        self.ok -= 1
        self.upserted += [r.id for r in records]
        await super().upsert(where, records)


async def test_a_failed_run_resumes_from_its_checkpoint(db: Database, tmp_path: Path) -> None:
    checkpoint = tmp_path / "reindex.json"
    target = FailingOnce(ok=4)  # batches of 6 chunks span 3 partitions: the 2nd batch fails part-way
    with pytest.raises(Unavailable):
        await reindex_collection(db, "docs", target, batch_size=6, checkpoint=checkpoint)
    assert checkpoint.exists()
    first_run, target.upserted = target.upserted, []
    target.ok = 100
    seen: list[tuple[int, int]] = []
    written = await reindex_collection(
        db, "docs", target, batch_size=6, checkpoint=checkpoint, progress=lambda d, t: seen.append((d, t))
    )
    assert written == 23 - 6 and seen[0] == (12, 23) and seen[-1] == (23, 23)
    assert not checkpoint.exists()
    assert sorted(set(first_run + target.upserted)) == sorted(f"r{i}" for i in range(23))
    assert not set(first_run[:6]) & set(target.upserted)  # the completed first batch is not written again


async def test_start_after_id_and_bad_inputs(db: Database, tmp_path: Path) -> None:
    target = MemoryBackend()
    assert await reindex_collection(db, "docs", target, start_after_id=20) == 3
    assert await reindex_collection(db, "other", target) == 1
    with pytest.raises(NotFound):
        await reindex_collection(db, "missing", target)
    with pytest.raises(InvalidArgument):
        await reindex_collection(db, "docs", target, batch_size=0)
    wrong = tmp_path / "cp.json"
    wrong.write_text('{"collection": "other", "last_id": 3}')
    with pytest.raises(InvalidArgument, match="belongs to collection 'other'"):
        await reindex_collection(db, "docs", target, checkpoint=wrong)
