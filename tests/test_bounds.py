"""Bounds a tenant cannot push past: chunk overlap, chunks per document, and request body vs document size."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from conftest import call, http_session, mcp_session, refused
from sqlalchemy import func, select

from bigrag_mcp.chunking import chunk_text
from bigrag_mcp.errors import LimitExceeded
from bigrag_mcp.services.documents import MAX_DOCUMENT_BYTES
from bigrag_mcp.services.keys import create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings
from bigrag_mcp.store.models import Chunk, Document

pytestmark = pytest.mark.anyio


async def test_chunk_overlap_is_at_most_half_the_chunk_size(admin) -> None:
    text = await refused(admin, "collections_create", collection="c", chunk_size=400, chunk_overlap=399)
    assert text.startswith("invalid_argument") and "half of chunk_size (200 for chunk_size 400)" in text
    assert (await refused(admin, "collections_get", collection="c")).startswith("not_found")
    await call(admin, "collections_create", collection="c", chunk_size=400, chunk_overlap=200)
    assert (await refused(admin, "collections_update", collection="c", chunk_overlap=201)).startswith("invalid_argument")
    assert (await refused(admin, "collections_update", collection="c", chunk_size=300)).startswith("invalid_argument")
    assert (await call(admin, "collections_get", collection="c"))["chunk_overlap"] == 200  # nothing changed


def test_chunking_stops_at_the_bound() -> None:
    text = "word " * 2000
    unbounded = chunk_text(text, size=64, overlap=0, strategy="recursive")
    assert chunk_text(text, size=64, overlap=0, strategy="recursive", max_chunks=len(unbounded)) == unbounded
    with pytest.raises(LimitExceeded, match=f"more than {len(unbounded) - 1} chunks"):
        chunk_text(text, size=64, overlap=0, strategy="recursive", max_chunks=len(unbounded) - 1)


@pytest.fixture
async def bounded(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = await Runtime.open(settings.model_copy(update={"max_chunks_per_document": 10}))
    yield runtime
    await runtime.close()


async def test_an_upload_needing_too_many_chunks_is_refused_and_stores_nothing(bounded: Runtime) -> None:
    _, key = await create_key(bounded.db, name="admin", scopes=["*:*"])
    async with mcp_session(bounded, key) as admin:
        await call(admin, "collections_create", collection="c", chunk_size=64, chunk_overlap=32)
        text = await refused(admin, "documents_upload", collection="c", text="lorem ipsum dolor " * 60)
        assert text.startswith("limit_exceeded") and "more than 10 chunks" in text
        assert (await call(admin, "documents_upload", collection="c", text="lorem ipsum dolor " * 8))["document"]["chunk_count"] <= 10
    async with bounded.db.session() as s:
        assert await s.scalar(select(func.count()).select_from(Document)) == 1
        assert await s.scalar(select(func.count()).select_from(Chunk)) <= 10


async def test_a_maximal_document_fits_through_the_http_body_limit(rt: Runtime, admin_key: str, http_server) -> None:
    url = http_server("streamable-http")
    maximal = base64.b64encode(b"x" * MAX_DOCUMENT_BYTES).decode()
    async with http_session(url, admin_key, timeout=300) as admin:
        await call(admin, "collections_create", collection="big", chunk_size=10_000, chunk_overlap=0)
        done = await call(admin, "documents_upload", collection="big", content_base64=maximal, filename="big.txt")
        assert done["document"]["size_bytes"] == MAX_DOCUMENT_BYTES and done["document"]["chunk_count"] == 2098
        over = base64.b64encode(b"y" * (MAX_DOCUMENT_BYTES + 1)).decode()
        text = await refused(admin, "documents_upload", collection="big", content_base64=over, filename="big.txt")
        assert text.startswith("limit_exceeded: the document is larger than 20 MB")
