"""Fixtures: one real Postgres (pgserver) per test session, and a backend in a fresh schema per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from bigrag_pgvector import PgvectorBackend
from bigrag_pgvector.testing import fresh_backend, postgres_server


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
