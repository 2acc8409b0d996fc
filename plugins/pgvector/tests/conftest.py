"""Fixtures: one real Postgres (pgserver) per test session, and a backend in a fresh schema per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from bigrag_pgvector import PgvectorBackend, PgvectorSettings
from bigrag_pgvector.testing import postgres_server
from sqlalchemy import text


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


async def fresh_backend(url: str) -> AsyncIterator[PgvectorBackend]:
    """A backend whose tables live in a schema of their own, dropped afterwards."""
    backend = PgvectorBackend(PgvectorSettings(url=url, schema_name=f"t_{uuid.uuid4().hex[:12]}"))
    yield backend
    async with backend._engine.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA IF EXISTS {backend._schema} CASCADE"))
    await backend.close()


@pytest.fixture
async def backend(postgres_url: str) -> AsyncIterator[PgvectorBackend]:
    async for b in fresh_backend(postgres_url):
        yield b
