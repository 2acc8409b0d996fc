"""The store's tables. One place owns each fact; backends are indexes rebuilt from `chunks`."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    insert,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.dml import Insert
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_uid() -> str:
    """A collection identity: random, so a re-created name never meets the old one's index, log or usage."""
    return secrets.token_hex(8)


class UtcDateTime(TypeDecorator[datetime]):
    """Stored as UTC; always read back timezone-aware (SQLite drops the zone), so every API shows `...Z` times."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


def bulk_insert(model: type[Base]) -> Insert:
    """A Core INSERT into a model's table, for many rows given as column-named dicts: one executemany, without the
    ORM's per-row bookkeeping (nothing is read back)."""
    table = model.__table__
    assert isinstance(table, Table)
    return insert(table)


# Tenant columns hold "" for collections without a tenant_field, so unique keys work on every database.
NO_TENANT = ""


class Collection(Base):
    __tablename__ = "collections"
    __table_args__ = (UniqueConstraint("uid", name="uq_collections_uid"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uid: Mapped[str] = mapped_column(String(32), default=new_uid)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    embedding_provider: Mapped[str] = mapped_column(String(64))
    embedding_model: Mapped[str] = mapped_column(String(200))
    dimension: Mapped[int] = mapped_column(Integer)
    metadata_schema: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    tenant_field: Mapped[str | None] = mapped_column(String(64), nullable=True)
    chunk_size: Mapped[int] = mapped_column(Integer)
    chunk_overlap: Mapped[int] = mapped_column(Integer)
    chunk_strategy: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(32), default="english", server_default="english")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, onupdate=utcnow)


class Document(Base):
    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("collection_id", "tenant", "content_hash", name="uq_documents_content"),
        Index("ix_documents_collection_tenant_created", "collection_id", "tenant", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    tenant: Mapped[str] = mapped_column(String(256), default=NO_TENANT)
    filename: Mapped[str | None] = mapped_column(String(512), nullable=True)
    mime_type: Mapped[str] = mapped_column(String(128))
    content_hash: Mapped[str] = mapped_column(String(64))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    size_bytes: Mapped[int] = mapped_column(Integer)
    char_count: Mapped[int] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer)
    embedding_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class Chunk(Base):
    """A searchable record: a document chunk (`record_id` = `{document_id}#{chunk_index}`) or a raw vector."""

    __tablename__ = "chunks"
    __table_args__ = (
        UniqueConstraint("collection_id", "tenant", "record_id", name="uq_chunks_record"),
        Index("ix_chunks_document", "document_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    tenant: Mapped[str] = mapped_column(String(256), default=NO_TENANT)
    record_id: Mapped[str] = mapped_column(String(256))
    document_id: Mapped[str | None] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), nullable=True)
    chunk_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    char_start: Mapped[int | None] = mapped_column(Integer, nullable=True)
    char_end: Mapped[int | None] = mapped_column(Integer, nullable=True)
    page: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1-based, for paged formats (PDF, PPTX, XLSX)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class PageText(Base):
    """The extracted text of one page of a paged document, at [char_start, char_end) of its extracted text."""

    __tablename__ = "document_pages"

    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True)
    page: Mapped[int] = mapped_column(Integer, primary_key=True)
    char_start: Mapped[int] = mapped_column(Integer)
    char_end: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)


