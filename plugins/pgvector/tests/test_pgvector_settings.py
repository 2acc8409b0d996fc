"""The URL falls back to a Postgres BIGRAG_DATABASE_URL, the entry point registers the backend, and a server
that cannot be reached is `unavailable`."""

from __future__ import annotations

import socket

import pytest
from bigrag_pgvector import PgvectorBackend, PgvectorSettings

from bigrag_mcp.errors import InvalidArgument, Unavailable
from bigrag_mcp.plugins import build_registry, plugin_manager
from bigrag_mcp.types import Partition, SearchRequest, VectorBackend, VectorRecord

pytestmark = pytest.mark.anyio


def test_url_defaults_to_a_postgres_store_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIGRAG_PGVECTOR_URL", raising=False)
    monkeypatch.setenv("BIGRAG_DATABASE_URL", "postgresql+asyncpg://u:p@db.internal:5432/bigrag")
    assert PgvectorSettings().async_url() == "postgresql+asyncpg://u:p@db.internal:5432/bigrag"
    monkeypatch.setenv("BIGRAG_PGVECTOR_URL", "postgresql://v@vectors/idx")
    assert PgvectorSettings().async_url() == "postgresql+asyncpg://v@vectors/idx"


def test_a_sqlite_store_without_a_pgvector_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BIGRAG_PGVECTOR_URL", raising=False)
    monkeypatch.setenv("BIGRAG_DATABASE_URL", "sqlite+aiosqlite:///bigrag.db")
    with pytest.raises(InvalidArgument, match="BIGRAG_PGVECTOR_URL"):
        PgvectorBackend()


async def test_registered_through_the_entry_point(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIGRAG_PGVECTOR_URL", postgres_url)
    monkeypatch.setenv("BIGRAG_PGVECTOR_SCHEMA_NAME", "entry_point_test")
    backend = build_registry(plugin_manager(load_plugins="pgvector")).vector_backend("pgvector")()
    try:
        assert isinstance(backend, PgvectorBackend) and isinstance(backend, VectorBackend)
        await backend.upsert(Partition("docs", "t1"), [VectorRecord("a", [1.0, 0.0])])
        hits = await backend.search(Partition("docs", "t1"), SearchRequest(top_k=1, vector=[1.0, 0.0]))
        assert [h.id for h in hits] == ["a"]
        await backend.drop("docs")
    finally:
        await backend.close()


async def test_an_unreachable_server_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connections are refused
        backend = PgvectorBackend(PgvectorSettings(url=f"postgresql://u@127.0.0.1:{port}/db"))
        with pytest.raises(Unavailable):
            await backend.search(Partition("docs", "t1"), SearchRequest(top_k=1, vector=[1.0, 0.0]))
        await backend.close()
