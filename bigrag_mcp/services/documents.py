"""Documents: load → chunk → embed → store and index in one transaction (one or many at a time); list, read, delete."""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from jsonschema import Draft202012Validator
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.chunking import TextChunk, chunk_text
from bigrag_mcp.errors import BigRagError, InvalidArgument, LimitExceeded, NotFound, TenantRequired
from bigrag_mcp.loading import extract, resolve_type
from bigrag_mcp.loading.sniff import is_text_type, normalise
from bigrag_mcp.schemas import (
    ChunkInfo,
    DeleteResult,
    DocumentDetail,
    DocumentInfo,
    DocumentPage,
    PageInfo,
    UploadResult,
)
from bigrag_mcp.services.collections import find, load, tenant_of_row
from bigrag_mcp.services.embedding import Progress, embed_all
from bigrag_mcp.services.index import vector_bytes
from bigrag_mcp.services.ledger import OPERATOR, Activity, Caller
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.store.models import NO_TENANT, Chunk, Collection, Document, PageText, utcnow
from bigrag_mcp.types import Extracted, VectorRecord

MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_BATCH_DELETE = 100


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
        errors = sorted(Draft202012Validator(collection.metadata_schema).iter_errors(metadata), key=str)
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


@dataclass(frozen=True)
class Upload:
    """One document to upload: `text`, or its bytes (`data`, or base64 in `content_base64`), with name, type, metadata."""

    text: str | None = None
    content_base64: str | None = None
    data: bytes | None = None
    filename: str | None = None
    mime_type: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass
class _Admitted:
    """An upload whose metadata, tenant, size and type were checked: what is known before loading it."""

    tenant: str | None
    meta: dict[str, Any]
    data: bytes
    mime: str
    content_hash: str
    item: Upload


@dataclass
class _Ready:
    """A document loaded and chunked: its row, the chunks' pieces and pages, waiting for vectors."""

    doc: Document
    tenant: str | None
    pieces: list[TextChunk]
    pages: list[int | None]
    page_rows: list[PageText]


