"""A real Postgres 16 with pgvector for tests: the `pgserver` wheel's server, one per test session."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pgserver
from sqlalchemy import make_url, text

from bigrag_mcp.testing.replicas import fresh_postgres_database
from bigrag_pgvector.backend import PgvectorBackend
from bigrag_pgvector.settings import PgvectorSettings


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway server in a temporary directory, yield its postgresql:// URL, stop and delete it."""
    with tempfile.TemporaryDirectory(prefix="bigrag-pg-") as tmp:
        server = pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


async def fresh_backend(url: str) -> AsyncIterator[PgvectorBackend]:
    """A backend whose tables live in a schema of their own, dropped afterwards."""
    backend = PgvectorBackend(PgvectorSettings(url=url, schema_name=f"t_{uuid.uuid4().hex[:12]}"))
    yield backend
    async with backend._engine.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA IF EXISTS {backend._schema} CASCADE"))
    await backend.close()


async def fresh_database(url: str) -> AsyncIterator[str]:
    """A new empty database on the server of `url` (its postgresql:// URL), dropped afterwards."""
    async with fresh_postgres_database(url) as database_url:
        yield make_url(database_url).set(drivername=make_url(url).drivername).render_as_string(hide_password=False)
