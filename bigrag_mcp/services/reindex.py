"""Rebuild a collection's vectors in another backend from the store, resumably (e.g. moving to Weaviate).

Chunks are read in `Chunk.id` order, `batch_size` at a time, and upserted partition by partition. After each
batch the last id is written to the optional checkpoint file, so a rerun after a failure continues where the
previous run stopped (upserts are idempotent, so a batch that was half-written is simply written again).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select

from bigrag_mcp.errors import InvalidArgument, NotFound
from bigrag_mcp.services.index import partition_of, record_of
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import Chunk, Collection
from bigrag_mcp.types import Partition, VectorBackend, VectorRecord


def read_checkpoint(path: Path, collection_name: str) -> int | None:
    """The last reindexed chunk id a checkpoint file holds for this collection, or None."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if data.get("collection") != collection_name:
        raise InvalidArgument(
            f"checkpoint {path} belongs to collection {data.get('collection')!r}, not {collection_name!r}; "
            "remove it or pass another checkpoint file"
        )
    return int(data["last_id"])


def _write_checkpoint(path: Path, collection_name: str, last_id: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"collection": collection_name, "last_id": last_id}))
    os.replace(tmp, path)


async def reindex_collection(
    db: Database,
    collection_name: str,
    target: VectorBackend,
    *,
    batch_size: int = 500,
    progress: Callable[[int, int], None] | None = None,
    start_after_id: int | None = None,
    checkpoint: Path | None = None,
) -> int:
    """Upsert every chunk of `collection_name` into `target`; return how many records this run wrote.

    Resumes after `start_after_id`, or after the id in `checkpoint` when that file exists; the checkpoint is
    updated after each batch and removed once the collection is complete. `progress(done, total)` counts chunks,
    including those a previous run already wrote.
    """
    if batch_size < 1:
        raise InvalidArgument("batch_size must be at least 1")
    if start_after_id is None and checkpoint is not None:
        start_after_id = read_checkpoint(checkpoint, collection_name)
    last_id = start_after_id or 0
    async with db.session() as s:
        collection = await s.scalar(select(Collection).where(Collection.name == collection_name))
        if collection is None:
            raise NotFound(f"collection {collection_name!r} does not exist")
        in_collection = Chunk.collection_id == collection.id
        total = await s.scalar(select(func.count()).select_from(Chunk).where(in_collection)) or 0
        done = await s.scalar(select(func.count()).select_from(Chunk).where(in_collection, Chunk.id <= last_id)) or 0
    written = 0
    while True:
        async with db.session() as s:
            rows = list(
                await s.scalars(
                    select(Chunk).where(in_collection, Chunk.id > last_id).order_by(Chunk.id).limit(batch_size)
                )
            )
        if not rows:
            break
        groups: dict[Partition, list[VectorRecord]] = {}
        for chunk in rows:
            groups.setdefault(partition_of(collection, chunk.tenant), []).append(record_of(chunk))
        for where, records in groups.items():
            await target.upsert(where, records)
        last_id = rows[-1].id
        written += len(rows)
        done += len(rows)
        if checkpoint is not None:
            _write_checkpoint(checkpoint, collection_name, last_id)
        if progress is not None:
            progress(done, total)
    if checkpoint is not None and checkpoint.exists():
        checkpoint.unlink()
    return written
