"""Configuration from BIGRAG_PGVECTOR_* environment variables (the URL falls back to BIGRAG_DATABASE_URL)."""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bigrag_mcp.errors import InvalidArgument


class PgvectorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BIGRAG_PGVECTOR_", env_file=".env", extra="ignore")

    url: str | None = Field(
        default=None,
        description="Postgres URL (postgresql:// or postgresql+asyncpg://); default BIGRAG_DATABASE_URL when that "
        "is Postgres.",
    )
    schema_name: str = Field(
        default="public", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="Schema that holds the vector tables."
    )
    pool_size: int = Field(default=5, ge=1, le=100, description="Connections kept open to the server.")
    hnsw_min_rows: int = Field(
        default=50_000, ge=0, description="Partitions with at least this many rows get an HNSW index (0: never)."
    )
    hnsw_ef_search: int = Field(
        default=400, ge=10, le=1000, description="Candidates an HNSW search visits (hnsw.ef_search; at least top_k)."
    )

    def async_url(self) -> str:
        """The SQLAlchemy asyncpg URL; InvalidArgument when no Postgres URL is configured."""
        url = self.url or os.environ.get("BIGRAG_DATABASE_URL") or ""
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
            raise InvalidArgument(
                "the pgvector backend needs BIGRAG_PGVECTOR_URL (or a Postgres BIGRAG_DATABASE_URL), "
                "e.g. postgresql://user:password@host/db"
            )
        return f"postgresql+asyncpg://{rest}"
