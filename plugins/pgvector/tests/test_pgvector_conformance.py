"""The shared VectorBackend conformance suite against a real Postgres 16 + pgvector started by the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from bigrag_pgvector.testing import fresh_backend

from bigrag_mcp.testing.backends import VectorBackendConformance
from bigrag_mcp.types import VectorBackend


class TestPgvectorConformance(VectorBackendConformance):
    @pytest.fixture
    async def backend(self, postgres_url: str) -> AsyncIterator[VectorBackend]:
        async for b in fresh_backend(postgres_url):
            yield b
