"""documents_upload / list / get / delete / batch_delete."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from pydantic import Field

from bigrag_mcp.gate import Gate
from bigrag_mcp.schemas import DeleteResult, DocumentDetail, DocumentPage, UploadResult
from bigrag_mcp.services import documents
from bigrag_mcp.tools import DELETE, READ, WRITE

Collection = Annotated[str, Field(description="The collection's name.")]
Tenant = Annotated[
    str | None,
    Field(description="In shared collections: the tenant whose documents to use (a tenant-pinned key may omit it)."),
]
PROGRESS_AFTER_CHUNKS = 32


def register(server: MCPServer, gate: Gate) -> None:
    rt = gate.rt

    @server.tool(annotations=WRITE)
    async def documents_upload(
        collection: Collection,
        ctx: Context,
        text: Annotated[str | None, Field(description="The document as text.")] = None,
        content_base64: Annotated[
            str | None, Field(description="The document's bytes, base64: PDF, DOCX, XLSX, PPTX, HTML or text (typed by its bytes).")
        ] = None,
        filename: str | None = None,
        mime_type: Annotated[
            str | None, Field(description="Optional; the bytes decide the type, and a declared type that contradicts them is refused.")
        ] = None,
        metadata: Annotated[
            dict[str, Any] | None,
            Field(description="Copied onto every chunk; must match the collection's schema and carry the tenant in shared collections."),
        ] = None,
    ) -> UploadResult:
        """Upload a document: it is chunked, embedded and indexed; identical content is stored once per tenant."""

        async def progress(done: int, total: int) -> None:
            if total >= PROGRESS_AFTER_CHUNKS:
                await ctx.report_progress(done, total, f"embedded {done} of {total} chunks")

        args = {
            "collection": collection,
            "text": text,
            "content_base64": content_base64,
            "filename": filename,
            "mime_type": mime_type,
            "metadata": metadata,
        }
        return await gate.run(
            "documents_upload",
            args,
            lambda caller, a, d: documents.upload(
                rt, a.pop("collection"), progress=progress, caller=caller, **a
            ),
        )

    @server.tool(annotations=READ)
    async def documents_list(
        collection: Collection,
        tenant: Tenant = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Field(description="next_cursor of the previous page.")] = None,
    ) -> DocumentPage:
        """List documents, newest first, a page at a time."""
        return await gate.run(
            "documents_list",
            {"collection": collection, "tenant": tenant, "limit": limit, "cursor": cursor},
            lambda caller, a, d: documents.list_page(
                rt, a["collection"], tenant=a.get("tenant"), limit=a["limit"], cursor=a["cursor"]
            ),
        )

    @server.tool(annotations=READ)
    async def documents_get(
        collection: Collection,
        document_id: str,
        tenant: Tenant = None,
        chunk_offset: Annotated[int, Field(ge=0)] = 0,
        chunk_limit: Annotated[int, Field(ge=0, le=200)] = 20,
        page: Annotated[
            int | None, Field(ge=1, description="A page (slide, sheet) of a paged document: its extracted text and its chunks.")
        ] = None,
    ) -> DocumentDetail:
        """A document with a page of its chunks, or one page's extracted text with that page's chunks."""
        return await gate.run(
            "documents_get",
            {
                "collection": collection, "document_id": document_id, "tenant": tenant, "chunk_offset": chunk_offset,
                "chunk_limit": chunk_limit, "page": page,
            },
            lambda caller, a, d: documents.get(
                rt, a["collection"], a["document_id"], tenant=a.get("tenant"), chunk_offset=a["chunk_offset"],
                chunk_limit=a["chunk_limit"], page=a.get("page"),
            ),
        )

    @server.tool(annotations=DELETE)
    async def documents_delete(collection: Collection, document_id: str, tenant: Tenant = None) -> DeleteResult:
        """Delete a document with its chunks and vectors."""
        return await gate.run(
            "documents_delete",
            {"collection": collection, "document_id": document_id, "tenant": tenant},
            lambda caller, a, d: documents.delete_many(
                rt, a["collection"], [a["document_id"]], tenant=a.get("tenant"), caller=caller
            ),
        )

    @server.tool(annotations=DELETE)
    async def documents_batch_delete(
        collection: Collection,
        document_ids: Annotated[list[str], Field(min_length=1, max_length=100)],
        tenant: Tenant = None,
    ) -> DeleteResult:
        """Delete up to 100 documents in one transaction; ids that do not exist (for you) come back as not_found."""
        return await gate.run(
            "documents_batch_delete",
            {"collection": collection, "document_ids": document_ids, "tenant": tenant},
            lambda caller, a, d: documents.delete_many(
                rt, a["collection"], a["document_ids"], tenant=a.get("tenant"), caller=caller
            ),
        )
