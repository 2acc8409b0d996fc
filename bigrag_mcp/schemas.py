"""Pydantic models of what tools take and return: the structured output an agent reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

ChunkStrategyName = Literal["paragraph", "recursive"]
SearchModeName = Literal["semantic", "keyword", "hybrid"]


class CollectionInfo(BaseModel):
    name: str
    description: str
    embedding_provider: str
    embedding_model: str
    dimension: int
    metadata_schema: dict[str, Any] | None
    tenant_field: str | None
    chunk_size: int
    chunk_overlap: int
    chunk_strategy: ChunkStrategyName
    language: str = Field(default="english", description="Keyword search analyzer: a Snowball stemmer language.")
    created_at: datetime
    updated_at: datetime
    document_count: int | None = Field(default=None, description="Documents (of the caller's tenant, if any).")
    vector_count: int | None = Field(default=None, description="Chunks plus raw vectors (of the caller's tenant).")


class CollectionList(BaseModel):
    collections: list[CollectionInfo]
    next_cursor: str | None = None


class DocumentInfo(BaseModel):
    id: str
    collection: str
    tenant: str | None
    filename: str | None
    mime_type: str
    metadata: dict[str, Any]
    size_bytes: int
    char_count: int
    chunk_count: int
    created_at: datetime


class ChunkInfo(BaseModel):
    id: str
    chunk_index: int
    text: str
    char_start: int = Field(description="Offset of the chunk's first character in the document's extracted text.")
    char_end: int = Field(description="Offset just past the chunk's last character in the extracted text.")
    page: int | None = Field(default=None, description="1-based page (slide, sheet) the chunk starts on; null if unpaged.")


class PageInfo(BaseModel):
    page: int
    char_start: int
    char_end: int
    text: str = Field(description="The extracted text of the page: the document's extracted text [char_start, char_end).")


class DocumentDetail(DocumentInfo):
    chunks: list[ChunkInfo]
    page: PageInfo | None = Field(default=None, description="The page asked for, with its extracted text.")
    next_chunk_offset: int | None = Field(description="Pass as chunk_offset to read more chunks; null at the end.")


class DocumentPage(BaseModel):
    documents: list[DocumentInfo]
    next_cursor: str | None


class UploadResult(BaseModel):
    document: DocumentInfo
    deduplicated: bool = Field(description="True when the same content was already stored: nothing new was written.")
    embedding_tokens: int | None


class DeleteResult(BaseModel):
    deleted: list[str]
    not_found: list[str]


class UpsertResult(BaseModel):
    upserted: int
    ids: list[str]


class QueryRow(BaseModel):
    id: str
    text: str | None
    score: float
    retrieval_score: float | None = Field(
        default=None, description="Set when the query was reranked: the search score; `score` is then the reranker's."
    )
    document_id: str | None
    document_filename: str | None
    chunk_index: int | None
    page: int | None = Field(default=None, description="1-based page (slide, sheet) the chunk starts on; null if unpaged.")
    char_start: int | None
    char_end: int | None
    metadata: dict[str, Any]
    collection: str


class Timings(BaseModel):
    embed_ms: float
    search_ms: float
    rerank_ms: float | None = Field(default=None, description="Time spent reranking (null: not reranked).")
    total_ms: float


class QueryResult(BaseModel):
    results: list[QueryRow]
    search_mode: SearchModeName
    timings: Timings
