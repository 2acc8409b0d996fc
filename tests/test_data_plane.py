"""The data plane end to end through the SDK's in-memory client: collections, documents, vectors, query."""

from __future__ import annotations

import base64
import json

import pytest
from conftest import call, mcp_session, refused
from mcp.shared.exceptions import MCPError

from bigrag_mcp.services.keys import create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]

GUIDE = (
    "Refunds are paid within five business days.\n\n"
    "Shipping to Europe takes three days by air.\n\n"
    "Passwords must be rotated every ninety days for compliance."
)


async def test_collection_lifecycle_upload_query_delete(admin) -> None:
    created = await call(admin, "collections_create", collection="docs", chunk_size=64, chunk_overlap=0, chunk_strategy="paragraph")
    assert created["dimension"] == 384 and created["embedding_provider"] == "hash"
    up = await call(admin, "documents_upload", collection="docs", text=GUIDE, filename="guide.txt", metadata={"team": "support", "year": 2024})
    doc = up["document"]
    assert doc["chunk_count"] == 3 and not up["deduplicated"]
    other = await call(admin, "documents_upload", collection="docs", text="Rotate passwords often.", metadata={"team": "security", "year": 2020})

    found = await call(admin, "query", collection="docs", query="how fast are refunds paid", top_k=1)
    top = found["results"][0]
    assert top["id"] == f"{doc['id']}#0" and "five business days" in top["text"]
    assert top["document_filename"] == "guide.txt" and top["metadata"]["team"] == "support"
    assert GUIDE[top["char_start"] : top["char_end"]] == top["text"]

    filtered = await call(admin, "query", collection="docs", query="rotate passwords", top_k=10, filters={"team": "security"})
    assert {r["document_id"] for r in filtered["results"]} == {other["document"]["id"]}
    ranged = await call(admin, "query", collection="docs", query="passwords", top_k=10, filters={"$or": [{"year": {"$lt": 2021}}, {"team": {"$in": ["nobody"]}}]})
    assert {r["document_id"] for r in ranged["results"]} == {other["document"]["id"]}

    again = await call(admin, "documents_upload", collection="docs", text=GUIDE, metadata={"team": "support", "year": 2024})
    assert again["deduplicated"] and again["document"]["id"] == doc["id"]

    detail = await call(admin, "documents_get", collection="docs", document_id=doc["id"], chunk_limit=2)
    assert [c["chunk_index"] for c in detail["chunks"]] == [0, 1] and detail["next_chunk_offset"] == 2
    page = await call(admin, "documents_list", collection="docs", limit=1)
    assert len(page["documents"]) == 1 and page["next_cursor"]
    rest = await call(admin, "documents_list", collection="docs", limit=5, cursor=page["next_cursor"])
    assert {d["id"] for d in page["documents"] + rest["documents"]} == {doc["id"], other["document"]["id"]}

    info = await call(admin, "collections_get", collection="docs")
    assert info["document_count"] == 2 and info["vector_count"] == 4
    deleted = await call(admin, "documents_delete", collection="docs", document_id=doc["id"])
    assert deleted == {"deleted": [doc["id"]], "not_found": []}
    after = await call(admin, "query", collection="docs", query="refunds five business days", top_k=10)
    assert all(r["document_id"] != doc["id"] for r in after["results"])

    await call(admin, "collections_delete", collection="docs")
    assert (await refused(admin, "query", collection="docs", query="x")).startswith("not_found:")


async def test_metadata_schema_and_bad_input_change_nothing(admin) -> None:
    schema = {"type": "object", "properties": {"year": {"type": "integer"}}, "required": ["year"]}
    await call(admin, "collections_create", collection="strict", metadata_schema=schema)
    assert (await refused(admin, "documents_upload", collection="strict", text="x", metadata={"year": "soon"})).startswith("invalid_argument:")
    assert (await refused(admin, "documents_upload", collection="strict", text="x")).startswith("invalid_argument:")
    assert (await refused(admin, "documents_upload", collection="strict", content_base64="%%%", metadata={"year": 1})).startswith("invalid_argument:")
    assert (await refused(admin, "query", collection="strict", query="x", filters={"$where": 1})).startswith("invalid_argument:")
    assert (await refused(admin, "collections_create", collection="bad name!")).startswith("invalid_argument:")
    assert (await refused(admin, "collections_create", collection="strict")).startswith("conflict:")
    vec = [0.0] * 384
    assert (await refused(admin, "vectors_upsert", collection="strict", vectors=[{"id": "a", "vector": vec[:3], "metadata": {"year": 1}}])).startswith("invalid_argument:")
    assert (await refused(admin, "vectors_upsert", collection="strict", vectors=[{"id": "a#1", "vector": vec, "metadata": {"year": 1}}])).startswith("invalid_argument:")
    info = await call(admin, "collections_get", collection="strict")
    assert info["document_count"] == 0 and info["vector_count"] == 0
    b64 = base64.b64encode(b"<html><body><p>Hello bytes</p><script>x()</script></body></html>").decode()
    up = await call(admin, "documents_upload", collection="strict", content_base64=b64, filename="page.html", metadata={"year": 1})
    detail = await call(admin, "documents_get", collection="strict", document_id=up["document"]["id"])
    assert detail["chunks"][0]["text"] == "Hello bytes" and detail["mime_type"] == "text/html"


