"""Weaviate-specific behaviour through the real client and the fake: mapping, activation, failures, retries."""

from __future__ import annotations

import re

import pytest
from bigrag_weaviate import WeaviateBackend
from bigrag_weaviate.naming import decode_tenant_name, tenant_name
from bigrag_weaviate.testing import FakeWeaviate, RecordedSleeps

from bigrag_mcp.errors import InvalidArgument, Unavailable
from bigrag_mcp.filters import parse_filter
from bigrag_mcp.plugins import build_registry, plugin_manager
from bigrag_mcp.types import Partition, SearchRequest, VectorBackend, VectorRecord

pytestmark = pytest.mark.anyio
CLASS = "BigragV2D3"
ACME = Partition("docs", "acme")
RECORDS = [
    VectorRecord("a", [1.0, 0.0, 0.0], "alpha", {"kind": "x"}),
    VectorRecord("b", [0.0, 1.0, 0.0], "beta", {"kind": "y"}),
    VectorRecord("c", [0.0, 0.0, 1.0], "gamma", {"kind": "z"}),
]


def semantic(top_k: int = 10, **kw: object) -> SearchRequest:
    return SearchRequest(top_k=top_k, vector=[1.0, 0.5, 0.25], **kw)  # type: ignore[arg-type]


async def test_collections_and_tenants_become_tenants_of_one_class(fake: FakeWeaviate, backend: WeaviateBackend) -> None:
    partitions = [Partition(f"tenant_{i}", None) for i in range(30)] + [Partition("shared", t) for t in ("a", "b")]
    for p in partitions:
        await backend.upsert(p, RECORDS[:1])
    assert fake.class_names() == [CLASS]
    names = fake.tenants(CLASS)
    assert len(names) == len(partitions)
    assert {decode_tenant_name(n) for n in names} == {(p.collection, p.tenant) for p in partitions}


async def test_same_raw_ids_in_two_tenants_live_in_separate_shards(fake: FakeWeaviate, backend: WeaviateBackend) -> None:
    a, b = Partition("shared", "a"), Partition("shared", "b")
    await backend.upsert(a, RECORDS)
    await backend.upsert(b, [VectorRecord(r.id, [-x for x in r.vector], "other", {"owner": "b"}) for r in RECORDS])
    shards = fake.tenants(CLASS)
    held_a = shards[tenant_name("shared", "a")].objects.values()
    held_b = shards[tenant_name("shared", "b")].objects.values()
    assert sorted(o.properties["record_id"] for o in held_a) == sorted(o.properties["record_id"] for o in held_b)
    assert not {o.uuid for o in held_a} & {o.uuid for o in held_b}
    assert all(o.properties["bigrag_tenant"] == "a" for o in held_a)
    hits = await backend.search(a, semantic(filter=parse_filter({"owner": "b"})))
    assert hits == []
    keyword = await backend.search(a, SearchRequest(top_k=10, mode="keyword", text="other"))
    assert keyword == []


async def test_long_names_are_hashed_within_weaviate_limits_and_still_dropped(
    fake: FakeWeaviate, backend: WeaviateBackend
) -> None:
    long = Partition("c" * 64, "t" * 200 + "/é")
    await backend.upsert(long, RECORDS)
    (name,) = fake.tenants(CLASS)
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name) and decode_tenant_name(name) is None
    assert [h.id for h in await backend.search(long, semantic(top_k=1))] == ["a"]
    await backend.drop(long.collection)
    assert fake.tenants(CLASS) == {}


async def test_partial_batch_failure_surfaces_and_names_the_rejected_record(
    fake: FakeWeaviate, backend: WeaviateBackend
) -> None:
    fake.reject_objects(lambda uuid, props: "disk full on shard" if props["record_id"] == "b" else None)
    with pytest.raises(Unavailable, match=r"did not store 1 of 3 records \('b': disk full on shard\)"):
        await backend.upsert(ACME, RECORDS)
    assert {h.id for h in await backend.search(ACME, semantic())} == {"a", "c"}
    fake.reject_objects(lambda uuid, props: "disk full on shard")
    with pytest.raises(Unavailable, match="did not store 3 of 3"):
        await backend.upsert(Partition("docs", "other"), RECORDS)


