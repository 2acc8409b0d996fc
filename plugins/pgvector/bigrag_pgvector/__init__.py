"""A bigrag-mcp vector backend on Postgres with the pgvector extension."""

from typing import TYPE_CHECKING

from bigrag_mcp.plugins import exports_on_demand

if TYPE_CHECKING:
    from bigrag_pgvector.backend import PgvectorBackend
    from bigrag_pgvector.settings import PgvectorSettings

__all__ = ["PgvectorBackend", "PgvectorSettings"]
__getattr__ = exports_on_demand(__name__, {"PgvectorBackend": "backend", "PgvectorSettings": "settings"})
