"""A bigrag-mcp vector backend on Postgres with the pgvector extension."""

from bigrag_pgvector.backend import PgvectorBackend
from bigrag_pgvector.settings import PgvectorSettings

__all__ = ["PgvectorBackend", "PgvectorSettings"]
