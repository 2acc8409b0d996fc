"""Fixtures: one real Postgres (pgserver) per test session, and a backend in a fresh schema per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from bigrag_pgvector import PgvectorBackend, PgvectorSettings
from bigrag_pgvector.testing import fresh_backend, fresh_database, postgres_server

from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture
async def backend(postgres_url: str) -> AsyncIterator[PgvectorBackend]:
    async for b in fresh_backend(postgres_url):
        yield b


@pytest.fixture
async def store_url(postgres_url: str) -> AsyncIterator[str]:
    """The postgresql:// URL of a fresh database on the test server."""
    async for url in fresh_database(postgres_url):
        yield url


@pytest.fixture
async def shared_rt(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Runtime]:
    """A runtime whose store and pgvector index live in one fresh Postgres database."""
    monkeypatch.setenv("BIGRAG_PGVECTOR_URL", store_url)
    monkeypatch.delenv("BIGRAG_PGVECTOR_SCHEMA_NAME", raising=False)
    settings = Settings(  # type: ignore[call-arg]
        data_dir=tmp_path / "data",
        database_url=PgvectorSettings(url=store_url).async_url(),
        embedding_provider="hash",
        vector_backend="pgvector",
        load_plugins="pgvector",
        _env_file=None,
    )
    runtime = await Runtime.open(settings)
    yield runtime
    await runtime.close()
