"""Two processes on one store (a server and the operator's CLI): the in-memory index follows the other's writes."""

from __future__ import annotations

import pytest

from bigrag_mcp.services import collections, documents, search, vectors
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings

pytestmark = pytest.mark.anyio
VEC = [1.0, 0.0, 0.0, 0.0]


async def ids(rt: Runtime, collection: str, query: str, filters: dict[str, str] | None = None) -> list[str]:
    return [r.id for r in (await search.search(rt, collection, query, top_k=50, filters=filters)).results]


async def test_a_loaded_partition_refills_after_another_process_writes(settings: Settings) -> None:
    server, cli = await Runtime.open(settings), await Runtime.open(settings)
    try:
        await collections.create(server, name="notes", tenant_field="tenant_id", dimension=4)
        first = await documents.upload(server, "notes", text="alpha beta", metadata={"tenant_id": "acme"})
        assert await ids(server, "notes", "alpha", {"tenant_id": "acme"}) == [f"{first.document.id}#0"]  # loaded now

        second = await documents.upload(cli, "notes", text="alpha gamma", metadata={"tenant_id": "acme"})
        await vectors.upsert(cli, "notes", [{"id": "raw", "vector": VEC, "text": "raw", "metadata": {"tenant_id": "acme"}}])
        seen = await ids(server, "notes", "alpha", {"tenant_id": "acme"})
        assert set(seen) == {f"{first.document.id}#0", f"{second.document.id}#0", "raw"}

        await documents.delete_many(cli, "notes", [first.document.id], tenant="acme")
        await vectors.upsert(cli, "notes", [{"id": "raw", "vector": [0.0, 1.0, 0.0, 0.0], "text": "moved", "metadata": {"tenant_id": "acme"}}])
        rows = (await search.search(server, "notes", "alpha", top_k=50, filters={"tenant_id": "acme"})).results
        assert {r.id for r in rows} == {f"{second.document.id}#0", "raw"}
        assert [r.text for r in rows if r.id == "raw"] == ["moved"]

        await documents.upload(server, "notes", text="delta", metadata={"tenant_id": "acme"})  # the server's own write
        assert len(await ids(cli, "notes", "delta", {"tenant_id": "acme"})) == 3  # and the CLI sees it too
    finally:
        await cli.close()
        await server.close()
