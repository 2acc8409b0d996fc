"""Registers the "cohere" embedding provider, chat provider and reranker through the bigrag hooks (the cohere SDK
loads when one is made, not with the plugin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.types import ChatProviderFactory, EmbeddingProviderFactory, RerankerFactory

if TYPE_CHECKING:
    from bigrag_cohere.chat import CohereChat
    from bigrag_cohere.client import CohereService
    from bigrag_cohere.embeddings import CohereEmbeddings
    from bigrag_cohere.rerank import CohereReranker
    from bigrag_cohere.settings import CohereSettings


def _service() -> tuple[CohereService, CohereSettings]:
    """The SDK client and the settings, from COHERE_* variables."""
    from bigrag_cohere.client import CohereService
    from bigrag_cohere.settings import CohereSettings

    settings = CohereSettings()
    return CohereService(settings), settings


def make_embeddings(*, model: str | None, dimension: int | None) -> CohereEmbeddings:
    """Factory for the "cohere" embedding provider, configured from COHERE_* variables."""
    from bigrag_cohere.embeddings import CohereEmbeddings

    service, settings = _service()
    return CohereEmbeddings(
        service,
        model=model or settings.embedding_model,
        dimension=dimension if dimension is not None else settings.embedding_dimension,
        max_batch=settings.max_batch,
    )


def make_chat(*, model: str | None) -> CohereChat:
    """Factory for the "cohere" chat provider, configured from COHERE_* variables."""
    from bigrag_cohere.chat import CohereChat

    service, settings = _service()
    return CohereChat(service, model=model or settings.chat_model)


def make_reranker(*, model: str | None = None) -> CohereReranker:
    """Factory for the "cohere" reranker (COHERE_RERANK_MODEL, default rerank-v3.5), from COHERE_* variables."""
    from bigrag_cohere.rerank import CohereReranker

    service, settings = _service()
    return CohereReranker(service, model=model or settings.rerank_model)


@hookimpl
def register_embedding_providers(register: Callable[[str, EmbeddingProviderFactory], None]) -> None:
    register("cohere", make_embeddings)


@hookimpl
def register_chat_providers(register: Callable[[str, ChatProviderFactory], None]) -> None:
    register("cohere", make_chat)


@hookimpl
def register_rerankers(register: Callable[[str, RerankerFactory], None]) -> None:
    register("cohere", make_reranker)
