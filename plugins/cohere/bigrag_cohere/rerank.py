"""Cohere rerank: relevance of documents to a query, for the core to reorder retrieved chunks."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import cohere

from bigrag_cohere.client import SERVICE, CohereService
from bigrag_mcp.errors import Unavailable

MAX_DOCUMENTS = 1000  # Cohere recommends at most 1,000 documents a request


class CohereReranker:
    """`await rerank(query, documents, top_n)` -> [(index into documents, relevance score)], best first."""

    name = "cohere"

    def __init__(self, service: CohereService, *, model: str = "rerank-v3.5") -> None:
        self.model = model
        self._service = service

    def __repr__(self) -> str:
        return f"CohereReranker(model={self.model!r})"

    async def aclose(self) -> None:
        """Close the pooled HTTP connections."""
        await self._service.aclose()

    async def _request(
        self, client: cohere.AsyncClientV2, *, query: str, part: list[str], top_n: int
    ) -> cohere.V2RerankResponse:
        return await client.rerank(model=self.model, query=query, documents=part, top_n=min(top_n, len(part)))

    async def rerank(self, query: str, documents: Sequence[str], top_n: int) -> list[tuple[int, float]]:
        if top_n < 1 or not documents:
            return []
        scored: list[tuple[int, float]] = []
        for start in range(0, len(documents), MAX_DOCUMENTS):
            part = list(documents[start : start + MAX_DOCUMENTS])
            reply = await self._service.call(partial(self._request, query=query, part=part, top_n=top_n))
            for result in reply.results:
                if not 0 <= result.index < len(part):
                    raise Unavailable(f"{SERVICE}: rerank returned index {result.index} for {len(part)} documents")
                scored.append((start + result.index, float(result.relevance_score)))
        scored.sort(key=lambda pair: (-pair[1], pair[0]))
        return scored[:top_n]
