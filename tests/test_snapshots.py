"""Partition snapshots: a restart maps them and answers exactly as before; damaged or stale ones are rebuilt."""

from __future__ import annotations

from pathlib import Path

import pytest

from bigrag_mcp.services import collections, documents, index, offboarding, search, vectors
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings

pytestmark = pytest.mark.anyio
ASKED = [("alpha", None, "semantic"), ("alpha note", {"n": {"$gte": 2}}, "hybrid"), ("v3", None, "keyword")]


@pytest.fixture
def snapshotting(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setattr(index, "SNAPSHOT_MIN_ROWS", 5)
    return settings.model_copy(update={"index_snapshots": True})


def files(settings: Settings) -> list[Path]:
    return sorted((settings.data_dir / "index-snapshots").glob("*"))


async def answers(rt: Runtime) -> list[list[tuple[str, float, str | None]]]:
    found = []
    for query, extra, mode in ASKED:
        result = await search.search(rt, "notes", query, top_k=8, filters={"tenant_id": "acme", **(extra or {})}, search_mode=mode)
        found.append([(r.id, r.score, r.text) for r in result.results])
    return found


async def filled(settings: Settings) -> list[list[tuple[str, float, str | None]]]:
    """A collection of 12 records of acme and 1 of globex, queried (so loaded and snapshotted); its answers."""
    rt = await Runtime.open(settings)
    await collections.create(rt, name="notes", tenant_field="tenant_id", dimension=4)
    for i in range(8):
        await documents.upload(rt, "notes", text=f"alpha note {i}", metadata={"tenant_id": "acme", "n": i})
    await vectors.upsert(rt, "notes", [
        {"id": f"v{i}", "vector": [1.0, i, 0.0, 2.0], "text": f"alpha v{i}", "metadata": {"tenant_id": "acme", "n": i}}
        for i in range(4)
    ])
    await documents.upload(rt, "notes", text="alpha elsewhere", metadata={"tenant_id": "globex"})
    await rt.close()
    rt = await Runtime.open(settings)  # the writer's own copy was never refilled: load it from the store
    try:
        return await answers(rt)
    finally:
        await rt.close()


async def test_a_restart_maps_the_snapshot_and_answers_exactly_as_without_one(
    settings: Settings, snapshotting: Settings
) -> None:
    before = await filled(snapshotting)
    assert len(files(snapshotting)) == 2  # acme's matrix and header; globex is too small
    writer = await Runtime.open(settings)
    await documents.upload(writer, "notes", text="alpha late", metadata={"tenant_id": "acme", "n": 9})
    expected = await answers(writer)  # snapshots off: from the store
    await writer.close()
    assert expected != before

    rt = await Runtime.open(snapshotting)
    try:
        assert await answers(rt) == expected
        assert (rt.index.stats.snapshot_loads, rt.index.stats.full_loads, rt.index.stats.rows_read) == (1, 0, 1)
    finally:
        await rt.close()


@pytest.mark.parametrize("damage", ["flip_a_vector_byte", "truncate_the_matrix", "garble_the_header"])
async def test_a_damaged_snapshot_is_detected_and_rebuilt(snapshotting: Settings, damage: str) -> None:
    before = await filled(snapshotting)
    matrix, header = files(snapshotting)[1], files(snapshotting)[0]
    if damage == "flip_a_vector_byte":
        data = bytearray(matrix.read_bytes())
        data[-3] ^= 0xFF
        matrix.write_bytes(bytes(data))
    elif damage == "truncate_the_matrix":
        matrix.write_bytes(matrix.read_bytes()[:-64])
    else:
        header.write_text(header.read_text()[:-10])
    rt = await Runtime.open(snapshotting)
    try:
        assert await answers(rt) == before
        assert (rt.index.stats.snapshot_loads, rt.index.stats.full_loads) == (0, 1)
    finally:
        await rt.close()
    assert len(files(snapshotting)) == 2  # written again by the refill
    rt = await Runtime.open(snapshotting)
    try:
        assert await answers(rt) == before and rt.index.stats.snapshot_loads == 1
    finally:
        await rt.close()


async def test_a_snapshot_older_than_the_log_is_rebuilt(settings: Settings, snapshotting: Settings) -> None:
    await filled(snapshotting)
    writer = await Runtime.open(settings)
    await documents.upload(writer, "notes", text="alpha late", metadata={"tenant_id": "acme", "n": 9})
    collection = await collections.load(writer, "notes")
    async with writer.db.session() as session:
        await writer.index.compact(session, collection, "acme", through=100)
    expected = await answers(writer)
    await writer.close()
    rt = await Runtime.open(snapshotting)
    try:
        assert await answers(rt) == expected
        assert (rt.index.stats.snapshot_loads, rt.index.stats.full_loads) == (0, 1)
    finally:
        await rt.close()


async def test_offboarding_and_deleting_remove_the_snapshots(snapshotting: Settings) -> None:
    await filled(snapshotting)
    rt = await Runtime.open(snapshotting)
    await offboarding.offboard(rt, "notes", "acme")
    assert files(snapshotting) == []
    for i in range(6):
        await documents.upload(rt, "notes", text=f"beta {i}", metadata={"tenant_id": "globex"})
    await rt.close()
    rt = await Runtime.open(snapshotting)
    try:
        await search.search(rt, "notes", "beta", filters={"tenant_id": "globex"})
        assert len(files(snapshotting)) == 2
        await collections.delete(rt, "notes")
        assert files(snapshotting) == []
    finally:
        await rt.close()
