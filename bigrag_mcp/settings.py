"""Configuration from BIGRAG_* environment variables (and a .env file), documented in the README."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BIGRAG_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=Path("./bigrag-data"), description="Folder for the SQLite store and local files.")
    database_url: str | None = Field(default=None, description="SQLAlchemy async URL; default SQLite in data_dir.")
    vector_backend: str = Field(default="memory", description="Registered vector backend name.")
    embedding_provider: str | None = Field(
        default=None, description="Default embedding provider of new collections (unset: local when installed, else hash)."
    )
    embedding_model: str | None = Field(default=None, description="Default embedding model (provider default if unset).")
    embedding_dimension: int | None = Field(default=None, description="Default dimension (provider default if unset).")
    chat_provider: str | None = Field(default=None, description="Chat provider for the chat tool; unset = sampling or extractive.")
    chat_model: str | None = Field(default=None, description="Chat model for the chat provider.")
    local_model_dir: Path | None = Field(
        default=None, description="Folder with an ONNX sentence-transformers model and tokenizer.json for the 'local' embedder."
    )
    load_plugins: str | None = Field(default=None, description="Comma-separated allow-list of plugin names to load.")
    api_key: SecretStr | None = Field(default=None, description="The API key of a stdio session.")
    policy_file: Path | None = Field(default=None, description="A policy file replacing the built-in default policy.")
    billing_exporters: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='JSON: {"name": {exporter config}} of billing exporters to send events to.'
    )
    webhook_allow_private: bool = Field(
        default=False, description="Allow webhook URLs on loopback, private and link-local addresses."
    )
    index_snapshots: bool = Field(
        default=False,
        description="Snapshot big in-memory partitions to data_dir/index-snapshots, so a restart maps them.",
    )
    ann_min_rows: int = Field(
        default=100_000,
        ge=0,
        description="Partitions of at least this many records also get an HNSW graph (the `ann` extra); 0: always exact.",
    )
    ann_ef: int = Field(
        default=256, ge=1, description="Candidates an HNSW search explores (at least the depth asked for): recall vs speed."
    )
    max_chunks_per_document: int = Field(
        default=100_000, ge=1, description="Uploads whose text needs more chunks are refused with limit_exceeded."
    )
    write_concurrency: int = Field(
        default=2, ge=1, description="Writes in flight at a time per API key and per tenant; one more is refused (limit_exceeded)."
    )
    relay_interval_s: float = Field(
        default=5.0, gt=0, le=3600, description="Seconds the outbox relay waits between passes when it found little to send."
    )
    price_file: Path | None = Field(default=None, description="TOML price table overriding the built-in one.")
    loader_timeout_s: float = Field(default=60.0, gt=0, description="Wall time one document's loader may take.")
    loader_memory_mb: int = Field(default=1024, ge=64, description="Address space one document's loader process may use.")
    loader_unzipped_mb: int = Field(default=256, ge=1, description="Uncompressed size a DOCX/XLSX/PPTX (a zip) may expand to.")
    compute_threads: int = Field(
        default=0, ge=0, description="Worker threads for CPU-bound work such as searches (0: one per core)."
    )
    blas_threads: int = Field(
        default=1, ge=0, description="Threads each BLAS call may use (0: the library's default of one per core)."
    )
    log_level: str = Field(default="WARNING", description="Logging level (logs go to stderr); INFO adds the access log.")
    log_format: Literal["text", "json"] = Field(default="text", description="Log lines as text or as JSON objects.")
    auth_issuer_url: str | None = Field(
        default=None, description="An OAuth authorization server to advertise in the protected-resource metadata."
    )
    public_url: str | None = Field(default=None, description="Public base URL of the HTTP server (auth metadata).")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'bigrag.db').resolve()}"
