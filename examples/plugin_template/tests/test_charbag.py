"""The plugin passes bigrag-mcp's embedding-provider conformance suite, and the server finds it through its entry point."""

from __future__ import annotations

import bigrag_charbag
import pytest
from bigrag_charbag import CharBagEmbedder

from bigrag_mcp.plugins import build_registry, plugin_manager
from bigrag_mcp.testing.embedders import EmbeddingProviderConformance, registered_embedding_providers
from bigrag_mcp.types import EmbeddingProvider


class TestCharBagConformance(EmbeddingProviderConformance):
    @pytest.fixture
    async def provider(self) -> EmbeddingProvider:
        return CharBagEmbedder(model=None, dimension=None)


def test_registers_through_its_hook() -> None:
    assert registered_embedding_providers(bigrag_charbag) == {"charbag": CharBagEmbedder}


def test_installed_entry_point_is_loaded_by_the_server() -> None:
    registry = build_registry(plugin_manager("charbag"))
    assert registry.embedding_provider("charbag") is CharBagEmbedder
