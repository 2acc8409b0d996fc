"""Search: validate filters, apply the tenant guard, embed the query, search the partition, join store rows.

With `rerank` (a registered reranker's name) the backend is asked for a larger candidate pool and the reranker
picks and orders the best `top_k` of the rows that passed the tenant guard and the filters; it reads nothing else.
`score` is then the reranker's score and `min_score` applies to it; the search score moves to `retrieval_score`.
Rows without text (raw vectors), which a reranker cannot read, follow the reranked rows in search order.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Text, bindparam, cast, select

from bigrag_mcp.errors import BigRagError, InvalidArgument, LimitExceeded, Unavailable
from bigrag_mcp.filters import FilterNode, parse_filter, require_tenant
from bigrag_mcp.limits.fastpath import Prepared, read
from bigrag_mcp.schemas import QueryResult, QueryRow, SearchModeName, Timings
from bigrag_mcp.services.collections import load
from bigrag_mcp.services.embedding import embed_all
from bigrag_mcp.services.ledger import OPERATOR, Activity, Caller
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.store.models import NO_TENANT, Chunk, Collection, Document
from bigrag_mcp.types import SearchRequest

MAX_QUERY_CHARS = 8_000
MAX_MULTI = 10
RERANK_POOL = (50, 200)  # candidates for a reranker: 4 × top_k, at least 50, at most 200


@lru_cache(maxsize=256)
def _rows_of(count: int) -> Prepared:
    """The read of `count` hits' store rows (one statement per distinct count, compiled once)."""
    return Prepared(
        select(
            Chunk.record_id, Chunk.text, Chunk.document_id, Document.filename, Chunk.chunk_index, Chunk.page,
            Chunk.char_start, Chunk.char_end, cast(Chunk.metadata_, Text),
        )
        .outerjoin(Document, Chunk.document_id == Document.id)
        .where(
            Chunk.collection_id == bindparam("collection_id"),
            Chunk.tenant == bindparam("tenant"),
            Chunk.record_id.in_([bindparam(f"id{i}", type_=Chunk.record_id.type) for i in range(count)]),
        )
    )


def check_request(query: str, top_k: int, min_score: float | None, search_mode: str) -> None:
    if not isinstance(query, str) or not query.strip():
        raise InvalidArgument("query must be a non-empty string")
    if len(query) > MAX_QUERY_CHARS:
        raise LimitExceeded(f"query is longer than {MAX_QUERY_CHARS} characters")
    if not 1 <= top_k <= 200:
        raise InvalidArgument("top_k must be between 1 and 200")
    if min_score is not None and not -1.0 <= min_score <= 1.0e6:
        raise InvalidArgument("min_score must be between -1 and 1000000")
    if search_mode not in ("semantic", "keyword", "hybrid"):
        raise InvalidArgument("search_mode must be 'semantic', 'keyword' or 'hybrid'")


def candidate_pool(top_k: int, rerank: str | None) -> int:
    """How many hits to fetch: `top_k`, or with a reranker a larger pool for it to choose from."""
    low, high = RERANK_POOL
    return top_k if rerank is None else min(max(top_k * 4, low), high)


async def _ranking(rt: Runtime, name: str, query: str, texts: Sequence[str], top_n: int) -> list[tuple[int, float]]:
    """The reranker's (index, score) pairs, checked: known indices, each once, finite scores, best first."""
    try:
        ranked = await rt.reranker(name).rerank(query, texts, top_n)
    except BigRagError:
        raise
    except Exception as exc:
        raise Unavailable(f"reranker {name!r} failed: {type(exc).__name__}: {exc}") from exc
    indices = [index for index, _ in ranked]
    if (
        len(ranked) > top_n
        or len(set(indices)) != len(indices)
        or not all(0 <= index < len(texts) for index in indices)
        or not all(math.isfinite(score) for _, score in ranked)
    ):
        raise Unavailable(f"reranker {name!r} returned an invalid ranking for {len(texts)} documents")
    return sorted(ranked, key=lambda pair: -pair[1])


