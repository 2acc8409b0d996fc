"""The pluggy entry point: registers the `weaviate` vector backend."""

from __future__ import annotations

from collections.abc import Callable

from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.types import VectorBackendFactory
from bigrag_weaviate.backend import WeaviateBackend


@hookimpl
def register_vector_backends(register: Callable[[str, VectorBackendFactory], None]) -> None:
    register("weaviate", WeaviateBackend)
