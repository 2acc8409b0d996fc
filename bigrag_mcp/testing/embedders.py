"""A pytest conformance suite that every embedding provider, built-in or third-party, runs unchanged.

Subclass it in a test module (the class name must start with ``Test``) and override the async ``provider``
fixture::

    class TestMyEmbedder(EmbeddingProviderConformance):
        @pytest.fixture
        async def provider(self) -> EmbeddingProvider:
            return MyEmbedder(...)

Set ``normalised = False`` for a provider whose vectors are not unit length, and widen ``atol`` for one whose
vectors vary slightly between identical calls. Empty input may embed to the zero vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType

import pluggy
import pytest

from bigrag_mcp import hookspecs
from bigrag_mcp.types import EmbeddingProvider, EmbeddingProviderFactory, Embeddings

UNICODE_TEXTS = (
    "Astronaut 👩‍🚀 launches 🚀 with ❤️",
    "東京は日本の首都です。",
    "مرحبا بالعالم، هذا نص عربي",
    "שלום עולם, זה טקסט בעברית",
    "cafe\u0301 na\u0308ive Z\u0351\u0358a\u0364l\u0489g\u0336o\u0337",
    "हिन्दी भाषा में वाक्य",
    "mixed Ελληνικά русский 한국어 text\u200b\u200d\ufeff",
)
PLAIN_TEXTS = (
    "The library catalogue lists every book by author and subject.",
    "Quarterly revenue grew by ten percent.",
    "How do I reset my password?",
)


def registered_embedding_providers(plugin: ModuleType | object) -> dict[str, EmbeddingProviderFactory]:
    """The providers a plugin module registers through the `register_embedding_providers` hook, by name."""
    manager = pluggy.PluginManager("bigrag")
    manager.add_hookspecs(hookspecs)
    manager.register(plugin)
    registered: dict[str, EmbeddingProviderFactory] = {}
    manager.hook.register_embedding_providers(register=registered.__setitem__)
    return registered


def _finite(vector: Sequence[float]) -> bool:
    return all(isinstance(x, float) and math.isfinite(x) for x in vector)


def _norm(vector: Sequence[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


class EmbeddingProviderConformance:
    """The behaviour the core relies on from an `EmbeddingProvider`."""

    pytestmark = pytest.mark.anyio
    normalised: bool = True
    atol: float = 1e-5

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def provider(self) -> EmbeddingProvider:
        raise NotImplementedError("override the `provider` fixture in your subclass")

    def check_vectors(self, provider: EmbeddingProvider, result: Embeddings, count: int) -> None:
        """`count` finite vectors of the provider's dimension, and a sane token count."""
        assert isinstance(result, Embeddings)
        assert len(result.vectors) == count
        for vector in result.vectors:
            assert isinstance(vector, list)
            assert len(vector) == provider.dimension
            assert _finite(vector), "vectors must be finite Python floats"
        assert result.tokens is None or (isinstance(result.tokens, int) and result.tokens >= 0)

    def check_unit(self, vectors: Sequence[Sequence[float]]) -> None:
        if self.normalised:
            for vector in vectors:
                assert _norm(vector) == pytest.approx(1.0, abs=1e-3)

    def assert_same(self, left: Sequence[float], right: Sequence[float]) -> None:
        assert list(left) == pytest.approx(list(right), abs=self.atol)

    async def test_declares_its_shape(self, provider: EmbeddingProvider) -> None:
        assert isinstance(provider, EmbeddingProvider)
        assert provider.name and provider.model
        assert isinstance(provider.dimension, int) and provider.dimension > 0
        assert isinstance(provider.max_batch, int) and provider.max_batch > 0

    async def test_vectors_have_the_declared_dimension_and_unit_length(self, provider: EmbeddingProvider) -> None:
        result = await provider.embed(PLAIN_TEXTS, purpose="document")
        self.check_vectors(provider, result, len(PLAIN_TEXTS))
        self.check_unit(result.vectors)

    async def test_no_texts_give_no_vectors(self, provider: EmbeddingProvider) -> None:
        result = await provider.embed([], purpose="document")
        assert result.vectors == []
        assert not result.tokens

    async def test_a_full_batch_of_max_batch_texts(self, provider: EmbeddingProvider) -> None:
        texts = [f"document number {i} about topic {i % 7}" for i in range(provider.max_batch)]
        result = await provider.embed(texts, purpose="document")
        self.check_vectors(provider, result, provider.max_batch)
        self.assert_same(result.vectors[-1], (await provider.embed([texts[-1]], purpose="document")).vectors[0])

    async def test_input_order_is_preserved(self, provider: EmbeddingProvider) -> None:
        a, b = PLAIN_TEXTS[0], PLAIN_TEXTS[1]
        forward = (await provider.embed([a, b], purpose="document")).vectors
        backward = (await provider.embed([b, a], purpose="document")).vectors
        assert forward[0] != pytest.approx(forward[1], abs=1e-3), "different texts must embed differently"
        self.assert_same(forward[0], backward[1])
        self.assert_same(forward[1], backward[0])

    async def test_query_and_document_purposes(self, provider: EmbeddingProvider) -> None:
        for purpose in ("query", "document"):
            result = await provider.embed(PLAIN_TEXTS[2:], purpose=purpose)
            self.check_vectors(provider, result, 1)
            self.check_unit(result.vectors)

    async def test_empty_string_is_finite(self, provider: EmbeddingProvider) -> None:
        result = await provider.embed(["", PLAIN_TEXTS[0]], purpose="document")
        self.check_vectors(provider, result, 2)
        self.check_unit(result.vectors[1:])

    async def test_huge_input_is_handled(self, provider: EmbeddingProvider) -> None:
        huge = "information retrieval evaluation " * 3031 + "end"
        assert len(huge) > 100_000
        result = await provider.embed([huge], purpose="document")
        self.check_vectors(provider, result, 1)
        self.check_unit(result.vectors)

    async def test_unicode_texts(self, provider: EmbeddingProvider) -> None:
        result = await provider.embed(UNICODE_TEXTS, purpose="document")
        self.check_vectors(provider, result, len(UNICODE_TEXTS))
        self.check_unit(result.vectors)

    async def test_same_input_same_vector(self, provider: EmbeddingProvider) -> None:
        first = await provider.embed(PLAIN_TEXTS, purpose="query")
        second = await provider.embed(PLAIN_TEXTS, purpose="query")
        for left, right in zip(first.vectors, second.vectors):
            self.assert_same(left, right)
