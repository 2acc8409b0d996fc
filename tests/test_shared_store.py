"""Two processes on one store (a server and the operator's CLI): the in-memory index follows the other's writes."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.services import admin, bulk, collections, documents, index, offboarding, search, vectors
from bigrag_mcp.services.index import partition_of
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings
from bigrag_mcp.store.models import IndexChange, IndexGeneration
from bigrag_mcp.types import VectorRecord

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]
VEC = [1.0, 0.0, 0.0, 0.0]


async def ids(rt: Runtime, collection: str, query: str, filters: dict[str, str] | None = None) -> list[str]:
    return [r.id for r in (await search.search(rt, collection, query, top_k=50, filters=filters)).results]


async def test_a_loaded_partition_refills_after_another_process_writes(two_runtimes: tuple[Runtime, Runtime]) -> None:
    server, cli = two_runtimes
    await collections.create(server, name="notes", tenant_field="tenant_id", dimension=4)
    first = await documents.upload(server, "notes", text="alpha beta", metadata={"tenant_id": "acme"})
    assert await ids(server, "notes", "alpha", {"tenant_id": "acme"}) == [f"{first.document.id}#0"]  # loaded now

    second = await documents.upload(cli, "notes", text="alpha gamma", metadata={"tenant_id": "acme"})
    await vectors.upsert(cli, "notes", [{"id": "raw", "vector": VEC, "text": "raw", "metadata": {"tenant_id": "acme"}}])
    seen = await ids(server, "notes", "alpha", {"tenant_id": "acme"})
    assert set(seen) == {f"{first.document.id}#0", f"{second.document.id}#0", "raw"}

    await documents.delete_many(cli, "notes", [first.document.id], tenant="acme")
    await vectors.upsert(cli, "notes", [{"id": "raw", "vector": [0.0, 1.0, 0.0, 0.0], "text": "moved", "metadata": {"tenant_id": "acme"}}])
    rows = (await search.search(server, "notes", "alpha", top_k=50, filters={"tenant_id": "acme"})).results
    assert {r.id for r in rows} == {f"{second.document.id}#0", "raw"}
    assert [r.text for r in rows if r.id == "raw"] == ["moved"]

    await documents.upload(server, "notes", text="delta", metadata={"tenant_id": "acme"})  # the server's own write
    assert len(await ids(cli, "notes", "delta", {"tenant_id": "acme"})) == 3  # and the CLI sees it too


async def seed(rt: Runtime, name: str, tenant: str, count: int, label: str = "") -> list[str]:
    """`count` one-chunk documents of `tenant`; their record ids."""
    ids = []
    for i in range(count):
        up = await documents.upload(rt, name, text=f"alpha note {label} {tenant} {i}", metadata={"tenant_id": tenant})
        ids.append(f"{up.document.id}#0")
    return ids


async def test_the_other_process_applies_only_the_delta(two_runtimes: tuple[Runtime, Runtime]) -> None:
    server, cli = two_runtimes
    await collections.create(server, name="notes", tenant_field="tenant_id", dimension=4)
    old = await seed(server, "notes", "acme", 30)
    assert set(await ids(server, "notes", "alpha", {"tenant_id": "acme"})) == set(old)
    stats = server.index.stats
    loads, read = stats.full_loads, stats.rows_read

    new = await seed(cli, "notes", "acme", 1, "new")
    assert set(await ids(server, "notes", "alpha", {"tenant_id": "acme"})) == set(old + new)
    assert (stats.full_loads, stats.rows_read - read) == (loads, 1)  # one row read, not 31

    await documents.delete_many(cli, "notes", [old[0].split("#")[0]], tenant="acme")
    await vectors.upsert(cli, "notes", [{"id": "raw", "vector": VEC, "text": "alpha raw", "metadata": {"tenant_id": "acme"}}])
    assert set(await ids(server, "notes", "alpha", {"tenant_id": "acme"})) == set(old[1:] + new + ["raw"])
    assert (stats.full_loads, stats.rows_read - read) == (loads, 2)  # the raw vector; the deleted one is absent
    await vectors.delete(cli, "notes", ["raw"], tenant="acme")
    assert "raw" not in await ids(server, "notes", "alpha", {"tenant_id": "acme"})
    assert (stats.full_loads, stats.rows_read - read) == (loads, 2)


async def test_offboarding_by_another_process_empties_the_partition_without_reading_others(two_runtimes: tuple[Runtime, Runtime]) -> None:
    server, cli = two_runtimes
    await collections.create(server, name="notes", tenant_field="tenant_id", dimension=4)
    await seed(server, "notes", "acme", 3)
    kept = await seed(server, "notes", "globex", 2)
    assert len(await ids(server, "notes", "alpha", {"tenant_id": "acme"})) == 3
    assert set(await ids(server, "notes", "alpha", {"tenant_id": "globex"})) == set(kept)
    read = server.index.stats.rows_read

    await offboarding.offboard(cli, "notes", "acme")
    assert await ids(server, "notes", "alpha", {"tenant_id": "acme"}) == []
    assert set(await ids(server, "notes", "alpha", {"tenant_id": "globex"})) == set(kept)
    assert server.index.stats.rows_read == read  # acme refilled from nothing; globex untouched


async def test_a_re_created_collection_is_a_new_identity_for_a_running_server(two_runtimes: tuple[Runtime, Runtime]) -> None:
    server, cli = two_runtimes
    await collections.create(server, name="s", dimension=4)
    before = [f"{(await documents.upload(server, 's', text=f'alpha old {i}')).document.id}#0" for i in range(3)]
    assert set(await ids(server, "s", "alpha")) == set(before)

    await collections.delete(cli, "s")
    await collections.create(cli, name="s", dimension=4)
    after = f"{(await documents.upload(cli, 's', text='alpha new')).document.id}#0"

    assert await ids(server, "s", "alpha") == [after]  # seen at once; the old partition is gone
    live = partition_of(await collections.load(server, "s"), None)
    assert list(server.backend._partitions) == [live]  # type: ignore[attr-defined]
    report = await admin.usage(server, collection="s")
    assert (report.queries_total, report.documents_total) == (1, 1)  # none of the old collection's usage


async def test_a_copy_behind_a_compacted_log_refills(two_runtimes: tuple[Runtime, Runtime]) -> None:
    server, cli = two_runtimes
    await collections.create(server, name="notes", tenant_field="tenant_id", dimension=4)
    first = await seed(server, "notes", "acme", 2)
    assert len(await ids(server, "notes", "alpha", {"tenant_id": "acme"})) == 2
    loads = server.index.stats.full_loads
    second = await seed(cli, "notes", "acme", 1, "second")
    collection = await collections.load(cli, "notes")
    async with cli.db.session() as session:
        await cli.index.compact(session, collection, "acme", through=3)
    assert set(await ids(server, "notes", "alpha", {"tenant_id": "acme"})) == set(first + second)
    assert server.index.stats.full_loads == loads + 1


async def test_writes_compact_the_log_and_a_copy_behind_it_still_converges(
    two_runtimes: tuple[Runtime, Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, cli = two_runtimes
    monkeypatch.setattr(index, "KEEP_CHANGES", 2)
    monkeypatch.setattr(index, "COMPACT_EVERY", 1)
    await collections.create(server, name="notes", tenant_field="tenant_id", dimension=4)
    first = await seed(server, "notes", "acme", 1)
    assert await ids(server, "notes", "alpha", {"tenant_id": "acme"}) == first
    later = await seed(cli, "notes", "acme", 4, "later")
    async with cli.db.session() as session:
        logged = list(await session.scalars(select(IndexChange.seq).order_by(IndexChange.seq)))
        compacted = await session.scalar(select(IndexGeneration.compacted_through))
    assert (logged, compacted) == ([4, 5], 3)
    assert set(await ids(server, "notes", "alpha", {"tenant_id": "acme"})) == set(first + later)


@pytest.mark.parametrize("direct", [True, False], ids=["driver_cursor", "result_rows"])
async def test_a_restart_refills_the_same_answers_either_way_rows_are_read(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    monkeypatch.setattr(index, "FILL_BLOCK", 7)  # several blocks
    if not direct:
        monkeypatch.setattr(bulk, "DIRECT_DRIVERS", frozenset())  # every statement through the session
    first = await Runtime.open(settings)
    await collections.create(first, name="notes", tenant_field="tenant_id", dimension=4)
    await seed(first, "notes", "acme", 20)
    await vectors.upsert(first, "notes", [{"id": f"v{i}", "vector": [1.0, i, 0.0, 2.0], "text": f"alpha v{i}", "metadata": {"tenant_id": "acme", "n": i}} for i in range(5)])
    asked = [("alpha", None), ("alpha note", {"n": {"$gte": 2}}), ("v3", None)]
    before = [await search.search(first, "notes", q, top_k=8, filters={"tenant_id": "acme", **(f or {})}, search_mode=m)
              for q, f in asked for m in ("semantic", "keyword", "hybrid")]
    await first.close()
    again = await Runtime.open(settings)
    try:
        after = [await search.search(again, "notes", q, top_k=8, filters={"tenant_id": "acme", **(f or {})}, search_mode=m)
                 for q, f in asked for m in ("semantic", "keyword", "hybrid")]
        assert again.index.stats.full_loads == 1 and again.index.stats.rows_read == 25
    finally:
        await again.close()
    assert [[(r.id, r.score, r.text) for r in b.results] for b in before] == [[(r.id, r.score, r.text) for r in a.results] for a in after]


async def test_a_process_without_a_copy_writes_without_loading_the_partition(two_runtimes: tuple[Runtime, Runtime]) -> None:
    server, cli = two_runtimes
    await collections.create(server, name="notes", tenant_field="tenant_id", dimension=4)
    first = await seed(server, "notes", "acme", 5)
    assert set(await ids(server, "notes", "alpha", {"tenant_id": "acme"})) == set(first)
    more = await seed(cli, "notes", "acme", 2, "cli")
    await vectors.upsert(cli, "notes", [{"id": "raw", "vector": VEC, "metadata": {"tenant_id": "acme"}}])
    with pytest.raises(InvalidArgument):  # still refused, though no copy of the partition checks it
        async with cli.index.writing(await collections.load(cli, "notes"), "acme") as write:
            await write.upsert([VectorRecord("zero", [0.0] * 4)])
    assert (cli.index.stats.full_loads, cli.index.stats.rows_read) == (0, 0)
    assert set(await ids(server, "notes", "alpha", {"tenant_id": "acme"})) == set(first + more + ["raw"])
