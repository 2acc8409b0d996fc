"""The shared VectorBackend conformance suite through the real weaviate-client: against the in-process fake
(Weaviate 1.33, native `Not`; and 1.30, where negations are checked after the query), and against a real
server when WEAVIATE_URL is set."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from bigrag_weaviate import WeaviateBackend, WeaviateSettings
from bigrag_weaviate.testing import FakeWeaviate

from bigrag_mcp.testing.backends import VectorBackendConformance
from bigrag_mcp.types import VectorBackend


class TestFakeWeaviateConformance(VectorBackendConformance):
    version = "1.33.0"

    @pytest.fixture
    async def backend(self) -> AsyncIterator[VectorBackend]:
        with FakeWeaviate(version=self.version) as fake:
            b = WeaviateBackend(fake.settings())
            yield b
            await b.close()


class TestFakeWeaviateBefore133Conformance(TestFakeWeaviateConformance):
    """Servers before 1.33 have no `Not`/`ContainsNone`: negations fall back to post-query evaluation."""

    version = "1.30.0"


@pytest.mark.skipif(
    not os.environ.get("WEAVIATE_URL"),
    reason="set WEAVIATE_URL (and WEAVIATE_GRPC_PORT, WEAVIATE_API_KEY if needed) to run the suite against a real Weaviate",
)
class TestRealWeaviateConformance(VectorBackendConformance):
    @pytest.fixture
    async def backend(self) -> AsyncIterator[VectorBackend]:
        prefix = f"BigragTest{uuid.uuid4().hex[:10]}"
        b = WeaviateBackend(WeaviateSettings(class_prefix=prefix))
        yield b
        client = await b.client()
        names = [n for n in await client.collections.list_all(simple=True) if n.startswith(prefix)]
        if names:
            await client.collections.delete(names)
        await b.close()