async def test_transient_failures_are_retried_with_backoff(
    fake: FakeWeaviate, backend: WeaviateBackend, sleeps: RecordedSleeps
) -> None:
    fake.fail("POST /v1/schema", 503, times=2)
    await backend.upsert(ACME, RECORDS)
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] / 2
    fake.fail("grpc BatchDelete", 14, times=1, message="connection reset")  # 14 = UNAVAILABLE
    assert await backend.delete(ACME, ["a"]) == 1
    assert len(sleeps) == 3
    fake.fail("GET /v1/schema", 502, times=1)
    await backend.drop("docs")
    assert fake.tenants(CLASS) == {}


async def test_persistent_outage_becomes_unavailable_after_bounded_retries(
    fake: FakeWeaviate, backend: WeaviateBackend, sleeps: RecordedSleeps
) -> None:
    await backend.upsert(ACME, RECORDS)
    fake.fail("grpc BatchDelete", 14, times=100)
    with pytest.raises(Unavailable):
        await backend.delete(ACME, ["a"])
    assert fake.calls("grpc BatchDelete") == backend.settings.retries + 1
    assert len(sleeps) == backend.settings.retries


async def test_refusals_are_not_retried(fake: FakeWeaviate, backend: WeaviateBackend, sleeps: RecordedSleeps) -> None:
    fake.fail("POST /v1/schema", 422, message="class limit reached")
    with pytest.raises(InvalidArgument, match="class limit reached"):
        await backend.upsert(ACME, RECORDS)
    assert sleeps == []


async def test_vectors_of_another_dimension_are_refused_for_a_partition(backend: WeaviateBackend) -> None:
    await backend.upsert(ACME, RECORDS)
    with pytest.raises(InvalidArgument, match="holds 3"):
        await backend.upsert(ACME, [VectorRecord("d", [1.0, 0.0, 0.0, 0.0])])
    await backend.upsert(Partition("docs", "wide"), [VectorRecord("d", [1.0, 0.0, 0.0, 0.0])])
    with pytest.raises(InvalidArgument, match="holds 4"):
        await backend.search(Partition("docs", "wide"), semantic())


async def test_post_query_filter_over_fetches_until_it_finds_matches(sleeps: RecordedSleeps) -> None:
    with FakeWeaviate(version="1.30.0") as fake:
        backend = WeaviateBackend(fake.settings(overfetch=2), sleep=sleeps)
        near = [VectorRecord(f"n{i}", [1.0, 0.01 * i, 0.0], metadata={"kind": "x"}) for i in range(12)]
        far = VectorRecord("far", [0.0, 0.0, 1.0], metadata={"kind": "y"})
        await backend.upsert(ACME, [*near, far])
        hits = await backend.search(ACME, semantic(top_k=1, filter=parse_filter({"kind": {"$ne": "x"}})))
        assert [h.id for h in hits] == ["far"]
        assert fake.calls("grpc Search") == 4  # 2, 4, 8, then 16 candidates: the 13th nearest is the match
        await backend.close()


async def test_registered_through_the_entry_point(fake: FakeWeaviate, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEAVIATE_URL", fake.url)
    monkeypatch.setenv("WEAVIATE_GRPC_PORT", str(fake.grpc_port))
    factory = build_registry(plugin_manager(load_plugins="weaviate")).vector_backend("weaviate")
    backend = factory()
    assert isinstance(backend, WeaviateBackend) and isinstance(backend, VectorBackend)
    await backend.upsert(ACME, RECORDS)
    assert [h.id for h in await backend.search(ACME, semantic(top_k=1))] == ["a"]
    await backend.close()
