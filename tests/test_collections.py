"""collections_list pages: by name, a cursor at a time, bad cursors refused."""

from __future__ import annotations

import pytest
from conftest import call, refused
from mcp import Client

from bigrag_mcp.services import collections
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
