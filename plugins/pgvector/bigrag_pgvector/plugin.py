"""The pluggy entry point: registers the `pgvector` vector backend."""

from __future__ import annotations

from collections.abc import Callable

from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.types import VectorBackendFactory
from bigrag_pgvector.backend import PgvectorBackend


@hookimpl
def register_vector_backends(register: Callable[[str, VectorBackendFactory], None]) -> None:
    register("pgvector", PgvectorBackend)
