"""Registers the "openai" embedding and chat providers through the bigrag hooks (the HTTP client loads when a
provider is made, not with the plugin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.types import ChatProviderFactory, EmbeddingProviderFactory

if TYPE_CHECKING:
    from bigrag_openai.chat import OpenAIChat
    from bigrag_openai.embeddings import OpenAIEmbeddings


def make_embeddings(*, model: str | None, dimension: int | None) -> OpenAIEmbeddings:
    """Factory for the "openai" embedding provider, configured from OPENAI_* variables."""
    from bigrag_openai.client import OpenAIClient
    from bigrag_openai.embeddings import OpenAIEmbeddings
    from bigrag_openai.settings import OpenAISettings

    settings = OpenAISettings()
    return OpenAIEmbeddings(
        OpenAIClient(settings),
        settings,
        model=model or settings.embedding_model,
        dimension=dimension if dimension is not None else settings.embedding_dimension,
    )


def make_chat(*, model: str | None) -> OpenAIChat:
    """Factory for the "openai" chat provider, configured from OPENAI_* variables."""
    from bigrag_openai.chat import OpenAIChat
    from bigrag_openai.client import OpenAIClient
    from bigrag_openai.settings import OpenAISettings

    settings = OpenAISettings()
    return OpenAIChat(OpenAIClient(settings), model=model or settings.chat_model)


@hookimpl
def register_embedding_providers(register: Callable[[str, EmbeddingProviderFactory], None]) -> None:
    register("openai", make_embeddings)


@hookimpl
def register_chat_providers(register: Callable[[str, ChatProviderFactory], None]) -> None:
    register("openai", make_chat)
