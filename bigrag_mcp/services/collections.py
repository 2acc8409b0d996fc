"""Collections: create, read, reconfigure and delete, with their settings owned by the store."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.errors import Conflict, InvalidArgument, NotFound
from bigrag_mcp.filters import FIELD_NAME
from bigrag_mcp.lexical.analyzer import DEFAULT_LANGUAGE, check_language
from bigrag_mcp.schemas import CollectionInfo, CollectionList
from bigrag_mcp.services.ledger import OPERATOR, Activity, Caller
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.store.models import NO_TENANT, ApiKey, Chunk, Collection, Document, utcnow

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
CHUNK_SIZE_RANGE = (64, 10_000)
MAX_PAGE = 1000
DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_OVERLAP = 1000, 100  # chosen by benchmarks/retrieval.py (README)


def check_chunking(size: int, overlap: int, strategy: str) -> None:
    if not CHUNK_SIZE_RANGE[0] <= size <= CHUNK_SIZE_RANGE[1]:
        raise InvalidArgument(f"chunk_size must be between {CHUNK_SIZE_RANGE[0]} and {CHUNK_SIZE_RANGE[1]}")
    if not 0 <= overlap <= size // 2:
        raise InvalidArgument(
            f"chunk_overlap must be between 0 and half of chunk_size ({size // 2} for chunk_size {size}), got {overlap}"
        )
    if strategy not in ("paragraph", "recursive"):
        raise InvalidArgument("chunk_strategy must be 'paragraph' or 'recursive'")


def info(collection: Collection, documents: int | None = None, vectors: int | None = None) -> CollectionInfo:
    return CollectionInfo(
        name=collection.name,
        description=collection.description,
        embedding_provider=collection.embedding_provider,
        embedding_model=collection.embedding_model,
        dimension=collection.dimension,
        metadata_schema=collection.metadata_schema,
        tenant_field=collection.tenant_field,
        chunk_size=collection.chunk_size,
        chunk_overlap=collection.chunk_overlap,
        chunk_strategy=collection.chunk_strategy,  # type: ignore[arg-type]
        language=collection.language,
        created_at=collection.created_at,
        updated_at=collection.updated_at,
        document_count=documents,
        vector_count=vectors,
    )


async def find(session: AsyncSession, name: str) -> Collection:
    collection = await session.scalar(select(Collection).where(Collection.name == name))
    if collection is None:
        raise NotFound(f"collection {name!r} does not exist; collections_list shows the ones you can use")
    return collection


async def load(rt: Runtime, name: str) -> Collection:
    """The collection named `name`, from the runtime's revision-checked cache (read-only: change it through `find`)."""
    collection = await rt.lookups.collection(name)
    if collection is None:
        raise NotFound(f"collection {name!r} does not exist; collections_list shows the ones you can use")
    return collection


async def create(
    rt: Runtime,
    *,
    name: str,
    description: str = "",
    embedding_provider: str | None = None,
    embedding_model: str | None = None,
    dimension: int | None = None,
    metadata_schema: dict[str, Any] | None = None,
    tenant_field: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP,
    chunk_strategy: str = "recursive",
    language: str = DEFAULT_LANGUAGE,
    caller: Caller = OPERATOR,
) -> CollectionInfo:
    if not COLLECTION_NAME.match(name):
        raise InvalidArgument(f"collection {name!r} must match {COLLECTION_NAME.pattern}")
    if tenant_field is not None and not FIELD_NAME.match(tenant_field):
        raise InvalidArgument(f"tenant_field {tenant_field!r} must match {FIELD_NAME.pattern}")
    if metadata_schema is not None:
        from bigrag_mcp.metadata_schema import check_schema  # jsonschema loads only where a schema is used

        check_schema(metadata_schema)
    check_chunking(chunk_size, chunk_overlap, chunk_strategy)
    try:
        check_language(language)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None
    provider_name = embedding_provider or rt.default_embedding_provider()
    if embedding_provider is None and embedding_model is None:
        embedding_model = rt.settings.embedding_model
    if dimension is None and embedding_provider is None:
        dimension = rt.settings.embedding_dimension
    provider = rt.embedder(provider_name, embedding_model, dimension)
    collection = Collection(
        name=name,
        description=description,
        embedding_provider=provider_name,
        embedding_model=provider.model,
        dimension=provider.dimension,
        metadata_schema=metadata_schema,
        tenant_field=tenant_field,
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        chunk_strategy=chunk_strategy,
        language=language,
    )
    try:
        async with rt.db.session() as session:
            if await session.scalar(select(Collection.id).where(Collection.name == name)) is not None:
                raise Conflict(f"collection {name!r} already exists; pick another name or delete it first")
            session.add(collection)
            await session.flush()
            await rt.ledger.record(session, caller, Activity.of("collection.created", collection))
    except IntegrityError:
        raise Conflict(f"collection {name!r} already exists; pick another name or delete it first") from None
    return info(collection, 0, 0)


