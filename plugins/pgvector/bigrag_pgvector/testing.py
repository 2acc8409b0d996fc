"""A real Postgres 16 with pgvector for tests: the `pgserver` wheel's server, one per test session."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pgserver


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway server in a temporary directory, yield its postgresql:// URL, stop and delete it."""
    with tempfile.TemporaryDirectory(prefix="bigrag-pg-") as tmp:
        server = pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()
