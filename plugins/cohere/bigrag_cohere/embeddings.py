"""The "cohere" embedding provider: v2 embed with the input type that matches the purpose."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import cohere
from cohere.v2.client import OMIT

from bigrag_cohere.client import SERVICE, CohereService
from bigrag_mcp.errors import InvalidArgument, Unavailable
from bigrag_mcp.types import Embeddings, Purpose

INPUT_TYPES: dict[Purpose, str] = {"document": "search_document", "query": "search_query"}

# model -> (native dimension, the other dimensions `output_dimension` may ask for)
KNOWN_MODELS: dict[str, tuple[int, frozenset[int]]] = {
    "embed-v4.0": (1536, frozenset({256, 512, 1024})),
    "embed-english-v3.0": (1024, frozenset()),
    "embed-multilingual-v3.0": (1024, frozenset()),
    "embed-english-light-v3.0": (384, frozenset()),
    "embed-multilingual-light-v3.0": (384, frozenset()),
}


def resolve_dimension(model: str, dimension: int | None) -> tuple[int, bool]:
    """The vector size for `model`, and whether to send `output_dimension`; InvalidArgument if impossible."""
    if model not in KNOWN_MODELS:
        if dimension is None:
            raise InvalidArgument(
                f"cohere: model {model!r} is not in the known table ({', '.join(sorted(KNOWN_MODELS))}); "
                "give its dimension explicitly"
            )
        return dimension, False
    native, shorter = KNOWN_MODELS[model]
    if dimension is None or dimension == native:
        return native, False
    if dimension not in shorter:
        allowed = ", ".join(str(d) for d in sorted(shorter | {native}))
        raise InvalidArgument(f"cohere: model {model!r} produces vectors of dimension {allowed}, not {dimension}")
    return dimension, True


class CohereEmbeddings:
    """Float vectors from Cohere embed, in input order; tokens from `meta.billed_units.input_tokens`."""

    name = "cohere"

    def __init__(self, service: CohereService, *, model: str, dimension: int | None, max_batch: int = 96) -> None:
        self.model = model
        self.dimension, self._send_dimension = resolve_dimension(model, dimension)
        self.max_batch = max_batch
        self._service = service

    def __repr__(self) -> str:
        return f"CohereEmbeddings(model={self.model!r}, dimension={self.dimension})"

    async def aclose(self) -> None:
        """Close the pooled HTTP connections."""
        await self._service.aclose()

    async def embed(self, texts: Sequence[str], *, purpose: Purpose) -> Embeddings:
        vectors: list[list[float]] = []
        tokens: int | None = None
        for start in range(0, len(texts), self.max_batch):
            batch = list(texts[start : start + self.max_batch])
            reply = await self._service.call(partial(self._request, batch=batch, purpose=purpose))
            vectors.extend(self._vectors(reply, len(batch)))
            billed = reply.meta.billed_units if reply.meta else None
            if billed is not None and billed.input_tokens is not None:
                tokens = (tokens or 0) + int(billed.input_tokens)
        return Embeddings(vectors=vectors, tokens=tokens if texts else 0)

    async def _request(
        self, client: cohere.AsyncClientV2, *, batch: list[str], purpose: Purpose
    ) -> cohere.EmbedByTypeResponse:
        return await client.embed(
            model=self.model,
            texts=batch,
            input_type=INPUT_TYPES[purpose],
            embedding_types=["float"],
            truncate="END",
            output_dimension=self.dimension if self._send_dimension else OMIT,
        )

    def _vectors(self, reply: cohere.EmbedByTypeResponse, expected: int) -> list[list[float]]:
        floats = reply.embeddings.float_ if reply.embeddings else None
        if floats is None or len(floats) != expected:
            got = len(floats) if floats is not None else "no"
            raise Unavailable(f"{SERVICE}: asked for {expected} embeddings, the reply holds {got}")
        for vector in floats:
            if len(vector) != self.dimension:
                raise InvalidArgument(
                    f"{SERVICE}: model {self.model!r} returned {len(vector)}-dimensional vectors, "
                    f"the collection expects {self.dimension}; set the dimension to {len(vector)}"
                )
        return [[float(x) for x in vector] for vector in floats]
