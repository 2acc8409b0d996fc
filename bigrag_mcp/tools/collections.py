"""collections_create / list / get / update / delete."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from bigrag_mcp.gate import Gate
from bigrag_mcp.schemas import ChunkStrategyName, CollectionInfo, CollectionList
from bigrag_mcp.services import collections
from bigrag_mcp.tools import DELETE, READ, UPSERT, WRITE

Name = Annotated[str, Field(description="The collection's name.")]
NewName = Annotated[str, Field(description="The new collection's name: letters, digits, '_' and '-', at most 64.")]


def register(server: MCPServer, gate: Gate) -> None:
    rt = gate.rt

    @server.tool(annotations=WRITE)
    async def collections_create(
        collection: NewName,
        description: str = "",
        embedding_provider: Annotated[str | None, Field(description="Registered provider; server default if unset.")] = None,
        embedding_model: str | None = None,
        dimension: Annotated[int | None, Field(ge=1, le=8192)] = None,
        metadata_schema: Annotated[dict[str, Any] | None, Field(description="JSON Schema every document's and vector's metadata must match.")] = None,
        tenant_field: Annotated[str | None, Field(description="Metadata field naming the tenant: makes this a shared, tenant-guarded collection.")] = None,
        chunk_size: Annotated[int, Field(ge=64, le=10_000)] = collections.DEFAULT_CHUNK_SIZE,
        chunk_overlap: Annotated[int, Field(ge=0)] = collections.DEFAULT_CHUNK_OVERLAP,
        chunk_strategy: ChunkStrategyName = "recursive",
        language: Annotated[str, Field(max_length=32, description="Keyword search language (Snowball stemmer and stop words), fixed at creation.")] = "english",
    ) -> CollectionInfo:
        """Create a collection with its embedding, metadata schema, tenant field, chunking and keyword language."""
        args = {
            "collection": collection,
            "description": description,
            "embedding_provider": embedding_provider,
            "embedding_model": embedding_model,
            "dimension": dimension,
            "metadata_schema": metadata_schema,
            "tenant_field": tenant_field,
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
            "chunk_strategy": chunk_strategy,
            "language": language,
        }
        return await gate.run(
            "collections_create", args, lambda caller, a, d: collections.create(rt, name=a.pop("collection"), caller=caller, **a)
        )

    @server.tool(annotations=READ)
    async def collections_list(
        limit: Annotated[int, Field(ge=1, le=collections.MAX_PAGE)] = 100,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page.")] = None,
    ) -> CollectionList:
        """List collections by name, a page at a time (refused to keys pinned to one collection: they know theirs)."""
        return await gate.run(
            "collections_list",
            {"limit": limit, "cursor": cursor},
            lambda caller, a, d: collections.list_page(rt, limit=a["limit"], cursor=a["cursor"]),
        )

    @server.tool(annotations=READ)
    async def collections_get(collection: Name) -> CollectionInfo:
        """A collection's settings with its document and vector counts (of your tenant, in shared collections)."""
        return await gate.run(
            "collections_get",
            {"collection": collection},
            lambda caller, a, d: collections.get(rt, a["collection"], tenant=caller.tenant),
        )

    @server.tool(annotations=UPSERT)
    async def collections_update(
        collection: Name,
        description: str | None = None,
        metadata_schema: dict[str, Any] | None = None,
        chunk_size: Annotated[int | None, Field(ge=64, le=10_000)] = None,
        chunk_overlap: Annotated[int | None, Field(ge=0)] = None,
        chunk_strategy: ChunkStrategyName | None = None,
    ) -> CollectionInfo:
        """Change settings that apply to future uploads; embedding settings and tenant_field stay as created."""
        args = {
            "collection": collection,
            "description": description,
            "metadata_schema": metadata_schema,
            "chunk_size": chunk_size,
            "chunk_overlap": chunk_overlap,
            "chunk_strategy": chunk_strategy,
        }
        return await gate.run(
            "collections_update",
            args,
            lambda caller, a, d: collections.update(rt, a.pop("collection"), caller=caller, **a),
        )

    @server.tool(annotations=DELETE)
    async def collections_delete(collection: Name) -> CollectionInfo:
        """Delete a collection with every document, chunk and vector in it."""
        return await gate.run(
            "collections_delete", {"collection": collection}, lambda caller, a, d: collections.delete(rt, a["collection"], caller=caller)
        )

