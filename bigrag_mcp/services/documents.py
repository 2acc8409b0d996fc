"""Documents: load → chunk → embed → store and index in one transaction; list, read and delete."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import mimetypes
import uuid
from typing import Any

import anyio
import anyio.lowlevel
import numpy as np
import numpy.typing as npt
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.chunking import TextChunk, chunk_text
from bigrag_mcp.errors import InvalidArgument, LimitExceeded, NotFound, TenantRequired
from bigrag_mcp.metadata_schema import metadata_errors
from bigrag_mcp.schemas import ChunkInfo, DeleteResult, DocumentDetail, DocumentInfo, DocumentPage, UploadResult
from bigrag_mcp.services.collections import find, load, tenant_of_row
from bigrag_mcp.services.embedding import Progress, embed_matrix
from bigrag_mcp.services.fences import check_admitted
from bigrag_mcp.services.index import IndexWrite
from bigrag_mcp.services.ledger import OPERATOR, Activity, Caller
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.services.usage import estimate_tokens
from bigrag_mcp.store.models import NO_TENANT, Chunk, Collection, Document
from bigrag_mcp.types import VectorRecord

MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
MAX_METADATA_BYTES = 64 * 1024
# An HTTP request must fit a maximal document as base64 (4 bytes per 3) plus 1 MiB for metadata and the JSON-RPC envelope.
MAX_REQUEST_BODY_BYTES = 4 * -(-MAX_DOCUMENT_BYTES // 3) + 1024 * 1024
MAX_BATCH_DELETE = 100
WRITE_SLICE = 128  # chunk rows inserted and indexed per step of a big upload


def check_metadata(collection: Collection, metadata: Any, where: str = "metadata") -> dict[str, Any]:
    """Validate metadata against the collection's schema and size limit; return it as a plain dict."""
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidArgument(f"{where} must be a JSON object")
    try:
        encoded = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{where} must be plain JSON: {exc}") from None
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        raise LimitExceeded(f"{where} is larger than {MAX_METADATA_BYTES // 1024} KB")
    if collection.metadata_schema:
        errors = metadata_errors(collection.metadata_schema, metadata)
        if errors:
            first = errors[0]
            path = "/".join(str(p) for p in first.absolute_path) or "(root)"
            raise InvalidArgument(f"{where} does not match the collection's metadata_schema at {path}: {first.message}")
    return dict(metadata)


def tenant_from_metadata(collection: Collection, metadata: dict[str, Any], where: str = "metadata") -> str | None:
    """The tenant a write belongs to: the tenant_field value, required and non-empty in tenant collections."""
    if not collection.tenant_field:
        return None
    value = metadata.get(collection.tenant_field)
    if not isinstance(value, str) or not value.strip():
        raise TenantRequired(
            f"collection {collection.name!r} is shared by tenants: {where} must carry a non-empty string "
            f"{collection.tenant_field!r}"
        )
    return value


def check_tenant_argument(collection: Collection, tenant: str | None) -> str:
    """The tenant column value a by-id call works in: required in tenant collections, refused elsewhere."""
    if collection.tenant_field:
        if not tenant:
            raise TenantRequired(f"collection {collection.name!r} is shared by tenants: pass the tenant argument")
        return tenant
    if tenant:
        raise InvalidArgument(f"collection {collection.name!r} has no tenant_field; leave the tenant argument out")
    return NO_TENANT


def document_info(collection: Collection, doc: Document) -> DocumentInfo:
    return DocumentInfo(
        id=doc.id,
        collection=collection.name,
        tenant=tenant_of_row(doc.tenant),
        filename=doc.filename,
        mime_type=doc.mime_type,
        metadata=doc.metadata_ or {},
        size_bytes=doc.size_bytes,
        char_count=doc.char_count,
        chunk_count=doc.chunk_count,
        created_at=doc.created_at,
    )