async def test_raw_vectors_are_searchable_and_deletable(admin) -> None:
    await call(admin, "collections_create", collection="raw", embedding_provider="hash", dimension=8)
    basis = [[1.0 if i == j else 0.0 for i in range(8)] for j in range(8)]
    await call(admin, "vectors_upsert", collection="raw", vectors=[{"id": f"v{j}", "vector": basis[j], "text": f"item {j}", "metadata": {"j": j}} for j in range(8)])
    hits = await call(admin, "query", collection="raw", query="item", top_k=8, filters={"j": {"$gte": 6}})
    assert {r["id"] for r in hits["results"]} == {"v6", "v7"} and all(r["document_id"] is None for r in hits["results"])
    gone = await call(admin, "vectors_delete", collection="raw", ids=["v6", "nope"])
    assert gone == {"deleted": ["v6"], "not_found": ["nope"]}
    hits = await call(admin, "query", collection="raw", query="item", top_k=8, filters={"j": {"$gte": 6}})
    assert [r["id"] for r in hits["results"]] == ["v7"]


async def test_upload_reports_progress_for_many_chunks(admin) -> None:
    await call(admin, "collections_create", collection="big", chunk_size=64, chunk_overlap=0)
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    text = "\n\n".join(f"Paragraph {i} talks about topic {i} in some detail." for i in range(100))
    result = await admin.call_tool("documents_upload", {"collection": "big", "text": text}, progress_callback=on_progress)
    assert not result.is_error
    chunks = result.structured_content["document"]["chunk_count"]
    assert chunks >= 32 and seen and seen[-1] == (chunks, chunks)


async def test_restart_gives_the_same_results(settings: Settings, admin_key: str, rt: Runtime) -> None:
    async with mcp_session(rt, admin_key) as client:
        await call(client, "collections_create", collection="kept")
        await call(client, "documents_upload", collection="kept", text=GUIDE, metadata={"k": 1})
        before = await call(client, "query", collection="kept", query="shipping to europe", top_k=3)
    await rt.close()
    again = await Runtime.open(settings)
    try:
        async with mcp_session(again, admin_key) as client:
            after = await call(client, "query", collection="kept", query="shipping to europe", top_k=3)
    finally:
        await again.close()
    assert [(r["id"], round(r["score"], 6)) for r in after["results"]] == [(r["id"], round(r["score"], 6)) for r in before["results"]]
    assert after["results"]


async def test_collection_resource_and_pinned_instructions(rt: Runtime, admin) -> None:
    await call(admin, "collections_create", collection="res", tenant_field="tenant_id")
    await call(admin, "collections_create", collection="other")
    await call(admin, "documents_upload", collection="res", text="hello", metadata={"tenant_id": "acme"})
    read = await admin.read_resource("bigrag://collections/res")
    body = json.loads(read.contents[0].text)  # type: ignore[union-attr]
    assert body["name"] == "res" and body["tenant_field"] == "tenant_id" and body["document_count"] == 1
    assert [r.name for r in (await admin.list_resources()).resources] == ["other", "res"]
    _, pinned = await create_key(rt.db, name="p", scopes=["collection:read"], collection="res", tenant="acme")
    _, blind = await create_key(rt.db, name="b", scopes=["query:read"])
    async with mcp_session(rt, blind) as client:  # no collection:read: no collection is listed
        assert (await client.list_resources()).resources == []
    async with mcp_session(rt, pinned) as client:
        assert [str(r.uri) for r in (await client.list_resources()).resources] == ["bigrag://collections/res"]
        assert "collection 'res'" in (client.instructions or "") and "tenant 'acme'" in (client.instructions or "")
        assert json.loads((await client.read_resource("bigrag://collections/res")).contents[0].text)["document_count"] == 1  # type: ignore[union-attr]
        with pytest.raises(MCPError, match="permission_denied"):
            await client.read_resource("bigrag://collections/other")
