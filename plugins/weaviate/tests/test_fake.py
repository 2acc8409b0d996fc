"""The fake answers the real client the way the Weaviate server (v1.38 source) does, including its errors."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import weaviate
from bigrag_weaviate.testing import FakeWeaviate, RecordedSleeps
from weaviate.classes.config import Configure, DataType, Property, Tokenization
from weaviate.classes.data import DataObject
from weaviate.classes.query import Filter
from weaviate.classes.tenants import Tenant, TenantActivityStatus
from weaviate.client import WeaviateAsyncClient
from weaviate.collections import CollectionAsync
from weaviate.exceptions import UnexpectedStatusCodeError, WeaviateInvalidInputError, WeaviateQueryError

pytestmark = pytest.mark.anyio


async def test_documented_tenant_errors_and_filters(fake: FakeWeaviate) -> None:
    async with weaviate.use_async_with_local(port=fake.http_port, grpc_port=fake.grpc_port, skip_init_checks=True) as client:
        col = await client.collections.create(
            "Things",
            properties=[Property(name="tags", data_type=DataType.TEXT_ARRAY)],
            vector_config=Configure.Vectors.self_provided(),
            multi_tenancy_config=Configure.multi_tenancy(enabled=True),
        )
        with pytest.raises(WeaviateQueryError, match="multi-tenancy enabled, but request was without tenant"):
            await col.query.fetch_objects()
        with pytest.raises(WeaviateQueryError, match='tenant not found: "nobody"'):
            await col.with_tenant("nobody").query.fetch_objects()
        await col.tenants.create([Tenant(name="t1")])
        t1 = col.with_tenant("t1")
        result = await t1.data.insert_many(
            [DataObject(properties={"tags": ["a", "b"]}, vector=[1.0, 0.0]), DataObject(properties={"nope": "x"}, vector=[0.0, 1.0])]
        )
        assert list(result.errors) == [1] and "no such prop" in result.errors[1].message
        found = await t1.query.fetch_objects(filters=Filter.by_property("tags").contains_any(["b"]))
        assert len(found.objects) == 1
        await col.tenants.update([Tenant(name="t1", activity_status=TenantActivityStatus.INACTIVE)])
        assert (await col.tenants.get())["t1"].activity_status == TenantActivityStatus.INACTIVE
        with pytest.raises(WeaviateQueryError, match="tenant not active: 't1'"):
            await t1.query.fetch_objects()
        await col.tenants.remove(["t1"])
        assert await col.tenants.get() == {}


@pytest.fixture
async def client(fake: FakeWeaviate) -> AsyncIterator[WeaviateAsyncClient]:
    async with weaviate.use_async_with_local(port=fake.http_port, grpc_port=fake.grpc_port, skip_init_checks=True) as c:
        yield c


async def tenant_collection(client: WeaviateAsyncClient, *properties: Property) -> CollectionAsync:
    col = await client.collections.create(
        "Things",
        properties=list(properties),
        vector_config=Configure.Vectors.self_provided(),
        multi_tenancy_config=Configure.multi_tenancy(enabled=True),
    )
    await col.tenants.create([Tenant(name="t1")])
    return col.with_tenant("t1")


async def test_property_names_are_unique_ignoring_case(client: WeaviateAsyncClient) -> None:
    col = await tenant_collection(client, Property(name="year", data_type=DataType.TEXT))
    with pytest.raises(UnexpectedStatusCodeError, match="conflict for property .*Year.*already in use") as refused:
        await col.config.add_property(Property(name="Year", data_type=DataType.NUMBER))
    assert refused.value.status_code == 422
    with pytest.raises(WeaviateInvalidInputError, match="Property with name 'year' already exists"):
        await col.config.add_property(Property(name="year", data_type=DataType.TEXT))  # the client checks first
    with pytest.raises(UnexpectedStatusCodeError, match="not a valid property name"):
        await col.config.add_property(Property(name="x" * 232, data_type=DataType.TEXT))
    await col.config.add_property(Property(name="x" * 231, data_type=DataType.TEXT))
    with pytest.raises(UnexpectedStatusCodeError, match="provided multiple times"):
        await client.collections.create(
            "Other", properties=[Property(name="a", data_type=DataType.TEXT), Property(name="A", data_type=DataType.TEXT)]
        )


async def test_offloaded_tenant_onloads_asynchronously(
    fake: FakeWeaviate, client: WeaviateAsyncClient, sleeps: RecordedSleeps
) -> None:
    col = await tenant_collection(client)
    fake.set_tenant_status("Things", "t1", "OFFLOADED")
    await client.collections.use("Things").tenants.activate("t1")
    status = (await client.collections.use("Things").tenants.get_by_names(["t1"]))["t1"].activity_status
    assert status == TenantActivityStatus.ONLOADING
    with pytest.raises(WeaviateQueryError, match="tenant not active: 't1'"):
        await col.query.fetch_objects()
    await client.collections.use("Things").tenants.activate("t1")  # asking again for ACTIVE is accepted
    await sleeps(3.0)  # the fake's clock: onloading takes 3 s
    assert len((await col.query.fetch_objects()).objects) == 0
    fake.set_tenant_status("Things", "t1", "OFFLOADING")
    with pytest.raises(UnexpectedStatusCodeError, match="currently being frozen"):
        await client.collections.use("Things").tenants.activate("t1")


async def test_query_window_is_bounded_by_query_maximum_results(client: WeaviateAsyncClient) -> None:
    col = await tenant_collection(client)
    assert (await col.query.fetch_objects(limit=10_000)).objects == []
    with pytest.raises(WeaviateQueryError, match="query maximum results exceeded"):
        await col.query.fetch_objects(limit=9_999, offset=2)


async def test_field_tokenization_trims_white_space_and_keeps_the_empty_token(client: WeaviateAsyncClient) -> None:
    col = await tenant_collection(client, Property(name="tag", data_type=DataType.TEXT, tokenization=Tokenization.FIELD))
    await col.data.insert_many([DataObject(properties={"tag": v}, vector=[1.0]) for v in ("a", " a\t", "", "  ", "a a")])

    async def count(where: Filter) -> int:
        return len((await col.query.fetch_objects(filters=where)).objects)

    assert await count(Filter.by_property("tag").equal("a")) == 2
    assert await count(Filter.by_property("tag").equal("  a ")) == 2
    assert await count(Filter.by_property("tag").equal("")) == 2
    assert await count(Filter.by_property("tag").contains_any(["a a", " "])) == 3
    assert await count(Filter.not_(Filter.by_property("tag").equal("a"))) == 3


async def test_bm25_words_are_unicode_and_query_stop_words_are_dropped(client: WeaviateAsyncClient) -> None:
    col = await tenant_collection(client, Property(name="text", data_type=DataType.TEXT))
    docs = {"fr": "Crème brûlée", "en": "the the the of", "ru": "Москва-река 42"}
    await col.data.insert_many([DataObject(properties={"text": v}, vector=[1.0]) for v in docs.values()])

    async def found(query: str) -> list[str]:
        return [str(o.properties["text"]) for o in (await col.query.bm25(query=query, return_properties=["text"])).objects]

    assert await found("BRÛLÉE") == [docs["fr"]]
    assert await found("the of") == []
    assert await found("река") == [docs["ru"]] == await found("42")
    assert await found("br") == []