def _bytes_of(item: Upload) -> bytes:
    if sum(x is not None for x in (item.text, item.content_base64, item.data)) != 1:
        raise InvalidArgument("give exactly one of text or content_base64")
    if item.text is not None:
        return item.text.encode("utf-8")
    if item.data is not None:
        return item.data
    try:
        return base64.b64decode(item.content_base64 or "", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument("content_base64 is not valid base64") from None


def _admit(collection: Collection, item: Upload) -> _Admitted:
    """Check an upload's metadata, tenant, size and type (from its bytes), without loading it."""
    meta = check_metadata(collection, item.metadata)
    tenant = tenant_from_metadata(collection, meta)
    data = _bytes_of(item)
    if len(data) > MAX_DOCUMENT_BYTES:
        raise LimitExceeded(f"the document is larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MB")
    if item.text is not None:
        mime = normalise(item.mime_type) or "text/plain"
        if not is_text_type(mime):
            raise InvalidArgument(f"text was given but mime_type says {mime}; send its bytes as content_base64")
    else:
        mime = resolve_type(data, item.mime_type, item.filename)
    return _Admitted(tenant, meta, data, mime, hashlib.sha256(data).hexdigest(), item)


def _chunked(collection: Collection, found: Extracted) -> tuple[list[TextChunk], list[int | None]]:
    pieces = chunk_text(
        found.text, size=collection.chunk_size, overlap=collection.chunk_overlap, strategy=collection.chunk_strategy  # type: ignore[arg-type]
    )
    starts = found.page_starts
    return pieces, [bisect.bisect_right(starts, p.start) if starts else None for p in pieces]


def _page_rows(doc_id: str, found: Extracted) -> list[PageText]:
    """Each page's text: from its start to the next page's, without the whitespace that separates them."""
    ends = [*found.page_starts[1:], len(found.text)]
    rows = []
    for i, (start, end) in enumerate(zip(found.page_starts, ends)):
        text = found.text[start:end].rstrip()
        rows.append(PageText(document_id=doc_id, page=i + 1, char_start=start, char_end=start + len(text), text=text))
    return rows


async def _prepare(rt: Runtime, collection: Collection, admitted: _Admitted) -> _Ready:
    """Load (off the event loop, bounded) and chunk an admitted upload."""
    item = admitted.item
    if item.text is not None:
        found = Extracted(item.text)
    else:
        found = await extract(
            rt.registry.document_loaders, admitted.data, mime=admitted.mime, filename=item.filename, bounds=rt.loader_bounds
        )
    pieces, pages = await anyio.to_thread.run_sync(_chunked, collection, found)
    if not pieces:
        raise InvalidArgument("the document has no text to index")
    doc = Document(
        id=uuid.uuid4().hex,
        collection_id=collection.id,
        tenant=admitted.tenant or NO_TENANT,
        filename=item.filename,
        mime_type=admitted.mime,
        content_hash=admitted.content_hash,
        metadata_=admitted.meta,
        size_bytes=len(admitted.data),
        char_count=len(found.text),
        chunk_count=len(pieces),
        embedding_tokens=0,
        created_at=utcnow(),
    )
    return _Ready(doc, admitted.tenant, pieces, pages, _page_rows(doc.id, found))


async def _existing(
    session: AsyncSession, collection: Collection, tenant: str | None, hashes: Iterable[str]
) -> dict[str, Document]:
    """Documents of the partition already holding any of these contents, by content hash."""
    rows = await session.scalars(
        select(Document).where(
            Document.collection_id == collection.id,
            Document.tenant == (tenant or NO_TENANT),
            Document.content_hash.in_(set(hashes)),
        )
    )
    return {d.content_hash: d for d in rows}


async def _write(
    rt: Runtime,
    collection: Collection,
    tenant: str | None,
    ready: Sequence[_Ready],
    vectors: Sequence[Sequence[list[float]]],
    tokens: Sequence[int | None],
    caller: Caller,
) -> list[UploadResult]:
    """Store and index documents of one partition in one transaction; content that landed meanwhile deduplicates."""
    results: list[UploadResult | None] = [None] * len(ready)
    records: list[VectorRecord] = []
    async with rt.index.writing(collection, tenant) as write:
        landed = await _existing(write.session, collection, tenant, (r.doc.content_hash for r in ready))
        fresh = []
        for n, one in enumerate(ready):
            if one.doc.content_hash in landed:  # the same content landed while this one was being embedded
                results[n] = UploadResult(
                    document=document_info(collection, landed[one.doc.content_hash]), deduplicated=True, embedding_tokens=0
                )
            else:
                landed[one.doc.content_hash] = one.doc
                one.doc.embedding_tokens = tokens[n] or 0
                fresh.append(n)
        write.session.add_all([ready[n].doc for n in fresh])
        await write.session.flush()  # documents first: chunks and pages refer to them
        activities, chunk_rows, page_rows = [], [], []
        for n in fresh:
            one, doc = ready[n], ready[n].doc
            page_rows.extend(one.page_rows)
            for i, (piece, page, vector) in enumerate(zip(one.pieces, one.pages, vectors[n])):
                record_id = f"{doc.id}#{i}"
                chunk_rows.append(
                    {
                        "collection_id": collection.id, "tenant": doc.tenant, "record_id": record_id, "document_id": doc.id,
                        "chunk_index": i, "text": piece.text, "metadata_": doc.metadata_, "char_start": piece.start,
                        "char_end": piece.end, "page": page, "vector": vector_bytes(vector), "created_at": doc.created_at,
                    }
                )
                records.append(VectorRecord(record_id, vector, piece.text, doc.metadata_))
            activities.append(
                Activity.of(
                    "document.uploaded", collection, tenant=tenant, resource_type="document", resource_id=doc.id,
                    documents=1, chunks=len(one.pieces), storage_bytes=doc.size_bytes, embedding_tokens=tokens[n],
                    provider=collection.embedding_provider, model=collection.embedding_model,
                    texts=[p.text for p in one.pieces],
                )
            )
            results[n] = UploadResult(document=document_info(collection, doc), deduplicated=False, embedding_tokens=tokens[n])
        if chunk_rows:  # one executemany, no per-row RETURNING: chunk ids are never read back here
            await write.session.execute(insert(Chunk), chunk_rows)
        write.session.add_all(page_rows)
        await write.session.flush()
        await rt.ledger.record_many(write.session, caller, activities)
        if records:
            await write.upsert(records)
    return [r for r in results if r is not None]


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
    collection = await load(rt, collection_name)
    admitted = _admit(collection, Upload(text, content_base64, None, filename, mime_type, metadata))
    async with rt.db.session() as session:
        existing = await _existing(session, collection, admitted.tenant, [admitted.content_hash])
    if existing:
        return UploadResult(document=document_info(collection, existing[admitted.content_hash]), deduplicated=True, embedding_tokens=0)
    ready = await _prepare(rt, collection, admitted)
    provider = rt.embedder(collection.embedding_provider, collection.embedding_model, collection.dimension)
    vectors, tokens = await embed_all(provider, [p.text for p in ready.pieces], purpose="document", progress=progress)
    return (await _write(rt, collection, admitted.tenant, [ready], [vectors], [tokens], caller))[0]


@dataclass(frozen=True)
class Outcome:
    """What became of item `index` of a batch: its result, or the error that refused it (nothing of it written)."""

    index: int
    result: UploadResult | None = None
    error: BigRagError | None = None


_Embedded = tuple[int, _Ready, list[list[float]], int | None]  # item index, document, its vectors, its tokens
GROUP_DOCUMENTS = 256  # documents loaded, embedded and written together at most
GROUP_BYTES = 4 << 20  # ... and their bytes


def _apportion(total: int | None, weights: Sequence[int]) -> list[int | None]:
    """Split a batch's reported token count over its documents by their share of the text."""
    if total is None:
        return [None] * len(weights)
    whole = sum(weights) or 1
    shares = [total * w // whole for w in weights]
    if shares:
        shares[-1] += total - sum(shares)
    return list(shares)


def _groups(items: Iterable[Upload]) -> Iterator[list[tuple[int, Upload]]]:
    group: list[tuple[int, Upload]] = []
    size = 0
    for index, item in enumerate(items):
        group.append((index, item))
        size += len(item.data or item.text or item.content_base64 or "")
        if len(group) >= GROUP_DOCUMENTS or size >= GROUP_BYTES:
            yield group
            group, size = [], 0
    if group:
        yield group


async def upload_many(
    rt: Runtime,
    collection_name: str,
    items: Iterable[Upload],
    *,
    caller: Caller = OPERATOR,
    on_outcome: Callable[[Outcome], Awaitable[None]] | None = None,
) -> list[Outcome]:
    """Upload many documents: embedded in full provider batches across documents, written many per transaction,
    the next group loading and embedding while the previous one is written. A bad item fails alone."""
    collection = await load(rt, collection_name)
    provider = rt.embedder(collection.embedding_provider, collection.embedding_model, collection.dimension)
    outcomes: list[Outcome] = []

    async def report(outcome: Outcome) -> None:
        outcomes.append(outcome)
        if on_outcome is not None:
            await on_outcome(outcome)

    async def embedded(group: list[tuple[int, Upload]]) -> list[_Embedded]:
        admitted: list[tuple[int, _Admitted]] = []
        for index, item in group:
            try:
                admitted.append((index, _admit(collection, item)))
            except BigRagError as exc:
                await report(Outcome(index, error=exc))
        async with rt.db.session() as session:
            known: dict[tuple[str | None, str], Document] = {}
            for tenant in {a.tenant for _, a in admitted}:
                hashes = [a.content_hash for _, a in admitted if a.tenant == tenant]
                known.update(((tenant, h), d) for h, d in (await _existing(session, collection, tenant, hashes)).items())
        ready: list[tuple[int, _Ready]] = []
        for index, one in admitted:
            if (one.tenant, one.content_hash) in known:
                document = document_info(collection, known[(one.tenant, one.content_hash)])
                await report(Outcome(index, UploadResult(document=document, deduplicated=True, embedding_tokens=0)))
                continue
            try:
                ready.append((index, await _prepare(rt, collection, one)))
            except BigRagError as exc:
                await report(Outcome(index, error=exc))
        texts = [p.text for _, r in ready for p in r.pieces]
        try:
            vectors, tokens = await embed_all(provider, texts, purpose="document")
        except BigRagError as exc:
            for index, _ in ready:
                await report(Outcome(index, error=exc))
            return []
        shares = _apportion(tokens, [sum(len(p.text) for p in r.pieces) for _, r in ready])
        out, at = [], 0
        for (index, doc), share in zip(ready, shares):
            out.append((index, doc, vectors[at : at + len(doc.pieces)], share))
            at += len(doc.pieces)
        return out

    async def write(batches: MemoryObjectReceiveStream[list[_Embedded]]) -> None:
        async with batches:
            async for batch in batches:
                for tenant in dict.fromkeys(one.tenant for _, one, _, _ in batch):
                    part = [b for b in batch if b[1].tenant == tenant]
                    try:
                        results = await _write(
                            rt, collection, tenant, [b[1] for b in part], [b[2] for b in part], [b[3] for b in part], caller
                        )
                    except BigRagError as exc:
                        for index, *_ in part:
                            await report(Outcome(index, error=exc))
                        continue
                    for (index, *_), result in zip(part, results):
                        await report(Outcome(index, result))

    send, receive = anyio.create_memory_object_stream[list[_Embedded]](1)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(write, receive)
        async with send:
            for group in _groups(items):
                batch = await embedded(group)
                if batch:
                    await send.send(batch)
    return sorted(outcomes, key=lambda o: o.index)


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
    rt: Runtime,
    collection_name: str,
    document_id: str,
    *,
    tenant: str | None = None,
    chunk_offset: int = 0,
    chunk_limit: int = 20,
    page: int | None = None,
) -> DocumentDetail:
    """A document with a page of its chunks; with `page`, that page's extracted text and only its chunks."""
    if chunk_offset < 0 or not 0 <= chunk_limit <= 200:
        raise InvalidArgument("chunk_offset must be ≥ 0 and chunk_limit between 0 and 200")
    if page is not None and page < 1:
        raise InvalidArgument("page counts from 1")
    async with rt.db.session() as session:
        collection = await find(session, collection_name)
        doc = await _document(session, collection, check_tenant_argument(collection, tenant), document_id)
        query = select(Chunk).where(Chunk.document_id == doc.id)
        page_info = None
        if page is not None:
            row = await session.get(PageText, (doc.id, page))
            if row is None:
                pages = await session.scalar(select(func.count()).select_from(PageText).where(PageText.document_id == doc.id))
                raise NotFound(f"document {document_id!r} has no page {page} (it has {pages or 'no'} pages)")
            page_info = PageInfo(page=row.page, char_start=row.char_start, char_end=row.char_end, text=row.text)
            query = query.where(Chunk.page == page)
        rows = await session.scalars(query.order_by(Chunk.chunk_index).offset(chunk_offset).limit(chunk_limit + 1))
        chunks = [
            ChunkInfo(
                id=c.record_id, chunk_index=c.chunk_index or 0, text=c.text or "", char_start=c.char_start or 0,
                char_end=c.char_end or 0, page=c.page,
            )
            for c in rows
        ]
    more = len(chunks) > chunk_limit
    chunks = chunks[:chunk_limit]
    return DocumentDetail(
        **document_info(collection, doc).model_dump(),
        chunks=chunks,
        page=page_info,
        next_chunk_offset=chunk_offset + len(chunks) if more and chunks else None,
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