class IndexGeneration(Base):
    """A partition's change sequence: bumped by every write, so a process holding an in-memory copy knows how far it is behind.

    `compacted_through` is the highest sequence whose change rows were removed: a copy older than that refills.
    """

    __tablename__ = "index_generations"

    collection_uid: Mapped[str] = mapped_column(
        ForeignKey("collections.uid", ondelete="CASCADE"), primary_key=True
    )
    tenant: Mapped[str] = mapped_column(String(256), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    compacted_through: Mapped[int] = mapped_column(Integer, default=0)


class IndexChange(Base):
    """What one write changed in a partition: its record ids, or None when the whole partition was reset."""

    __tablename__ = "index_changes"
    __table_args__ = (Index("ix_index_changes_partition", "collection_uid", "tenant", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection_uid: Mapped[str] = mapped_column(ForeignKey("collections.uid", ondelete="CASCADE"))
    tenant: Mapped[str] = mapped_column(String(256))
    seq: Mapped[int] = mapped_column(Integer)
    record_ids: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


class TenantFence(Base):
    """An offboarded tenant: no write to (collection name, tenant) commits until an operator re-admits it.

    `tenant` is the partition's tenant column value ("" fences a whole collection-per-tenant collection);
    `offboarded_tenant` is the tenant name the operator offboarded.
    """

    __tablename__ = "tenant_fences"

    collection: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(256), primary_key=True)
    offboarded_tenant: Mapped[str] = mapped_column(String(256))
    offboarded_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    offboarded_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(128), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    collection: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tenant: Mapped[str | None] = mapped_column(String(256), nullable=True)
    role: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the policy role it was minted with
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class AuditEntry(Base):
    """Append-only and hash-chained: entry_hash = sha256(prev_hash + canonical JSON of the row)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_created", "created_at"), Index("ix_audit_resource", "resource_type", "resource_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    actor_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    resource_type: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    tenant: Mapped[str | None] = mapped_column(String(256), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))  # allowed | denied
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)


class UsageEvent(Base):
    __tablename__ = "usage_events"
    __table_args__ = (
        Index("ix_usage_created", "created_at"),
        Index("ix_usage_collection", "collection", "tenant"),
        Index("ix_usage_collection_uid", "collection_uid"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    operation: Mapped[str] = mapped_column(String(32))  # query | chat | upload | upsert | delete
    collection: Mapped[str | None] = mapped_column(String(64), nullable=True)
    collection_uid: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tenant: Mapped[str | None] = mapped_column(String(256), nullable=True)
    api_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    documents: Mapped[int] = mapped_column(Integer, default=0)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    storage_bytes: Mapped[int] = mapped_column(Integer, default=0)  # signed: deletes subtract
    embedding_tokens: Mapped[int] = mapped_column(Integer, default=0)
    tokens_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    chat_input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    chat_output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    provider: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)


# Days per usage rollup block: every event adds to the aligned block of each span holding its UTC day, so a window
# of up to a year is a handful of blocks per (collection, tenant, provider, model) instead of one row per event.
ROLLUP_SPANS = (1, 2, 4, 8, 16, 32, 64)


class UsageRollup(Base):
    """Sums of `usage_events` per aligned block of days, kept by a trigger on every insert into `usage_events`.

    scope 0 = one (collection, tenant) with every span; 1 = one collection, daily; 2 = everything, daily.
    Absent keys are "" (NULL would never conflict). `start_day` counts UTC days since 1970-01-01.
    """

    __tablename__ = "usage_rollup"
    __table_args__ = ({"sqlite_with_rowid": False},)

    scope: Mapped[int] = mapped_column(Integer, primary_key=True)
    span: Mapped[int] = mapped_column(Integer, primary_key=True)
    start_day: Mapped[int] = mapped_column(Integer, primary_key=True)
    collection: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(256), primary_key=True)
    collection_uid: Mapped[str] = mapped_column(String(32), primary_key=True)
    provider: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    events: Mapped[int] = mapped_column(BigInteger)
    queries: Mapped[int] = mapped_column(BigInteger)
    chat_calls: Mapped[int] = mapped_column(BigInteger)
    documents: Mapped[int] = mapped_column(BigInteger)
    chunks: Mapped[int] = mapped_column(BigInteger)
    storage_bytes: Mapped[int] = mapped_column(BigInteger)
    embedding_tokens: Mapped[int] = mapped_column(BigInteger)
    embedding_tokens_estimated: Mapped[int] = mapped_column(BigInteger)
    chat_input_tokens: Mapped[int] = mapped_column(BigInteger)
    chat_output_tokens: Mapped[int] = mapped_column(BigInteger)
    latency_sum: Mapped[float] = mapped_column(Float)  # of query and chat calls


class OutboxEvent(Base):
    """Billing events and webhook deliveries, written in the same transaction as the work they report."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # billing | webhook
    target: Mapped[str] = mapped_column(String(64))  # exporter name or webhook id
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | parked
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class Webhook(Base):
    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(128))  # signing secret: needed in clear to sign deliveries
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class LimitCounter(Base):
    """One counter of a `[[limits]]` entry for one subject, in its current window (reset in place on rollover)."""

    __tablename__ = "limit_counters"
    __table_args__ = (Index("ix_limit_counters_subject", "collection", "tenant"),)

    counter_key: Mapped[str] = mapped_column(String(64), primary_key=True)  # hash of limit, metric and subject
    limit_name: Mapped[str] = mapped_column(String(100))
    metric: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    role: Mapped[str | None] = mapped_column(String(64), nullable=True)
    collection: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tenant: Mapped[str | None] = mapped_column(String(256), nullable=True)
    window_start: Mapped[str] = mapped_column(String(40))  # ISO start of the window, or "total"
    used: Mapped[int] = mapped_column(BigInteger, default=0)
    max_value: Mapped[int] = mapped_column(BigInteger)
    hard: Mapped[bool] = mapped_column(Boolean)


class LimitWarning(Base):
    """A threshold already announced in a window, so each quota.warning goes out once."""

    __tablename__ = "limit_warnings"

    counter_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[str] = mapped_column(String(40), primary_key=True)
    threshold: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
