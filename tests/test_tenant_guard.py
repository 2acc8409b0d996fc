"""The tenant guard of shared collections, for every caller, through the in-memory MCP client."""

from __future__ import annotations

import pytest
from conftest import call, refused

pytestmark = pytest.mark.anyio
VEC = [1.0, 0.0, 0.0, 0.0]


@pytest.fixture
async def shared(admin):
    await call(admin, "collections_create", collection="shared", tenant_field="tenant_id", dimension=4, embedding_provider="hash")
    docs = {}
    for tenant in ("acme", "globex"):
        up = await call(admin, "documents_upload", collection="shared", text=f"The secret plan of {tenant} is launch day.", metadata={"tenant_id": tenant})
        docs[tenant] = up["document"]["id"]
        await call(admin, "vectors_upsert", collection="shared", vectors=[{"id": "same-id", "vector": VEC, "text": f"{tenant} vector", "metadata": {"tenant_id": tenant}}])
    return docs


@pytest.mark.parametrize(
    "filters",
    [
        None,
        {"other": 1},
        {"tenant_id": {"$in": ["acme", "globex"]}},
        {"tenant_id": {"$ne": "acme"}},
        {"tenant_id": {"$nin": ["acme"]}},
        {"tenant_id": {"$gt": "a"}},
        {"$or": [{"tenant_id": "acme"}, {"x": 1}]},
        {"$not": {"tenant_id": "globex"}},
        {"$and": [{"tenant_id": "acme"}, {"tenant_id": "globex"}]},
    ],
)
async def test_query_refuses_every_form_that_does_not_pin_one_tenant(admin, shared, filters) -> None:
    args = {"collection": "shared", "query": "secret plan"}
    if filters is not None:
        args["filters"] = filters
    assert (await refused(admin, "query", **args)).startswith("tenant_required:")


@pytest.mark.parametrize("filters", [{"tenant_id": "acme"}, {"tenant_id": {"$eq": "acme"}}, {"tenant_id": {"$in": ["acme"]}}, {"$and": [{"tenant_id": "acme"}, {"x": {"$exists": False}}]}])
async def test_each_single_tenant_form_sees_only_that_tenant(admin, shared, filters) -> None:
    rows = (await call(admin, "query", collection="shared", query="secret plan vector", top_k=50, filters=filters))["results"]
    assert rows and {r["metadata"]["tenant_id"] for r in rows} == {"acme"}
    assert {r["document_id"] for r in rows if r["document_id"]} == {shared["acme"]}
    assert [r["text"] for r in rows if r["id"] == "same-id"] == ["acme vector"]


async def test_writes_need_the_tenant_in_metadata(admin, shared) -> None:
    assert (await refused(admin, "documents_upload", collection="shared", text="no tenant")).startswith("tenant_required:")
    assert (await refused(admin, "documents_upload", collection="shared", text="empty", metadata={"tenant_id": ""})).startswith("tenant_required:")
    assert (await refused(admin, "vectors_upsert", collection="shared", vectors=[{"id": "x", "vector": VEC, "metadata": {}}])).startswith("tenant_required:")


async def test_by_id_reads_and_deletes_of_another_tenant_answer_not_found(admin, shared) -> None:
    globex_doc = shared["globex"]
    assert (await refused(admin, "documents_get", collection="shared", document_id=globex_doc, tenant="acme")).startswith("not_found:")
    result = await call(admin, "documents_delete", collection="shared", document_id=globex_doc, tenant="acme")
    assert result == {"deleted": [], "not_found": [globex_doc]}
    listed = await call(admin, "documents_list", collection="shared", tenant="acme")
    assert [d["id"] for d in listed["documents"]] == [shared["acme"]]
    gone = await call(admin, "vectors_delete", collection="shared", ids=["same-id"], tenant="acme")
    assert gone["deleted"] == ["same-id"]
    globex_rows = (await call(admin, "query", collection="shared", query="vector", top_k=50, filters={"tenant_id": "globex"}))["results"]
    assert [r["text"] for r in globex_rows if r["id"] == "same-id"] == ["globex vector"]
    assert (await call(admin, "documents_get", collection="shared", document_id=globex_doc, tenant="globex"))["id"] == globex_doc
    assert (await refused(admin, "documents_list", collection="shared")).startswith("tenant_required:")


async def test_same_raw_id_in_two_tenants_is_two_vectors(admin, shared) -> None:
    await call(admin, "vectors_upsert", collection="shared", vectors=[{"id": "same-id", "vector": VEC, "text": "acme v2", "metadata": {"tenant_id": "acme"}}])
    for tenant, text in (("acme", "acme v2"), ("globex", "globex vector")):
        rows = (await call(admin, "query", collection="shared", query="v", top_k=50, filters={"tenant_id": tenant}))["results"]
        assert [r["text"] for r in rows if r["id"] == "same-id"] == [text]