def _content(rt: Runtime, text: str | None, content_base64: str | None, filename: str | None, mime: str | None) -> tuple[bytes, str, str]:
    """The raw bytes, the mime type and the extracted text of an upload."""
    if (text is None) == (content_base64 is None):
        raise InvalidArgument("give exactly one of text or content_base64")
    if text is not None:
        data, mime = text.encode("utf-8"), mime or "text/plain"
    else:
        try:
            data = base64.b64decode(content_base64 or "", validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument("content_base64 is not valid base64") from None
        mime = mime or (mimetypes.guess_type(filename)[0] if filename else None) or "text/plain"
    if len(data) > MAX_DOCUMENT_BYTES:
        raise LimitExceeded(f"the document is larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MB")
    if text is not None:
        return data, mime, text
    loader = rt.registry.document_loaders.get(mime.split(";")[0].strip().lower())
    if loader is None:
        known = ", ".join(sorted(rt.registry.document_loaders))
        raise InvalidArgument(f"no document loader for mime type {mime!r}; supported: {known}")
    return data, mime, loader(data, filename=filename, mime_type=mime)


def _read(
    rt: Runtime, text: str | None, content_base64: str | None, filename: str | None, mime: str | None
) -> tuple[int, str, str, str]:
    """The size, SHA-256, mime type and text of an upload (run in a worker thread; the bytes are not kept)."""
    data, mime, body = _content(rt, text, content_base64, filename, mime)
    return len(data), hashlib.sha256(data).hexdigest(), mime or "text/plain", body


async def upload(
    rt: Runtime,
    collection_name: str,
    *,
    text: str | None = None,
    content_base64: str | None = None,
    filename: str | None = None,
    mime_type: str | None = None,
    metadata: dict[str, Any] | None = None,
    progress: Progress | None = None,
    caller: Caller = OPERATOR,
) -> UploadResult:
    """Load, chunk and embed in worker threads, then store and index in one transaction.

    At most `write_concurrency` writes run at a time per key and per tenant; the CPU-bound steps never run on the
    event loop, and the vectors are kept as one float32 matrix, so other tenants' calls keep flowing.
    """
    collection = await load(rt, collection_name)
    meta = await anyio.to_thread.run_sync(check_metadata, collection, metadata)
    tenant = tenant_from_metadata(collection, meta)
    async with rt.writes.hold(caller, collection.name, tenant):
        size, content_hash, mime, body = await anyio.to_thread.run_sync(_read, rt, text, content_base64, filename, mime_type)
        async with rt.db.session() as session:
            await check_admitted(session, collection.name, tenant)  # before the work; the write checks again
            existing = await _same_content(session, collection, tenant, content_hash)
        if existing is not None:
            return UploadResult(document=document_info(collection, existing), deduplicated=True, embedding_tokens=0)
        pieces = await anyio.to_thread.run_sync(
            functools.partial(
                chunk_text,
                body,
                size=collection.chunk_size,
                overlap=collection.chunk_overlap,
                strategy=collection.chunk_strategy,  # type: ignore[arg-type]
                max_chunks=rt.settings.max_chunks_per_document,
            )
        )
        if not pieces:
            raise InvalidArgument("the document has no text to index")
        char_count, texts = len(body), [p.text for p in pieces]
        del body
        provider = rt.embedder(collection.embedding_provider, collection.embedding_model, collection.dimension)
        await rt.limits.reserve_upload(caller.hold, pieces=texts, size_bytes=size, collection=collection)
        vectors, tokens = await embed_matrix(provider, texts, purpose="document", progress=progress)
        estimate = await anyio.to_thread.run_sync(estimate_tokens, texts) if tokens is None else None
        doc = Document(
            id=uuid.uuid4().hex,
            collection_id=collection.id,
            tenant=tenant or NO_TENANT,
            filename=filename,
            mime_type=mime,
            content_hash=content_hash,
            metadata_=meta,
            size_bytes=size,
            char_count=char_count,
            chunk_count=len(pieces),
            embedding_tokens=tokens or 0,
        )
        async with rt.index.writing(collection, tenant) as write:
            existing = await _same_content(write.session, collection, tenant, content_hash)
            if existing is not None:  # the same content landed while this one was being embedded
                return UploadResult(document=document_info(collection, existing), deduplicated=True, embedding_tokens=0)
            write.session.add(doc)
            await write.session.flush()
            await _store_chunks(write, doc, pieces, vectors, meta)
            await rt.ledger.record(
                write.session,
                caller,
                Activity.of(
                    "document.uploaded",
                    collection,
                    tenant=tenant,
                    resource_type="document",
                    resource_id=doc.id,
                    documents=1,
                    chunks=len(pieces),
                    storage_bytes=doc.size_bytes,
                    embedding_tokens=tokens,
                    estimated_tokens=estimate,
                    provider=collection.embedding_provider,
                    model=collection.embedding_model,
                ),
            )
    return UploadResult(document=document_info(collection, doc), deduplicated=False, embedding_tokens=tokens)


async def _store_chunks(
    write: IndexWrite, doc: Document, pieces: list[TextChunk], vectors: npt.NDArray[np.float32], meta: dict[str, Any]
) -> None:
    """Insert the chunk rows and index their vectors a slice at a time, so the event loop breathes in between."""
    for start in range(0, len(pieces), WRITE_SLICE):
        part = pieces[start : start + WRITE_SLICE]
        ids = [f"{doc.id}#{start + i}" for i in range(len(part))]
        await write.session.execute(
            insert(Chunk),
            [
                {
                    "collection_id": doc.collection_id,
                    "tenant": doc.tenant,
                    "record_id": record_id,
                    "document_id": doc.id,
                    "chunk_index": start + i,
                    "text": piece.text,
                    "metadata_": meta,
                    "char_start": piece.start,
                    "char_end": piece.end,
                    "vector": vectors[start + i].tobytes(),
                }
                for i, (record_id, piece) in enumerate(zip(ids, part))
            ],
        )
        rows = vectors[start : start + len(part)].tolist()  # plain floats, as the backend contract says, one slice at a time
        await write.upsert([VectorRecord(record_id, row, piece.text, meta) for record_id, row, piece in zip(ids, rows, part)])
        await anyio.lowlevel.checkpoint()


async def _same_content(
    session: AsyncSession, collection: Collection, tenant: str | None, content_hash: str
) -> Document | None:
    return await session.scalar(
        select(Document).where(
            Document.collection_id == collection.id,
            Document.tenant == (tenant or NO_TENANT),
            Document.content_hash == content_hash,
        )
    )


async def _document(session: AsyncSession, collection: Collection, tenant: str, document_id: str) -> Document:
    doc = await session.scalar(
        select(Document).where(
            Document.id == document_id, Document.collection_id == collection.id, Document.tenant == tenant
        )
    )
    if doc is None:
        raise NotFound(f"document {document_id!r} does not exist in collection {collection.name!r}")
    return doc


async def get(
    rt: Runtime, collection_name: str, document_id: str, *, tenant: str | None = None, chunk_offset: int = 0, chunk_limit: int = 20
) -> DocumentDetail:
    if chunk_offset < 0 or not 0 <= chunk_limit <= 200:
        raise InvalidArgument("chunk_offset must be ≥ 0 and chunk_limit between 0 and 200")
    async with rt.db.session() as session:
        collection = await find(session, collection_name)
        doc = await _document(session, collection, check_tenant_argument(collection, tenant), document_id)
        rows = await session.scalars(
            select(Chunk)
            .where(Chunk.document_id == doc.id)
            .order_by(Chunk.chunk_index)
            .offset(chunk_offset)
            .limit(chunk_limit)
        )
        chunks = [
            ChunkInfo(id=c.record_id, chunk_index=c.chunk_index or 0, text=c.text or "", char_start=c.char_start or 0, char_end=c.char_end or 0)
            for c in rows
        ]
    end = chunk_offset + len(chunks)
    return DocumentDetail(
        **document_info(collection, doc).model_dump(),
        chunks=chunks,
        next_chunk_offset=end if end < doc.chunk_count and chunks else None,
    )


async def list_page(
    rt: Runtime, collection_name: str, *, tenant: str | None = None, limit: int = 20, cursor: str | None = None
) -> DocumentPage:
    """Newest first; `cursor` is the opaque next_cursor of the previous page."""
    if not 1 <= limit <= 100:
        raise InvalidArgument("limit must be between 1 and 100")
    async with rt.db.session() as session:
        collection = await find(session, collection_name)
        query = select(Document).where(
            Document.collection_id == collection.id, Document.tenant == check_tenant_argument(collection, tenant)
        )
        if cursor:
            try:
                created, doc_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
                last = await session.scalar(select(Document.created_at).where(Document.id == doc_id))
            except (ValueError, binascii.Error, UnicodeDecodeError):
                raise InvalidArgument("cursor is not one this server returned") from None
            if last is None or last.isoformat() != created:
                raise InvalidArgument("cursor is not one this server returned, or its document was deleted")
            query = query.where((Document.created_at < last) | ((Document.created_at == last) & (Document.id < doc_id)))
        docs = list(await session.scalars(query.order_by(Document.created_at.desc(), Document.id.desc()).limit(limit + 1)))
    more = len(docs) > limit
    docs = docs[:limit]
    next_cursor = (
        base64.urlsafe_b64encode(f"{docs[-1].created_at.isoformat()}|{docs[-1].id}".encode()).decode() if more else None
    )
    return DocumentPage(documents=[document_info(collection, d) for d in docs], next_cursor=next_cursor)


async def delete_many(
    rt: Runtime, collection_name: str, document_ids: list[str], *, tenant: str | None = None, caller: Caller = OPERATOR
) -> DeleteResult:
    """Delete documents with their chunks and vectors; ids of other tenants count as not found."""
    if not document_ids:
        raise InvalidArgument("document_ids must name at least one document")
    if len(document_ids) > MAX_BATCH_DELETE:
        raise LimitExceeded(f"delete at most {MAX_BATCH_DELETE} documents a call")
    collection = await load(rt, collection_name)
    tenant_value = check_tenant_argument(collection, tenant)
    async with rt.index.writing(collection, tenant_of_row(tenant_value)) as write:
        docs = list(
            await write.session.scalars(
                select(Document).where(
                    Document.collection_id == collection.id,
                    Document.tenant == tenant_value,
                    Document.id.in_(set(document_ids)),
                )
            )
        )
        record_ids = list(
            await write.session.scalars(select(Chunk.record_id).where(Chunk.document_id.in_([d.id for d in docs])))
        )
        for doc in docs:
            await write.session.delete(doc)
            await rt.ledger.record(
                write.session,
                caller,
                Activity.of(
                    "document.deleted",
                    collection,
                    tenant=tenant_of_row(tenant_value),
                    resource_type="document",
                    resource_id=doc.id,
                    documents=-1,
                    chunks=-doc.chunk_count,
                    storage_bytes=-doc.size_bytes,
                ),
            )
        await write.session.flush()
        if record_ids:
            await write.delete(record_ids)
    found = {d.id for d in docs}
    return DeleteResult(
        deleted=[i for i in dict.fromkeys(document_ids) if i in found],
        not_found=[i for i in dict.fromkeys(document_ids) if i not in found],
    )
