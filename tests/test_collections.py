"""The collections_* tools: one argument name for the collection, pins on create, and collections_list paging."""

from __future__ import annotations

import pytest
from conftest import call, mcp_session, refused
from mcp import Client

from bigrag_mcp.policy import OPERATIONS
from bigrag_mcp.services import collections
from bigrag_mcp.services.keys import create_key
from bigrag_mcp.services.runtime import Runtime

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]


async def test_collections_list_pages_through_every_collection_once_in_name_order(rt: Runtime, admin: Client) -> None:
    names = ["b-notes", "a-docs", "e-wiki", "c-faq", "d-logs"]
    for name in names:
        await collections.create(rt, name=name)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await call(admin, "collections_list", limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [c["name"] for c in page["collections"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(names) and pages == 3
    whole = await call(admin, "collections_list")
    assert [c["name"] for c in whole["collections"]] == sorted(names) and whole["next_cursor"] is None


async def test_a_cursor_the_server_did_not_make_is_an_invalid_argument(rt: Runtime, admin: Client) -> None:
    await collections.create(rt, name="docs")
    for cursor in ("%%%", "Li4v"):  # not base64; base64 of "../", not a collection name
        assert (await refused(admin, "collections_list", cursor=cursor)).startswith("invalid_argument")
    with pytest.raises(Exception, match="invalid_argument"):
        await collections.list_page(rt, limit=0)


async def test_every_collections_tool_names_its_collection_collection(admin: Client) -> None:
    schemas = {t.name: t.input_schema for t in (await admin.list_tools()).tools if t.name.startswith("collections_")}
    assert set(schemas) == {op for op in OPERATIONS if op.startswith("collections_")}
    for tool, schema in schemas.items():
        if tool == "collections_list":  # spans collections: names none
            assert "collection" not in schema["properties"]
            continue
        assert "collection" in schema["required"] and "name" not in schema["properties"], tool
    text = await refused(admin, "collections_create", name="docs")
    assert text.startswith("invalid_argument: unknown argument 'name'; collections_create takes ") and "collection" in text
    assert await refused(admin, "collections_create") == "invalid_argument: collection is required"
    assert (await refused(admin, "collections_create", collection="bad name!")).startswith("invalid_argument: collection 'bad name!' must match")
    created = await call(admin, "collections_create", collection="docs")
    assert created["name"] == "docs" and (await call(admin, "collections_get", collection="docs"))["name"] == "docs"


async def test_a_key_pinned_to_a_collection_cannot_create_another(rt: Runtime, admin: Client) -> None:
    await call(admin, "collections_create", collection="tenant_acme")
    _, pinned = await create_key(rt.db, name="acme", scopes=["collection:*", "document:*", "query:read"], collection="tenant_acme")
    async with mcp_session(rt, pinned) as client:
        assert "collections_create" not in {t.name for t in (await client.list_tools()).tools}
        for name in ("tenant_globex", "tenant_acme"):
            text = await refused(client, "collections_create", collection=name)
            assert text == "permission_denied: This API key cannot use cross-collection operations."
        assert (await call(client, "collections_get", collection="tenant_acme"))["name"] == "tenant_acme"
    assert [c["name"] for c in (await call(admin, "collections_list"))["collections"]] == ["tenant_acme"]
