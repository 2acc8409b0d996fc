"""The "openai" embedding provider: POST {base_url}/embeddings in batches within the API's limits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bigrag_mcp.errors import InvalidArgument, Unavailable
from bigrag_mcp.types import Embeddings, Purpose
from bigrag_openai.client import SERVICE, OpenAIClient
from bigrag_openai.settings import OpenAISettings

ASCII_CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class KnownModel:
    dimension: int
    shortens: bool  # accepts the `dimensions` parameter


KNOWN_MODELS: dict[str, KnownModel] = {
    "text-embedding-3-small": KnownModel(1536, True),
    "text-embedding-3-large": KnownModel(3072, True),
    "text-embedding-ada-002": KnownModel(1536, False),
}


def _tokens(ascii_chars: int, others: int) -> int:
    return -(-ascii_chars // ASCII_CHARS_PER_TOKEN) + others


def estimate_tokens(text: str) -> int:
    """A cheap guess used only to size requests: ~4 ASCII characters a token, a token per other character."""
    ascii_chars = sum(1 for ch in text if ch < "\x80")
    return _tokens(ascii_chars, len(text) - ascii_chars)


def truncate(text: str, max_tokens: int) -> str:
    """`text` cut so that its estimated tokens stay within `max_tokens`; an empty text becomes one space."""
    if not text:
        return " "  # the API rejects empty strings; a blank embeds as "nothing here"
    if estimate_tokens(text) <= max_tokens:
        return text
    ascii_chars = others = 0
    for end, ch in enumerate(text):
        if ch < "\x80":
            ascii_chars += 1
        else:
            others += 1
        if _tokens(ascii_chars, others) > max_tokens:
            return text[:end]
    return text


def plan_batches(texts: Sequence[str], max_items: int, max_tokens: int) -> Iterator[range]:
    """Consecutive index ranges, each within `max_items` inputs and `max_tokens` estimated tokens."""
    start, budget = 0, 0
    for i, text in enumerate(texts):
        cost = estimate_tokens(text)
        if i > start and (i - start >= max_items or budget + cost > max_tokens):
            yield range(start, i)
            start, budget = i, 0
        budget += cost
    if start < len(texts):
        yield range(start, len(texts))


def resolve_dimension(model: str, dimension: int | None) -> tuple[int, bool]:
    """The vector size for `model`, and whether to send `dimensions`; InvalidArgument for impossible sizes."""
    known = KNOWN_MODELS.get(model)
    if known is None:
        if dimension is None:
            raise InvalidArgument(
                f"openai: model {model!r} is not in the known table "
                f"({', '.join(sorted(KNOWN_MODELS))}); give its dimension explicitly"
            )
        return dimension, False
    if dimension is None or dimension == known.dimension:
        return known.dimension, False
    if not known.shortens:
        raise InvalidArgument(f"openai: model {model!r} only produces {known.dimension}-dimensional vectors")
    if not 1 <= dimension <= known.dimension:
        raise InvalidArgument(f"openai: model {model!r} supports dimensions from 1 to {known.dimension}")
    return dimension, True


class OpenAIEmbeddings:
    """Vectors from the OpenAI embeddings API or a compatible server, in input order, with reported tokens."""

    name = "openai"

    def __init__(self, client: OpenAIClient, settings: OpenAISettings, *, model: str, dimension: int | None) -> None:
        self.model = model
        self.dimension, self._send_dimensions = resolve_dimension(model, dimension)
        self.max_batch = settings.max_batch
        self._max_batch_tokens = settings.max_batch_tokens
        self._max_input_tokens = settings.truncate_input_tokens
        self._prefix: dict[Purpose, str] = {
            "document": settings.embedding_document_prefix,
            "query": settings.embedding_query_prefix,
        }
        self._client = client

    def __repr__(self) -> str:
        return f"OpenAIEmbeddings(model={self.model!r}, dimension={self.dimension}, base_url={self._client.base_url!r})"

    async def aclose(self) -> None:
        """Close the pooled HTTP connections."""
        await self._client.aclose()

    async def embed(self, texts: Sequence[str], *, purpose: Purpose) -> Embeddings:
        prefix = self._prefix[purpose]
        inputs = [truncate(prefix + text, self._max_input_tokens) for text in texts]
        vectors: list[list[float]] = []
        tokens: int | None = None
        for batch in plan_batches(inputs, self.max_batch, self._max_batch_tokens):
            batch_vectors, batch_tokens = await self._embed_batch(inputs[batch.start : batch.stop])
            vectors.extend(batch_vectors)
            if batch_tokens is not None:
                tokens = (tokens or 0) + batch_tokens
        return Embeddings(vectors=vectors, tokens=tokens if texts else 0)

    async def _embed_batch(self, inputs: list[str]) -> tuple[list[list[float]], int | None]:
        payload: dict[str, Any] = {"model": self.model, "input": inputs}
        if self._send_dimensions:
            payload["dimensions"] = self.dimension
        reply = await self._client.post("/embeddings", payload)
        return self._vectors(reply, len(inputs)), _prompt_tokens(reply)

    def _vectors(self, reply: dict[str, Any], expected: int) -> list[list[float]]:
        data = reply.get("data")
        if not isinstance(data, list) or len(data) != expected:
            got = len(data) if isinstance(data, list) else "no"
            raise Unavailable(f"{SERVICE}: asked for {expected} embeddings, the reply holds {got}")
        by_index: dict[int, list[float]] = {}
        for position, item in enumerate(data):
            index = item.get("index", position) if isinstance(item, dict) else None
            vector = item.get("embedding") if isinstance(item, dict) else None
            if not isinstance(index, int) or not 0 <= index < expected or index in by_index:
                raise Unavailable(f"{SERVICE}: the reply has a missing, repeated or out-of-range index {index!r}")
            if not isinstance(vector, list):
                raise Unavailable(f"{SERVICE}: the reply item {index} has no float embedding")
            if len(vector) != self.dimension:
                raise InvalidArgument(
                    f"{SERVICE}: model {self.model!r} returned {len(vector)}-dimensional vectors, "
                    f"the collection expects {self.dimension}; set the dimension to {len(vector)}"
                )
            by_index[index] = [float(x) for x in vector]
        return [by_index[i] for i in range(expected)]


def _prompt_tokens(reply: dict[str, Any]) -> int | None:
    usage = reply.get("usage")
    value = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return int(value) if isinstance(value, int | float) else None