async def counts(session: AsyncSession, collection: Collection, tenant: str | None) -> tuple[int, int]:
    doc_q = select(func.count()).select_from(Document).where(Document.collection_id == collection.id)
    vec_q = select(func.count()).select_from(Chunk).where(Chunk.collection_id == collection.id)
    if tenant is not None:
        doc_q = doc_q.where(Document.tenant == tenant)
        vec_q = vec_q.where(Chunk.tenant == tenant)
    return int(await session.scalar(doc_q) or 0), int(await session.scalar(vec_q) or 0)


async def get(rt: Runtime, name: str, *, tenant: str | None = None) -> CollectionInfo:
    """The collection with its counts; in a tenant collection, counts of `tenant` when given."""
    async with rt.db.session() as session:
        collection = await find(session, name)
        scope = tenant if collection.tenant_field else None
        return info(collection, *await counts(session, collection, scope))


async def list_all(rt: Runtime) -> list[CollectionInfo]:
    async with rt.db.session() as session:
        rows = await session.scalars(select(Collection).order_by(Collection.name))
        return [info(c) for c in rows]


async def list_page(rt: Runtime, *, limit: int = 100, cursor: str | None = None) -> CollectionList:
    """Collections by name, `limit` at a time; `cursor` is the opaque next_cursor of the previous page."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidArgument(f"limit must be between 1 and {MAX_PAGE}")
    query = select(Collection).order_by(Collection.name).limit(limit + 1)
    if cursor:
        try:
            after = base64.urlsafe_b64decode(cursor.encode("ascii")).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeError):
            raise InvalidArgument("cursor is not one this server returned") from None
        if not COLLECTION_NAME.match(after):
            raise InvalidArgument("cursor is not one this server returned")
        query = query.where(Collection.name > after)
    async with rt.db.session() as session:
        rows = list(await session.scalars(query))
    page = rows[:limit]
    more = len(rows) > limit
    next_cursor = base64.urlsafe_b64encode(page[-1].name.encode()).decode() if more else None
    return CollectionList(collections=[info(c) for c in page], next_cursor=next_cursor)


async def update(
    rt: Runtime,
    name: str,
    *,
    description: str | None = None,
    metadata_schema: dict[str, Any] | None = None,
    chunk_size: int | None = None,
    chunk_overlap: int | None = None,
    chunk_strategy: str | None = None,
    caller: Caller = OPERATOR,
) -> CollectionInfo:
    """Change settings that apply to future writes; embedding settings and tenant_field are fixed at creation."""
    async with rt.db.session() as session:
        collection = await find(session, name)
        size = chunk_size if chunk_size is not None else collection.chunk_size
        overlap = chunk_overlap if chunk_overlap is not None else collection.chunk_overlap
        strategy = chunk_strategy or collection.chunk_strategy
        check_chunking(size, overlap, strategy)
        if metadata_schema is not None:
            from bigrag_mcp.metadata_schema import check_schema

            check_schema(metadata_schema)
            collection.metadata_schema = metadata_schema
        if description is not None:
            collection.description = description
        collection.chunk_size, collection.chunk_overlap, collection.chunk_strategy = size, overlap, strategy
        await session.flush()
        await rt.ledger.record(session, caller, Activity.of("collection.updated", collection))
        return info(collection)


async def revoke_keys(session: AsyncSession, *pinned: ColumnElement[bool]) -> int:
    """Revoke the live keys matching `pinned` in the caller's transaction; how many."""
    keys = list(await session.scalars(select(ApiKey).where(*pinned, ApiKey.revoked_at.is_(None))))
    for key in keys:
        key.revoked_at = utcnow()
    return len(keys)


async def delete(rt: Runtime, name: str, *, caller: Caller = OPERATOR) -> CollectionInfo:
    """Remove the collection with every document, chunk and vector it holds, and revoke the keys pinned to it
    (so they never reach a collection created later under the same name)."""
    async with rt.db.session() as session:
        collection = await find(session, name)
        documents, vectors = await counts(session, collection, None)
        stored = await session.scalar(select(func.coalesce(func.sum(Document.size_bytes), 0)).where(Document.collection_id == collection.id))
        await session.delete(collection)
        revoked = await revoke_keys(session, ApiKey.collection == name)
        await rt.index.drop_joined(session, collection)
        await rt.ledger.record(
            session,
            caller,
            Activity.of(
                "collection.deleted",
                collection,
                documents=-documents,
                chunks=-vectors,
                storage_bytes=-int(stored or 0),
                details={"keys_revoked": revoked},
            ),
        )
    await rt.index.drop(collection)
    return info(collection, documents, vectors)


def tenant_of_row(tenant: str) -> str | None:
    return None if tenant == NO_TENANT else tenant
