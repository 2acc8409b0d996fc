"""The plugin contract: each hook receives a `register` callback and calls it once per thing it offers."""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from bigrag_mcp.types import (
    BillingExporterFactory,
    ChatProviderFactory,
    DocumentLoader,
    EmbeddingProviderFactory,
    RerankerFactory,
    VectorBackendFactory,
)

hookspec = pluggy.HookspecMarker("bigrag")
hookimpl = pluggy.HookimplMarker("bigrag")


@hookspec
def register_embedding_providers(register: Callable[[str, EmbeddingProviderFactory], None]) -> None:
    """Call register(name, factory) for each embedding provider this plugin offers."""


@hookspec
def register_vector_backends(register: Callable[[str, VectorBackendFactory], None]) -> None:
    """Call register(name, factory) for each vector backend this plugin offers."""


@hookspec
def register_chat_providers(register: Callable[[str, ChatProviderFactory], None]) -> None:
    """Call register(name, factory) for each chat provider this plugin offers."""


@hookspec
def register_rerankers(register: Callable[[str, RerankerFactory], None]) -> None:
    """Call register(name, factory) for each reranker (reorders retrieved chunks by relevance) this plugin offers."""


@hookspec
def register_billing_exporters(register: Callable[[str, BillingExporterFactory], None]) -> None:
    """Call register(name, factory) for each billing exporter this plugin offers."""


@hookspec
def register_document_loaders(register: Callable[[str, DocumentLoader], None]) -> None:
    """Call register(mime_type, loader) for each document type this plugin can turn into text."""