async def rerank_rows(
    rt: Runtime, name: str, query: str, rows: Sequence[QueryRow], *, top_k: int, min_score: float | None
) -> tuple[list[QueryRow], float]:
    """The best `top_k` of `rows` by reranker `name`, scored by it (see the module docstring), and the time taken."""
    started = time.perf_counter()
    readable = [row for row in rows if row.text]
    texts = [row.text or "" for row in readable]
    ranked = await _ranking(rt, name, query, texts, min(top_k, len(texts))) if texts else []
    reordered = [
        readable[index].model_copy(update={"score": score, "retrieval_score": readable[index].score})
        for index, score in ranked
    ]
    reordered += [row.model_copy(update={"retrieval_score": row.score}) for row in rows if not row.text]
    kept = [row for row in reordered if min_score is None or row.score >= min_score][:top_k]
    return kept, (time.perf_counter() - started) * 1000


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
        values: dict[str, Any] = {f"id{i}": hit.id for i, hit in enumerate(hits)}
        values.update(collection_id=collection.id, tenant=tenant or NO_TENANT)
        found = {row[0]: row for row in await read(rt.fast, rt.db, _rows_of(len(hits)), values)}
        for hit in hits:
            if hit.id not in found:  # an orphan the backend kept after a failed drop: never shown
                continue
            record_id, text, document_id, filename, chunk_index, page, char_start, char_end, meta = found[hit.id]
            rows.append(
                QueryRow(
                    id=record_id,
                    text=text,
                    score=hit.score,
                    document_id=document_id,
                    document_filename=filename,
                    chunk_index=chunk_index,
                    page=page,
                    char_start=char_start,
                    char_end=char_end,
                    metadata=json.loads(meta) if meta else {},
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
    rerank: str | None = None,
    operation: str = "query",
) -> tuple[QueryResult, Activity]:
    """The results and the activity to meter, unrecorded (chat records its own, richer activity)."""
    check_request(query, top_k, min_score, search_mode)
    tree = parse_filter(filters)
    if rerank is not None:
        rt.registry.reranker(rerank)  # an unknown reranker is refused before any work
    started = time.perf_counter()
    collection = await load(rt, collection_name)
    rows, tenant, tokens, embed_ms, search_ms = await _search_one(
        rt, collection, tree, query, candidate_pool(top_k, rerank), None if rerank else min_score, search_mode
    )
    rerank_ms = None
    if rerank is not None:
        rows, rerank_ms = await rerank_rows(rt, rerank, query, rows, top_k=top_k, min_score=min_score)
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
    timings = Timings(embed_ms=embed_ms, search_ms=search_ms, rerank_ms=rerank_ms, total_ms=total_ms)
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
    rerank: str | None = None,
    caller: Caller = OPERATOR,
) -> QueryResult:
    """Search one collection and meter the query."""
    result, activity = await retrieve(
        rt, collection_name, query,
        top_k=top_k, filters=filters, min_score=min_score, search_mode=search_mode, rerank=rerank,
    )
    if not rt.ledger.record_now(caller, activity):
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
    rerank: str | None = None,
    caller: Caller = OPERATOR,
) -> QueryResult:
    """One query over several collections, merged by score (scores of one mode and metric are comparable).

    With `rerank`, each collection gives its candidate pool and the reranker orders them all in one ranking.
    Each collection's query is metered once, and only when the whole call succeeds.
    """
    if not collection_names or len(collection_names) > MAX_MULTI:
        raise InvalidArgument(f"collections must name 1 to {MAX_MULTI} collections")
    if rerank is not None:
        rt.registry.reranker(rerank)
    started = time.perf_counter()
    merged: list[QueryRow] = []
    activities: list[Activity] = []
    embed_total = search_total = 0.0
    for name in dict.fromkeys(collection_names):
        result, activity = await retrieve(
            rt, name, query, top_k=candidate_pool(top_k, rerank), filters=filters,
            min_score=None if rerank else min_score, search_mode=search_mode,
        )
        merged.extend(result.results)
        activities.append(activity)
        embed_total += result.timings.embed_ms
        search_total += result.timings.search_ms
    merged.sort(key=lambda r: (-r.score, r.collection, r.id))
    rerank_ms = None
    if rerank is not None:
        merged, rerank_ms = await rerank_rows(rt, rerank, query, merged, top_k=top_k, min_score=min_score)
    async with rt.db.session() as session:
        for activity in activities:
            await rt.ledger.record(session, caller, activity)
    total = (time.perf_counter() - started) * 1000
    timings = Timings(embed_ms=embed_total, search_ms=search_total, rerank_ms=rerank_ms, total_ms=total)
    return QueryResult(results=merged[:top_k], search_mode=search_mode, timings=timings)
