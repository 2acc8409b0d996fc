"""query and query_multi."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import Field

from bigrag_mcp.gate import Gate
from bigrag_mcp.schemas import QueryResult, SearchModeName
from bigrag_mcp.services import search
from bigrag_mcp.tools import READ

Filters = Annotated[
    dict[str, Any] | None,
    Field(
        description='Metadata filter: {"field": value} or {"field": {"$eq|$ne|$gt|$gte|$lt|$lte|$in|$nin|$exists": ...}}, '
        "combined with $and/$or/$not. Shared collections need one tenant at the top level."
    ),
]
TopK = Annotated[int, Field(ge=1, le=200)]
MinScore = Annotated[
    float | None,
    Field(ge=-1.0, le=1.0e6, description="Drop results whose `score` is below this (reranked: its score)."),
]
Rerank = Annotated[
    str | None,
    Field(
        min_length=1,
        description="A registered reranker (e.g. 'cohere') to reorder the best candidates (4 x top_k, 50 to 200) by "
        "relevance to the query: `score` becomes its score, the search score moves to `retrieval_score`. "
        "Default: no reranking.",
    ),
]


def register(server: MCPServer, gate: Gate) -> None:
    rt = gate.rt

    @server.tool(annotations=READ)
    async def query(
        collection: str,
        query: Annotated[str, Field(min_length=1, max_length=8000)],
        top_k: TopK = 10,
        filters: Filters = None,
        min_score: MinScore = None,
        search_mode: SearchModeName = "semantic",
        rerank: Rerank = None,
    ) -> QueryResult:
        """Search a collection; results carry ids, text, scores, their document and offsets."""
        args = {"collection": collection, "query": query, "top_k": top_k, "filters": filters, "min_score": min_score, "search_mode": search_mode, "rerank": rerank}
        return await gate.run(
            "query", args, lambda caller, a, d: search.search(rt, a.pop("collection"), a.pop("query"), caller=caller, **a)
        )

    @server.tool(annotations=READ)
    async def query_multi(
        collections: Annotated[list[str], Field(min_length=1, max_length=10)],
        query: Annotated[str, Field(min_length=1, max_length=8000)],
        top_k: TopK = 10,
        filters: Filters = None,
        min_score: MinScore = None,
        search_mode: SearchModeName = "semantic",
        rerank: Rerank = None,
    ) -> QueryResult:
        """Search several collections at once, results merged by score."""
        args = {"collections": collections, "query": query, "top_k": top_k, "filters": filters, "min_score": min_score, "search_mode": search_mode, "rerank": rerank}
        return await gate.run(
            "query_multi",
            args,
            lambda caller, a, d: search.search_many(rt, a.pop("collections"), a.pop("query"), caller=caller, **a),
        )
