"""The fake answers the real client the way Weaviate documents it, including its errors."""

from __future__ import annotations

import pytest
import weaviate
from bigrag_weaviate.testing import FakeWeaviate
from weaviate.classes.config import Configure, DataType, Property
from weaviate.classes.data import DataObject
from weaviate.classes.query import Filter
from weaviate.classes.tenants import Tenant, TenantActivityStatus
from weaviate.exceptions import WeaviateQueryError

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
        with pytest.raises(WeaviateQueryError, match='tenant not active: "t1"'):
            await t1.query.fetch_objects()
        await col.tenants.remove(["t1"])
        assert await col.tenants.get() == {}
