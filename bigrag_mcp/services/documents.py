"""Documents: load → chunk → embed → store and index in one transaction (one or many at a time); list, read, delete."""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import anyio
import anyio.lowlevel
import numpy as np
import numpy.typing as npt
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bigrag_mcp import compute
from bigrag_mcp.chunking import TextChunk, chunk_text
from bigrag_mcp.errors import BigRagError, InvalidArgument, LimitExceeded, NotFound, TenantRequired
from bigrag_mcp.limits.engine import Hold
from bigrag_mcp.limits.fastpath import Prepared
from bigrag_mcp.loading import extract, extract_here, resolve_type
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
from bigrag_mcp.services.bulk import driver_connection, fetch, insert_rows
from bigrag_mcp.services.collections import find, load, tenant_of_row
from bigrag_mcp.services.embedding import Progress, embed_matrix, process_embedder
from bigrag_mcp.services.fences import check_admitted, unfenced_at_once
from bigrag_mcp.services.index import IndexWrite
from bigrag_mcp.services.ledger import OPERATOR, Activity, Caller
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.services.usage import estimate_tokens_each
from bigrag_mcp.store.models import NO_TENANT, Chunk, Collection, Document, PageText, bulk_insert, utcnow
from bigrag_mcp.types import EmbeddingProvider, Extracted

MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
MAX_METADATA_BYTES = 64 * 1024
# An HTTP request must fit a maximal document as base64 (4 bytes per 3) plus 1 MiB for metadata and the JSON-RPC envelope.
MAX_REQUEST_BODY_BYTES = 4 * -(-MAX_DOCUMENT_BYTES // 3) + 1024 * 1024
MAX_BATCH_DELETE = 100
WRITE_SLICE = 128  # chunk rows inserted and indexed per step of a big upload
# A text upload up to this many characters is checked, chunked and its tokens estimated on the event loop: ≈ 1 ms of
# work here, less than the three worker-thread hand-offs it would take (≈ 0.3 ms each), which would not free the loop
# for Python work anyway (the interpreter lock)
INLINE_CHARS = 8 * 1024


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
        from bigrag_mcp.metadata_schema import metadata_errors  # jsonschema loads only where a schema is used

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


@dataclass
class NewDocument:
    """A document row about to be inserted, with `Document`'s attribute names: a plain object (an ORM instance costs
    more to make than its row costs to insert)."""

    id: str
    collection_id: int
    tenant: str
    filename: str | None
    mime_type: str
    content_hash: str
    metadata_: dict[str, Any]
    size_bytes: int
    char_count: int
    chunk_count: int
    embedding_tokens: int
    created_at: datetime

    def row(self) -> dict[str, Any]:
        """The `documents` row, by column name."""
        row = dict(vars(self))
        row["metadata"] = row.pop("metadata_")
        return row


def document_info(collection: Collection, doc: Document | NewDocument) -> DocumentInfo:
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
    """A document loaded, chunked and reserved under its caller's limits; then its vectors and tokens."""

    doc: NewDocument
    tenant: str | None
    pieces: list[TextChunk]
    pages: list[int | None]
    page_rows: list[dict[str, Any]]
    caller: Caller
    vectors: npt.NDArray[np.float32] | None = None
    tokens: int | None = None
    estimate: int | None = None  # the token estimate when the provider reports none (made off the event loop)


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
    """Check an upload's metadata, tenant, size and type (from its bytes), without loading it (run in a worker thread)."""
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


def _admit_all(collection: Collection, group: Sequence[tuple[int, Upload]]) -> list[tuple[int, _Admitted | BigRagError]]:
    """`_admit` for each upload of a group in one pass (one worker thread); a refusal stays with its upload."""
    checked: list[tuple[int, _Admitted | BigRagError]] = []
    for index, item in group:
        try:
            checked.append((index, _admit(collection, item)))
        except BigRagError as exc:
            checked.append((index, exc))
    return checked


def _chunked(collection: Collection, found: Extracted, max_chunks: int) -> tuple[list[TextChunk], list[int | None]]:
    pieces = chunk_text(
        found.text,
        size=collection.chunk_size,
        overlap=collection.chunk_overlap,
        strategy=collection.chunk_strategy,  # type: ignore[arg-type]
        max_chunks=max_chunks,
    )
    starts = found.page_starts
    return pieces, [bisect.bisect_right(starts, p.start) if starts else None for p in pieces]


def _page_rows(doc_id: str, found: Extracted) -> list[dict[str, Any]]:
    """Each page's text (a `document_pages` row): from its start to the next page's, without the whitespace that
    separates them."""
    ends = [*found.page_starts[1:], len(found.text)]
    rows = []
    for i, (start, end) in enumerate(zip(found.page_starts, ends)):
        text = found.text[start:end].rstrip()
        rows.append({"document_id": doc_id, "page": i + 1, "char_start": start, "char_end": start + len(text), "text": text})
    return rows


_Loaded = tuple[Extracted, list[TextChunk], list[int | None]]  # a document's text, its chunks and their pages


def _load_here(rt: Runtime, collection: Collection, admitted: _Admitted) -> _Loaded | None:
    """Load and chunk on the calling thread when no loader host is needed (text, in-process loaders), else None."""
    item = admitted.item
    if item.text is not None:
        found: Extracted | None = Extracted(item.text)
    else:
        found = extract_here(
            rt.registry.document_loaders, admitted.data, mime=admitted.mime, filename=item.filename, bounds=rt.loader_bounds
        )
    if found is None:
        return None
    return found, *_chunked(collection, found, rt.settings.max_chunks_per_document)


def _load_all_here(rt: Runtime, collection: Collection, admitted: Sequence[_Admitted]) -> list[_Loaded | BigRagError | None]:
    """`_load_here` for each document in one pass (one worker thread for a whole group); a refusal stays with its document."""
    loaded: list[_Loaded | BigRagError | None] = []
    for one in admitted:
        try:
            loaded.append(_load_here(rt, collection, one))
        except BigRagError as exc:
            loaded.append(exc)
    return loaded


async def _load(rt: Runtime, collection: Collection, admitted: _Admitted, here: _Loaded | None = None) -> _Loaded:
    """Load (off the event loop, bounded) and chunk an admitted upload; `here` is what `_load_here` already made."""
    if here is None:
        here = await anyio.to_thread.run_sync(_load_here, rt, collection, admitted)
    if here is not None:
        return here
    item = admitted.item
    found = await extract(
        rt.registry.document_loaders, admitted.data, mime=admitted.mime, filename=item.filename, bounds=rt.loader_bounds
    )
    return found, *(await anyio.to_thread.run_sync(_chunked, collection, found, rt.settings.max_chunks_per_document))


async def _prepare(rt: Runtime, collection: Collection, admitted: _Admitted, caller: Caller, loaded: _Loaded) -> _Ready:
    """Reserve a loaded and chunked upload under the caller's limits and make its document row."""
    found, pieces, pages = loaded
    if not pieces:
        raise InvalidArgument("the document has no text to index")
    await rt.limits.reserve_upload(
        caller.hold, pieces=[p.text for p in pieces], size_bytes=len(admitted.data), collection=collection
    )
    doc = NewDocument(
        id=uuid.uuid4().hex,
        collection_id=collection.id,
        tenant=admitted.tenant or NO_TENANT,
        filename=admitted.item.filename,
        mime_type=admitted.mime,
        content_hash=admitted.content_hash,
        metadata_=admitted.meta,
        size_bytes=len(admitted.data),
        char_count=len(found.text),
        chunk_count=len(pieces),
        embedding_tokens=0,
        created_at=utcnow(),
    )
    return _Ready(doc, admitted.tenant, pieces, pages, _page_rows(doc.id, found), caller)


async def _embedded(
    provider: EmbeddingProvider, ready: Sequence[_Ready], progress: Progress | None = None, worker: Executor | None = None
) -> None:
    """Embed the documents' chunks in full provider batches across documents; tokens apportioned by text share."""
    texts = [p.text for r in ready for p in r.pieces]
    vectors, tokens = await embed_matrix(provider, texts, purpose="document", progress=progress, worker=worker)
    shares = _apportion(tokens, [sum(len(p.text) for p in r.pieces) for r in ready])
    at = 0
    for one, share in zip(ready, shares):
        one.vectors, one.tokens = vectors[at : at + len(one.pieces)], share
        at += len(one.pieces)
    if tokens is None:  # the provider reports none: estimate every document's tokens in one pass (in the worker process if any)
        texts_each = [[p.text for p in r.pieces] for r in ready]
        if worker is not None:
            estimates = await compute.in_worker(worker, estimate_tokens_each, texts_each)
        elif sum(map(len, texts)) <= INLINE_CHARS:
            estimates = estimate_tokens_each(texts_each)
        else:
            estimates = await anyio.to_thread.run_sync(estimate_tokens_each, texts_each)
        for one, estimate in zip(ready, estimates):
            one.estimate = estimate


@functools.lru_cache(maxsize=32)
def _held(count: int) -> Prepared:
    """Which of `count` content hashes the partition already holds (one plain column; compiled once per count)."""
    hashes = [bindparam(f"h{n}", type_=Document.content_hash.type) for n in range(count)]
    return Prepared(
        select(Document.content_hash).where(
            Document.collection_id == bindparam("collection_id"), Document.tenant == bindparam("tenant"),
            Document.content_hash.in_(hashes),
        )
    )


def _held_values(collection: Collection, tenant: str | None, hashes: Sequence[str]) -> dict[str, Any]:
    """The parameters of `_held(len(hashes))`."""
    return {"collection_id": collection.id, "tenant": tenant or NO_TENANT, **{f"h{n}": h for n, h in enumerate(hashes)}}


async def _existing(
    session: AsyncSession, collection: Collection, tenant: str | None, hashes: Iterable[str]
) -> dict[str, Document]:
    """Documents of the partition already holding any of these contents, by content hash: one plain read of the
    hashes (new content, the common case, stops there), then the documents found."""
    wanted = sorted(set(hashes))
    if not wanted:
        return {}
    held = [h for (h,) in await fetch(session, _held(len(wanted)), _held_values(collection, tenant, wanted))]
    if not held:
        return {}
    rows = await session.scalars(
        select(Document).where(
            Document.collection_id == collection.id, Document.tenant == (tenant or NO_TENANT), Document.content_hash.in_(held)
        )
    )
    return {d.content_hash: d for d in rows}


def _new_at_once(rt: Runtime, collection: Collection, admitted: _Admitted) -> bool:
    """True when the fast path answers at once that no fence refuses the upload and its partition does not hold its
    content, without a session's round trips through the store's thread; False: check in a session. The write checks
    both again in its own transaction."""
    if rt.fast is None or not unfenced_at_once(rt.fast, collection.name, admitted.tenant):
        return False
    return rt.fast.fetch(_held(1), _held_values(collection, admitted.tenant, [admitted.content_hash])) == []


async def _write(rt: Runtime, collection: Collection, tenant: str | None, ready: Sequence[_Ready]) -> list[UploadResult]:
    """Store and index embedded documents of one partition in one transaction (fence checked inside it); content
    that landed meanwhile deduplicates; each document settles its caller's limits."""
    results: list[UploadResult | None] = [None] * len(ready)
    async with rt.index.writing(collection, tenant) as write:
        landed: dict[str, Document | NewDocument] = {
            **await _existing(write.session, collection, tenant, (r.doc.content_hash for r in ready))
        }
        fresh: list[_Ready] = []
        for n, one in enumerate(ready):
            if one.doc.content_hash in landed:  # the same content landed while this one was being embedded
                results[n] = UploadResult(
                    document=document_info(collection, landed[one.doc.content_hash]), deduplicated=True, embedding_tokens=0
                )
            else:
                landed[one.doc.content_hash] = one.doc
                one.doc.embedding_tokens = one.tokens or 0
                fresh.append(one)
                results[n] = UploadResult(document=document_info(collection, one.doc), deduplicated=False, embedding_tokens=one.tokens)
        if fresh:  # Core inserts, one statement per table: no ORM bookkeeping for rows nothing reads back
            await insert_rows(write.session, Document, [one.doc.row() for one in fresh])
            await _store_chunks(write, fresh)  # documents first: chunks and pages refer to them
            await insert_rows(write.session, PageText, [row for one in fresh for row in one.page_rows])
        await rt.ledger.record_many(
            write.session,
            [
                (
                    one.caller,
                    Activity.of(
                        "document.uploaded", collection, tenant=tenant, resource_type="document", resource_id=one.doc.id,
                        documents=1, chunks=len(one.pieces), storage_bytes=one.doc.size_bytes, embedding_tokens=one.tokens,
                        estimated_tokens=one.estimate, provider=collection.embedding_provider, model=collection.embedding_model,
                    ),
                )
                for one in fresh
            ],
        )
    return [r for r in results if r is not None]


_CHUNK_COLUMNS = (
    "collection_id", "tenant", "record_id", "document_id", "chunk_index", "text", "metadata", "char_start", "char_end",
    "page", "vector", "created_at",
)


_CHUNK_INSERT = Prepared(bulk_insert(Chunk), _CHUNK_COLUMNS)


class _ChunkInsert:
    """Chunk rows into the store in the write's transaction. On a store with a direct driver connection
    (`bulk.driver_connection`) the prepared insert through the driver's own executemany, the rows passed as they are:
    their columns in the statement's order, and the only ones needing conversion (each document's metadata and time)
    converted once per document (SQLAlchemy would convert them again for every chunk row); elsewhere one Core
    executemany."""

    PER_DOCUMENT = frozenset({"metadata", "created_at"})
    AS_GIVEN = _CHUNK_INSERT.names == _CHUNK_COLUMNS and _CHUNK_INSERT.processors.keys() <= PER_DOCUMENT

    def __init__(self, conn: AsyncConnection, driver: Any | None) -> None:
        self.conn = conn
        self.driver = driver if self.AS_GIVEN else None
        self.direct = self.driver is not None

    @classmethod
    async def of(cls, conn: AsyncConnection) -> _ChunkInsert:
        return cls(conn, await driver_connection(conn))

    def document(self, doc: NewDocument) -> tuple[Any, Any]:
        """The document's metadata and time as the rows of its chunks carry them."""
        if not self.direct:
            return doc.metadata_, doc.created_at
        return _CHUNK_INSERT.process("metadata", doc.metadata_), _CHUNK_INSERT.process("created_at", doc.created_at)

    async def insert(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert rows given as tuples in `_CHUNK_COLUMNS` order."""
        if self.driver is None:
            await self.conn.execute(_CHUNK_INSERT.statement, [dict(zip(_CHUNK_COLUMNS, row)) for row in rows])
            return
        await self.driver.executemany(_CHUNK_INSERT.sql, rows)


async def _store_chunks(write: IndexWrite, fresh: Sequence[_Ready]) -> None:
    """Insert the documents' chunk rows and index their vectors a slice at a time, so the event loop breathes in between."""
    vectors = np.concatenate([one.vectors for one in fresh if one.vectors is not None])
    rows = [(one, i) for one in fresh for i in range(len(one.pieces))]
    assert len(vectors) == len(rows), "every document is embedded before it is written"
    inserter = await _ChunkInsert.of(await write.session.connection())
    stored = {id(one): inserter.document(one.doc) for one in fresh}
    for start in range(0, len(rows), WRITE_SLICE):
        part = rows[start : start + WRITE_SLICE]
        block = vectors[start : start + len(part)]
        chunk_rows = []
        for (one, i), vector in zip(part, block):
            doc, piece = one.doc, one.pieces[i]
            metadata, created_at = stored[id(one)]
            chunk_rows.append((
                doc.collection_id, doc.tenant, f"{doc.id}#{i}", doc.id, i, piece.text, metadata, piece.start, piece.end,
                one.pages[i], vector.tobytes(), created_at,
            ))
        await inserter.insert(chunk_rows)  # one executemany, no ORM bookkeeping per row
        await write.upsert_rows(
            [r[2] for r in chunk_rows], block, [r[5] for r in chunk_rows], [one.doc.metadata_ for one, _ in part]
        )
        await anyio.lowlevel.checkpoint()


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
    """Load, chunk and embed in worker threads (a text of up to INLINE_CHARS on the event loop), then store and index
    in one transaction.

    At most `write_concurrency` writes run at a time per key and per tenant; the CPU-bound steps of anything larger
    never run on the event loop, and the vectors are kept as one float32 matrix, so other tenants' calls keep flowing.
    """
    collection = await load(rt, collection_name)
    item = Upload(text, content_base64, None, filename, mime_type, metadata)
    inline = text is not None and len(text) <= INLINE_CHARS
    admitted = _admit(collection, item) if inline else await anyio.to_thread.run_sync(_admit, collection, item)
    async with rt.writes.hold(caller, collection.name, admitted.tenant):
        existing: dict[str, Document] = {}
        if not _new_at_once(rt, collection, admitted):
            async with rt.db.session() as session:
                await check_admitted(session, collection.name, admitted.tenant)  # before the work; the write checks again
                existing = await _existing(session, collection, admitted.tenant, [admitted.content_hash])
        if existing:
            return UploadResult(document=document_info(collection, existing[admitted.content_hash]), deduplicated=True, embedding_tokens=0)
        loaded = await _load(rt, collection, admitted, _load_here(rt, collection, admitted) if inline else None)
        ready = await _prepare(rt, collection, admitted, caller, loaded)
        del admitted
        provider = rt.embedder(collection.embedding_provider, collection.embedding_model, collection.dimension)
        await _embedded(provider, [ready], progress)
        return (await _write(rt, collection, ready.tenant, [ready]))[0]


@dataclass(frozen=True)
class Outcome:
    """What became of item `index` of a batch: its result, or the error that refused it (nothing of it written)."""

    index: int
    result: UploadResult | None = None
    error: BigRagError | None = None


GROUP_DOCUMENTS = 256  # documents loaded, embedded and written together at most
GROUP_BYTES = 4 << 20  # ... and their bytes
FIRST_GROUP = 32  # the first group's documents: groups double from there, so the first write starts early


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
    """The uploads in groups of FIRST_GROUP, twice that, ... up to GROUP_DOCUMENTS documents (or GROUP_BYTES)."""
    group: list[tuple[int, Upload]] = []
    size, limit = 0, min(FIRST_GROUP, GROUP_DOCUMENTS)
    for index, item in enumerate(items):
        group.append((index, item))
        size += len(item.data or item.text or item.content_base64 or "")
        if len(group) >= limit or size >= GROUP_BYTES:
            yield group
            group, size, limit = [], 0, min(limit * 2, GROUP_DOCUMENTS)
    if group:
        yield group


_Batch = list[tuple[int, _Ready]]  # a group's documents ready to embed or write, each with its index in the batch


def _own_hold(caller: Caller) -> Caller:
    """The caller with a hold of its own for one document of a batch, so each document reserves and settles alone."""
    hold = caller.hold
    return caller if hold is None else replace(caller, hold=Hold(hold.scope, hold.actor, hold.request_id))


async def upload_many(
    rt: Runtime,
    collection_name: str,
    items: Iterable[Upload],
    *,
    caller: Caller = OPERATOR,
    on_outcome: Callable[[Outcome], Awaitable[None]] | None = None,
) -> list[Outcome]:
    """Upload many documents: embedded in full provider batches across documents, written many per transaction.
    Three stages run side by side, a group in each: the next group is loaded and chunked while the one before it
    embeds and the one before that is written. A bad item fails alone; the same steps as `upload` (fences, write
    slots, chunk bounds, limits reserved and settled per document)."""
    collection = await load(rt, collection_name)
    provider = rt.embedder(collection.embedding_provider, collection.embedding_model, collection.dimension)
    outcomes: list[Outcome] = []

    async def report(index: int, owner: Caller | None, result: UploadResult | None = None, error: BigRagError | None = None) -> None:
        if owner is not None and owner.hold is not caller.hold:
            await rt.limits.release(owner.hold)  # what the document held and did not settle
        outcome = Outcome(index, result, error)
        outcomes.append(outcome)
        if on_outcome is not None:
            await on_outcome(outcome)

    async def prepared(group: list[tuple[int, Upload]]) -> list[tuple[int, _Ready]]:
        admitted: list[tuple[int, _Admitted]] = []
        for index, checked in await anyio.to_thread.run_sync(_admit_all, collection, group):
            if isinstance(checked, BigRagError):
                await report(index, None, error=checked)
            else:
                admitted.append((index, checked))
        known: dict[tuple[str | None, str], Document] = {}
        fenced: dict[str | None, BigRagError] = {}
        async with rt.db.session() as session:
            for tenant in {a.tenant for _, a in admitted}:
                try:
                    await check_admitted(session, collection.name, tenant)  # before the work; the write checks again
                except BigRagError as exc:
                    fenced[tenant] = exc
                    continue
                hashes = [a.content_hash for _, a in admitted if a.tenant == tenant]
                known.update(((tenant, h), d) for h, d in (await _existing(session, collection, tenant, hashes)).items())
        fresh: list[tuple[int, _Admitted]] = []
        for index, one in admitted:
            if one.tenant in fenced:
                await report(index, None, error=fenced[one.tenant])
            elif (one.tenant, one.content_hash) in known:
                document = document_info(collection, known[(one.tenant, one.content_hash)])
                await report(index, None, UploadResult(document=document, deduplicated=True, embedding_tokens=0))
            else:
                fresh.append((index, one))
        loaded = await anyio.to_thread.run_sync(_load_all_here, rt, collection, [one for _, one in fresh])
        ready: list[tuple[int, _Ready]] = []
        for (index, one), here in zip(fresh, loaded):
            own = _own_hold(caller)
            try:
                if isinstance(here, BigRagError):
                    raise here
                ready.append((index, await _prepare(rt, collection, one, own, await _load(rt, collection, one, here))))
            except BigRagError as exc:
                await report(index, own, error=exc)
        return ready

    async def embedded(groups: MemoryObjectReceiveStream[_Batch], written: MemoryObjectSendStream[_Batch]) -> None:
        async with groups, written:
            async for ready in groups:
                try:
                    await _embedded(provider, [r for _, r in ready], worker=worker)
                except BigRagError as exc:
                    for index, failed in ready:
                        await report(index, failed.caller, error=exc)
                    continue
                await written.send(ready)

    async def write(batches: MemoryObjectReceiveStream[_Batch]) -> None:
        async with batches:
            async for batch in batches:
                for tenant in dict.fromkeys(one.tenant for _, one in batch):
                    part = [b for b in batch if b[1].tenant == tenant]
                    try:
                        async with rt.writes.hold(caller, collection.name, tenant):
                            results = await _write(rt, collection, tenant, [one for _, one in part])
                    except BigRagError as exc:
                        for index, one in part:
                            await report(index, one.caller, error=exc)
                        continue
                    for (index, one), result in zip(part, results):
                        await report(index, one.caller, result)

    to_embed, embedding = anyio.create_memory_object_stream[_Batch]()
    to_write, writing = anyio.create_memory_object_stream[_Batch](1)
    async with compute.worker_process(process_embedder(provider) is not None) as worker, anyio.create_task_group() as tasks:
        tasks.start_soon(write, writing)
        tasks.start_soon(embedded, embedding, to_write)
        async with to_embed:
            for group in _groups(items):
                batch = await prepared(group)
                if batch:
                    await to_embed.send(batch)
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
