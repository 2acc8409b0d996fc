"""Search: validate filters, apply the tenant guard, embed the query, search the partition, join store rows."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from bigrag_mcp.errors import InvalidArgument, LimitExceeded
from bigrag_mcp.filters import FilterNode, parse_filter, require_tenant
from bigrag_mcp.schemas import QueryResult, QueryRow, SearchModeName, Timings
from bigrag_mcp.services.collections import load
from bigrag_mcp.services.embedding import embed_all
from bigrag_mcp.services.ledger import OPERATOR, Activity, Caller
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.store.models import NO_TENANT, Chunk, Collection, Document
from bigrag_mcp.types import SearchRequest

MAX_QUERY_CHARS = 8_000
MAX_MULTI = 10


def check_request(query: str, top_k: int, min_score: float | None, search_mode: str) -> None:
    if not isinstance(query, str) or not query.strip():
        raise InvalidArgument("query must be a non-empty string")
    if len(query) > MAX_QUERY_CHARS:
        raise LimitExceeded(f"query is longer than {MAX_QUERY_CHARS} characters")
    if not 1 <= top_k <= 200:
        raise InvalidArgument("top_k must be between 1 and 200")
    if min_score is not None and not -1.0 <= min_score <= 1.0e6:
        raise InvalidArgument("min_score must be a number ≥ -1")
    if search_mode not in ("semantic", "keyword", "hybrid"):
        raise InvalidArgument("search_mode must be 'semantic', 'keyword' or 'hybrid'")


async def _search_one(
    rt: Runtime,
    collection: Collection,
    tree: FilterNode | None,
    query: str,
    top_k: int,
    min_score: float | None,
    mode: SearchModeName,
) -> tuple[list[QueryRow], str | None, int | None, float, float]:
    tenant = require_tenant(tree, collection.tenant_field) if collection.tenant_field else None
    if mode not in rt.backend.search_modes:
        raise InvalidArgument(f"the {rt.backend.name!r} vector backend does not support search_mode {mode!r}")
    started = time.perf_counter()
    vector, tokens = None, None
    if mode != "keyword":
        provider = rt.embedder(collection.embedding_provider, collection.embedding_model, collection.dimension)
        vectors, tokens = await embed_all(provider, [query], purpose="query")
        vector = vectors[0]
    embedded = time.perf_counter()
    where = await rt.index.ready(collection, tenant)
    hits = await rt.backend.search(
        where, SearchRequest(top_k=top_k, mode=mode, vector=vector, text=query, min_score=min_score, filter=tree)
    )
    rows: list[QueryRow] = []
    if hits:
        async with rt.db.session() as session:
            found = {
                chunk.record_id: (chunk, filename)
                for chunk, filename in await session.execute(
                    select(Chunk, Document.filename)
                    .outerjoin(Document, Chunk.document_id == Document.id)
                    .where(
                        Chunk.collection_id == collection.id,
                        Chunk.tenant == (tenant or NO_TENANT),
                        Chunk.record_id.in_([h.id for h in hits]),
                    )
                )
            }
        for hit in hits:
            if hit.id not in found:  # an orphan the backend kept after a failed drop: never shown
                continue
            chunk, filename = found[hit.id]
            rows.append(
                QueryRow(
                    id=chunk.record_id,
                    text=chunk.text,
                    score=hit.score,
                    document_id=chunk.document_id,
                    document_filename=filename,
                    chunk_index=chunk.chunk_index,
                    char_start=chunk.char_start,
                    char_end=chunk.char_end,
                    metadata=chunk.metadata_ or {},
                    collection=collection.name,
                )
            )
    done = time.perf_counter()
    return rows, tenant, tokens, (embedded - started) * 1000, (done - embedded) * 1000


async def retrieve(
    rt: Runtime,
    collection_name: str,
    query: str,
    *,
    top_k: int = 10,
    filters: dict[str, Any] | None = None,
    min_score: float | None = None,
    search_mode: SearchModeName = "semantic",
    operation: str = "query",
) -> tuple[QueryResult, Activity]:
    """The results and the activity to meter, unrecorded (chat records its own, richer activity)."""
    check_request(query, top_k, min_score, search_mode)
    tree = parse_filter(filters)
    started = time.perf_counter()
    collection = await load(rt, collection_name)
    rows, tenant, tokens, embed_ms, search_ms = await _search_one(rt, collection, tree, query, top_k, min_score, search_mode)
    total_ms = (time.perf_counter() - started) * 1000
    activity = Activity.of(
        operation,
        collection,
        tenant=tenant,
        resource_type="query",
        embedding_tokens=tokens,
        provider=collection.embedding_provider,
        model=collection.embedding_model,
        latency_ms=total_ms,
        texts=[query] if search_mode != "keyword" else (),
    )
    timings = Timings(embed_ms=embed_ms, search_ms=search_ms, total_ms=total_ms)
    return QueryResult(results=rows, search_mode=search_mode, timings=timings), activity


async def search(
    rt: Runtime,
    collection_name: str,
    query: str,
    *,
    top_k: int = 10,
    filters: dict[str, Any] | None = None,
    min_score: float | None = None,
    search_mode: SearchModeName = "semantic",
    caller: Caller = OPERATOR,
) -> QueryResult:
    """Search one collection and meter the query."""
    result, activity = await retrieve(
        rt, collection_name, query, top_k=top_k, filters=filters, min_score=min_score, search_mode=search_mode
    )
    async with rt.db.session() as session:
        await rt.ledger.record(session, caller, activity)
    return result


async def search_many(
    rt: Runtime,
    collection_names: list[str],
    query: str,
    *,
    top_k: int = 10,
    filters: dict[str, Any] | None = None,
    min_score: float | None = None,
    search_mode: SearchModeName = "semantic",
    caller: Caller = OPERATOR,
) -> QueryResult:
    """One query over several collections, merged by score (scores of one mode and metric are comparable)."""
    if not collection_names or len(collection_names) > MAX_MULTI:
        raise InvalidArgument(f"collections must name 1 to {MAX_MULTI} collections")
    started = time.perf_counter()
    merged: list[QueryRow] = []
    embed_total = search_total = 0.0
    for name in dict.fromkeys(collection_names):
        result = await search(
            rt, name, query, top_k=top_k, filters=filters, min_score=min_score, search_mode=search_mode, caller=caller
        )
        merged.extend(result.results)
        embed_total += result.timings.embed_ms
        search_total += result.timings.search_ms
    merged.sort(key=lambda r: (-r.score, r.collection, r.id))
    total = (time.perf_counter() - started) * 1000
    return QueryResult(results=merged[:top_k], search_mode=search_mode, timings=Timings(embed_ms=embed_total, search_ms=search_total, total_ms=total))
