"""The typed contracts between the core and its plugins: records, requests, and provider protocols."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncConnection

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.filters import FilterNode

SearchMode = Literal["semantic", "keyword", "hybrid"]
Purpose = Literal["document", "query"]


@dataclass(frozen=True)
class Partition:
    """The address of every backend call: a collection and, in tenant collections, one tenant.

    `language` is the collection's keyword analyzer (a Snowball stemmer name); it is a setting of the
    collection, not part of the address, so it takes no part in equality.
    """

    collection: str
    tenant: str | None = None
    language: str = field(default="english", compare=False)


@dataclass(frozen=True)
class VectorRecord:
    """One indexed vector: a document chunk (`{document_id}#{chunk_index}`) or a raw vector id."""

    id: str
    vector: Sequence[float]
    text: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchRequest:
    """What a backend searches for; `filter` is an already validated tree (see `bigrag_mcp.filters`)."""

    top_k: int
    mode: SearchMode = "semantic"
    vector: Sequence[float] | None = None
    text: str | None = None
    min_score: float | None = None
    filter: FilterNode | None = None

    def check(self, modes: frozenset[str]) -> None:
        """Refuse (InvalidArgument) a request a backend offering `modes` cannot answer: an unknown mode, a bad
        top_k, or a missing vector or text."""
        if self.mode not in modes:
            raise InvalidArgument(f"search mode {self.mode!r} is not one of {sorted(modes)}")
        if self.top_k < 1:
            raise InvalidArgument("top_k must be at least 1")
        if self.mode in ("semantic", "hybrid") and self.vector is None:
            raise InvalidArgument(f"{self.mode} search needs a query vector")
        if self.mode in ("keyword", "hybrid") and self.text is None:
            raise InvalidArgument(f"{self.mode} search needs a query text")


@dataclass(frozen=True)
class Hit:
    id: str
    score: float


@dataclass(frozen=True)
class Embeddings:
    """Vectors in input order, and the token count the provider reported (None if it reports none)."""

    vectors: list[list[float]]
    tokens: int | None = None


@runtime_checkable
class EmbeddingProvider(Protocol):
    name: str
    model: str
    dimension: int
    max_batch: int

    async def embed(self, texts: Sequence[str], *, purpose: Purpose) -> Embeddings: ...


@runtime_checkable
class ProcessEmbedder(Protocol):
    """An embedding provider whose vectors are CPU work with no outside state, alike for queries and documents: with
    `process_safe` true, a batch may compute them in a worker process (the provider is pickled there) as `matrix`,
    the rows `embed` gives, in input order."""

    process_safe: bool

    def matrix(self, texts: Sequence[str]) -> npt.NDArray[np.float64]: ...


class EmbeddingProviderFactory(Protocol):
    def __call__(self, *, model: str | None, dimension: int | None) -> EmbeddingProvider: ...


@runtime_checkable
class VectorBackend(Protocol):
    """An index that can be rebuilt from the store. `persistent=False` means the core refills it after a restart."""

    name: str
    persistent: bool
    search_modes: frozenset[str]

    async def upsert(self, where: Partition, records: Sequence[VectorRecord]) -> None: ...
    async def delete(self, where: Partition, ids: Sequence[str]) -> int: ...
    async def search(self, where: Partition, request: SearchRequest) -> list[Hit]: ...
    async def drop(self, collection: str, tenant: str | None = None) -> None: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class PartitionRows:
    """A whole partition as the store holds it: record ids, one float32 matrix, texts, metadata.

    Row i of `vectors` belongs to `ids[i]`; rows past the ids are spare room. The receiver owns the matrix and
    may normalise it in place and grow into the spare rows.
    """

    ids: list[str]
    vectors: npt.NDArray[np.float32]
    texts: list[str | None]
    metadata: list[Mapping[str, Any]]


@runtime_checkable
class Refillable(Protocol):
    """A non-persistent backend that can take a whole partition at once (instead of upserts in batches)."""

    async def replace(self, where: Partition, rows: PartitionRows) -> None:
        """Make the partition hold exactly `rows`, atomically for every other caller."""


@runtime_checkable
class StoreJoinable(Protocol):
    """A persistent backend that can write inside the store's own transaction when both live in one database."""

    def joined(self, connection: AsyncConnection) -> VectorBackend | None:
        """This backend writing (upsert, delete, drop) through the store's `connection` and its open transaction,
        or None when that connection is not to the backend's own database."""


@runtime_checkable
class GraphIndexed(Protocol):
    """A backend that can give big partitions an approximate (graph) index beside exact search."""

    def configure_ann(self, min_rows: int, folder: Path | None, ef: int) -> None:
        """Use a graph for partitions of at least `min_rows` records (0: never), searched with `ef`, saved in `folder`."""


class VectorBackendFactory(Protocol):
    def __call__(self) -> VectorBackend: ...


@dataclass(frozen=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ChatReply:
    text: str
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None


@runtime_checkable
class ChatProvider(Protocol):
    name: str
    model: str

    async def generate(
        self, messages: Sequence[ChatMessage], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> ChatReply: ...


class ChatProviderFactory(Protocol):
    def __call__(self, *, model: str | None) -> ChatProvider: ...


@runtime_checkable
class Reranker(Protocol):
    name: str
    model: str

    async def rerank(self, query: str, documents: Sequence[str], top_n: int) -> list[tuple[int, float]]:
        """At most `top_n` (index into `documents`, relevance score) pairs, best first."""


class RerankerFactory(Protocol):
    def __call__(self, *, model: str | None) -> Reranker: ...


@dataclass(frozen=True)
class BillingEvent:
    """One billable event from the outbox; `id` is the idempotency key every exporter must send."""

    id: str
    event: str  # e.g. "query", "chat", "document.upload", "embedding.tokens"
    value: float
    timestamp: datetime
    collection: str | None = None
    tenant: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


DeliveryStatus = Literal["sent", "duplicate", "retry", "failed"]


@dataclass(frozen=True)
class DeliveryResult:
    """How one event fared: `retry` may carry the server's Retry-After in seconds; `failed` is permanent."""

    status: DeliveryStatus
    detail: str = ""
    retry_after: float | None = None


@runtime_checkable
class BillingExporter(Protocol):
    name: str

    async def send(self, event: BillingEvent) -> DeliveryResult: ...
    async def close(self) -> None: ...


class BillingExporterFactory(Protocol):
    def __call__(self, config: Mapping[str, Any]) -> BillingExporter: ...


@dataclass(frozen=True)
class Extracted:
    """A loader's text; for paged formats `page_starts[i]` is the offset in `text` where page i + 1 begins."""

    text: str
    page_starts: tuple[int, ...] = ()


class DocumentLoader(Protocol):
    """Turn uploaded bytes into text (or `Extracted` with pages); raise `InvalidArgument` for bytes it cannot read.

    Loaders run in a separate process with time and memory bounds (so they must be picklable: module-level
    functions), unless they set `in_process = True` (pure Python, linear in the input).
    """

    def __call__(self, data: bytes, *, filename: str | None, mime_type: str | None) -> str | Extracted: ...
