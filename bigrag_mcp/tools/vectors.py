"""vectors_upsert / vectors_delete: raw vectors the caller embedded itself."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from bigrag_mcp.gate import Gate
from bigrag_mcp.schemas import DeleteResult, UpsertResult
from bigrag_mcp.services import vectors as vector_service
from bigrag_mcp.tools import DELETE, UPSERT


def register(server: MCPServer, gate: Gate) -> None:
    rt = gate.rt

    @server.tool(annotations=UPSERT)
    async def vectors_upsert(
        collection: str,
        vectors: Annotated[
            list[dict[str, Any]],
            Field(
                min_length=1,
                max_length=1000,
                description="Records {id, vector, text?, metadata}; ids are scoped to the tenant named in metadata.",
            ),
        ],
    ) -> UpsertResult:
        """Insert or replace up to 1,000 raw vectors; they are searchable by query like document chunks."""
        return await gate.run(
            "vectors_upsert",
            {"collection": collection, "vectors": vectors},
            lambda caller, a, d: vector_service.upsert(rt, a["collection"], a["vectors"], caller=caller),
        )

    @server.tool(annotations=DELETE)
    async def vectors_delete(
        collection: str,
        ids: Annotated[list[str], Field(min_length=1, max_length=10_000)],
        tenant: Annotated[str | None, Field(description="In shared collections: whose vectors.")] = None,
    ) -> DeleteResult:
        """Delete up to 10,000 raw vectors by id."""
        return await gate.run(
            "vectors_delete",
            {"collection": collection, "ids": ids, "tenant": tenant},
            lambda caller, a, d: vector_service.delete(rt, a["collection"], a["ids"], tenant=a.get("tenant"), caller=caller),
        )
