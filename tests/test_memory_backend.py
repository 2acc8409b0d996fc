"""The in-memory backend: the shared conformance suite plus checks against brute force on random data."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bigrag_mcp.default_plugins.memory_backend import MemoryBackend
from bigrag_mcp.testing.backends import VectorBackendConformance
from bigrag_mcp.types import VectorBackend


class TestMemoryBackendConformance(VectorBackendConformance):
    @pytest.fixture
    async def backend(self) -> AsyncIterator[VectorBackend]:
        b = MemoryBackend()
        yield b
        await b.close()
