"""Inactive and offloaded tenants: activated on demand, onloading awaited with bounded backoff on a fake clock."""

from __future__ import annotations

import pytest
from bigrag_weaviate import WeaviateBackend
from bigrag_weaviate.naming import tenant_name
from bigrag_weaviate.testing import FakeWeaviate, RecordedSleeps

from bigrag_mcp.errors import Unavailable
from bigrag_mcp.types import Partition, SearchRequest, VectorRecord

pytestmark = pytest.mark.anyio
CLASS = "BigragV2D3"
ACME = Partition("docs", "acme")
NAME = tenant_name(ACME.collection, ACME.tenant)
RECORDS = [VectorRecord("a", [1.0, 0.0, 0.0], "alpha"), VectorRecord("b", [0.0, 1.0, 0.0], "beta")]
QUERY = SearchRequest(top_k=10, vector=[1.0, 0.5, 0.25])


async def test_inactive_tenant_is_activated_on_demand(fake: FakeWeaviate, backend: WeaviateBackend) -> None:
    await backend.upsert(ACME, RECORDS)
    fake.set_tenant_status(CLASS, NAME, "INACTIVE")
    assert (await backend.search(ACME, QUERY))[0].id == "a"
    assert fake.tenant_status(CLASS, NAME) == "ACTIVE"
    fake.set_tenant_status(CLASS, NAME, "INACTIVE")
    await backend.upsert(ACME, [VectorRecord("d", [1.0, 1.0, 0.0])])
    assert fake.tenant_status(CLASS, NAME) == "ACTIVE"
    assert "d" in {h.id for h in await backend.search(ACME, QUERY)}
    assert fake.calls(f"PUT /v1/schema/{CLASS}/tenants") == 2


async def test_offloaded_tenant_is_awaited_while_it_onloads(
    fake: FakeWeaviate, backend: WeaviateBackend, sleeps: RecordedSleeps
) -> None:
    await backend.upsert(ACME, RECORDS)
    fake.set_tenant_status(CLASS, NAME, "OFFLOADED")
    assert [h.id for h in await backend.search(ACME, QUERY)] == ["a", "b"]
    assert fake.tenant_status(CLASS, NAME) == "ACTIVE"
    assert 3.0 <= sum(sleeps) <= 3.0 * 2 + backend.settings.activation_backoff_seconds  # waited about as long
    assert sleeps == sorted(sleeps) and len(sleeps) <= 6  # backoff, not a busy loop
    assert fake.calls(f"PUT /v1/schema/{CLASS}/tenants") == 1  # activated once, then only watched
    sleeps.clear()
    fake.set_tenant_status(CLASS, NAME, "OFFLOADED")
    await backend.upsert(ACME, [VectorRecord("c", [0.0, 0.0, 1.0])])
    assert sum(sleeps) >= 3.0
    assert {h.id for h in await backend.search(ACME, QUERY)} == {"a", "b", "c"}


async def test_a_tenant_already_onloading_is_awaited_not_refused(
    fake: FakeWeaviate, backend: WeaviateBackend, sleeps: RecordedSleeps
) -> None:
    await backend.upsert(ACME, RECORDS)
    fake.set_tenant_status(CLASS, NAME, "OFFLOADED")
    client = await backend.client()
    await client.collections.use(CLASS).tenants.activate(NAME)  # an operator started onloading
    assert fake.tenant_status(CLASS, NAME) == "ONLOADING"
    assert await backend.delete(ACME, ["a"]) == 1
    assert sum(sleeps) >= 3.0


async def test_onloading_longer_than_the_bound_is_unavailable_with_a_retry_hint(sleeps: RecordedSleeps) -> None:
    with FakeWeaviate(clock=sleeps.now, onload_seconds=600.0) as fake:
        backend = WeaviateBackend(fake.settings(activation_timeout_seconds=20.0), sleep=sleeps)
        await backend.upsert(ACME, RECORDS)
        fake.set_tenant_status(CLASS, NAME, "OFFLOADED")
        with pytest.raises(Unavailable, match=r"being activated.*retry"):
            await backend.search(ACME, QUERY)
        assert 20.0 <= sum(sleeps) <= 20.0 + 5.0
        assert fake.tenant_status(CLASS, NAME) == "ONLOADING"
        await backend.close()


async def test_a_tenant_being_offloaded_is_unavailable_not_invalid(
    fake: FakeWeaviate, backend: WeaviateBackend
) -> None:
    await backend.upsert(ACME, RECORDS)
    fake.set_tenant_status(CLASS, NAME, "OFFLOADING")
    with pytest.raises(Unavailable, match=r"being offloaded.*retry"):
        await backend.search(ACME, QUERY)
    with pytest.raises(Unavailable, match=r"being offloaded.*retry"):
        await backend.upsert(ACME, RECORDS[:1])


async def test_inactive_tenant_is_reported_unavailable_when_configured(fake: FakeWeaviate, sleeps: RecordedSleeps) -> None:
    backend = WeaviateBackend(fake.settings(inactive_tenant="unavailable"), sleep=sleeps)
    await backend.upsert(ACME, RECORDS)
    for status in ("INACTIVE", "OFFLOADED"):
        fake.set_tenant_status(CLASS, NAME, status)
        with pytest.raises(Unavailable, match="inactive"):
            await backend.search(ACME, QUERY)
        with pytest.raises(Unavailable, match="inactive"):
            await backend.upsert(ACME, RECORDS[:1])
        assert fake.tenant_status(CLASS, NAME) == status
    assert fake.calls("PUT /v1/schema") == 0
    await backend.close()
