"""Configuration from WEAVIATE_* environment variables."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class WeaviateSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WEAVIATE_", env_file=".env", extra="ignore")

    url: str = Field(default="http://localhost:8080", description="REST endpoint of the Weaviate server.")
    api_key: SecretStr | None = Field(default=None, description="API key sent as a bearer token.")
    grpc_host: str | None = Field(default=None, description="gRPC host; the REST host if unset.")
    grpc_port: int = Field(default=50051, description="gRPC port.")
    grpc_secure: bool | None = Field(default=None, description="TLS for gRPC; follows the URL scheme if unset.")
    class_prefix: str = Field(default="Bigrag", pattern=r"^[A-Z][A-Za-z0-9]*$", description="Prefix of the classes.")
    inactive_tenant: Literal["activate", "unavailable"] = Field(
        default="activate", description="An inactive tenant is activated on demand, or reported as unavailable."
    )
    retries: int = Field(default=3, ge=0, le=10, description="Retries of a transient failure before `unavailable`.")
    backoff_seconds: float = Field(default=0.2, ge=0, description="First retry delay; doubles on each retry.")
    timeout_seconds: float = Field(default=30.0, gt=0, description="Timeout of a query or a write.")
    activation_timeout_seconds: float = Field(
        default=30.0, ge=0, description="Longest wait for an offloaded tenant to onload before `unavailable`."
    )
    activation_backoff_seconds: float = Field(
        default=0.5, gt=0, description="First wait between checks of an onloading tenant; doubles, at most 8 s."
    )
    overfetch: int = Field(default=4, ge=1, description="Candidates fetched per hit when a filter is checked post-query.")
    max_candidates: int = Field(default=10000, ge=1, description="Most candidates one post-filtered search reads.")
    query_maximum_results: int = Field(
        default=10000, ge=1, description="The server's QUERY_MAXIMUM_RESULTS: no search asks for more."
    )
    filterable_fields: str = Field(
        default="*",
        description="Comma-separated metadata fields written to indexed properties, or `*` for all; "
        "the others are kept unindexed and filtered after the query.",
    )

    @property
    def indexed_fields(self) -> frozenset[str] | None:
        """The fields written to indexed properties; None for all."""
        if self.filterable_fields.strip() == "*":
            return None
        return frozenset(f.strip() for f in self.filterable_fields.split(",") if f.strip())

    def indexes(self, field: str) -> bool:
        """Whether a metadata field gets typed, indexed properties."""
        fields = self.indexed_fields
        return fields is None or field in fields

    @property
    def most_candidates(self) -> int:
        """The largest result window one search may ask for."""
        return min(self.max_candidates, self.query_maximum_results)

    @property
    def http_host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"

    @property
    def http_secure(self) -> bool:
        return urlsplit(self.url).scheme == "https"

    @property
    def http_port(self) -> int:
        return urlsplit(self.url).port or (443 if self.http_secure else 80)
