"""The pluggy entry point: registers the `pgvector` vector backend (its driver loads when one is made)."""

from __future__ import annotations

from collections.abc import Callable

from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.types import VectorBackend, VectorBackendFactory


def make_backend() -> VectorBackend:
    """Factory for the `pgvector` backend, configured from BIGRAG_PGVECTOR_* variables."""
    from bigrag_pgvector.backend import PgvectorBackend

    return PgvectorBackend()


@hookimpl
def register_vector_backends(register: Callable[[str, VectorBackendFactory], None]) -> None:
    register("pgvector", make_backend)
