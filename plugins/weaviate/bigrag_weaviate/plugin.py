"""The pluggy entry point: registers the `weaviate` vector backend (the client library loads when one is made)."""

from __future__ import annotations

from collections.abc import Callable

from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.types import VectorBackend, VectorBackendFactory


def make_backend() -> VectorBackend:
    """Factory for the `weaviate` backend, configured from WEAVIATE_* variables."""
    from bigrag_weaviate.backend import WeaviateBackend

    return WeaviateBackend()


@hookimpl
def register_vector_backends(register: Callable[[str, VectorBackendFactory], None]) -> None:
    register("weaviate", make_backend)
