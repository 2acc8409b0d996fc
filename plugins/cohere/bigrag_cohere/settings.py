"""Configuration from COHERE_* environment variables (and a .env file)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from bigrag_mcp.retry import RetryPolicy


class CohereSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COHERE_", env_file=".env", extra="ignore")

    api_key: SecretStr | None = Field(default=None, description="Cohere API key (required).")
    base_url: str | None = Field(default=None, description="API base URL; the SDK's default (api.cohere.com) if unset.")
    timeout: float = Field(default=60.0, gt=0, description="Seconds to wait for a reply.")
    max_attempts: int = Field(default=4, ge=1, description="Attempts per request on 429, 5xx and timeouts.")
    embedding_model: str = Field(default="embed-v4.0", description="Embedding model when a collection names none.")
    embedding_dimension: int | None = Field(default=None, gt=0, description="Dimension when none is given.")
    max_batch: int = Field(default=96, ge=1, le=96, description="Texts per embed request (the API takes 96).")
    rerank_model: str = Field(default="rerank-v3.5", description="Rerank model.")
    chat_model: str = Field(default="command-a-03-2025", description="Chat model when none is configured.")

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.max_attempts)
