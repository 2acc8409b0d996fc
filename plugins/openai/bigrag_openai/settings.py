"""Configuration from OPENAI_* environment variables (and a .env file)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from bigrag_mcp.retry import RetryPolicy

OFFICIAL_BASE_URL = "https://api.openai.com/v1"


class OpenAISettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENAI_", env_file=".env", extra="ignore")

    api_key: SecretStr | None = Field(default=None, description="API key; optional for local compatible servers.")
    base_url: str = Field(default=OFFICIAL_BASE_URL, description="OpenAI or a compatible server (Ollama, vLLM, ...).")
    timeout: float = Field(default=60.0, gt=0, description="Seconds to wait for a reply.")
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to wait for a connection.")
    max_attempts: int = Field(default=4, ge=1, description="Attempts per request on 429, 5xx and timeouts.")
    embedding_model: str = Field(default="text-embedding-3-small", description="Model when a collection names none.")
    embedding_dimension: int | None = Field(default=None, gt=0, description="Dimension when none is given; needed for models not in the table.")
    embedding_query_prefix: str = Field(default="", description="Text put before each query (e.g. 'search_query: ').")
    embedding_document_prefix: str = Field(default="", description="Text put before each document chunk.")
    max_batch: int = Field(default=2048, ge=1, le=2048, description="Inputs per embeddings request.")
    max_batch_tokens: int = Field(default=300_000, ge=1, description="Estimated tokens per embeddings request.")
    truncate_input_tokens: int = Field(
        default=6000, ge=1, description="Inputs longer than this many estimated tokens are cut (models take 8191)."
    )
    chat_model: str = Field(default="gpt-4o-mini", description="Chat model when none is configured.")

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.max_attempts)
