"""One configured cohere v2 client: calls go through the shared retry helper and come out as bigrag errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import cohere
import httpx
from cohere.core.api_error import ApiError

from bigrag_cohere.settings import CohereSettings
from bigrag_mcp.errors import Unavailable
from bigrag_mcp.retry import RetryPolicy, ServiceFailure, call_service, retry_after_from_headers

T = TypeVar("T")
SERVICE = "cohere"


def error_detail(body: Any) -> str:
    """Cohere's own message: `{"message": ...}` in the body, or the body itself."""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return str(body)[:500] if body else "no details"


class CohereService:
    """Holds the SDK's async v2 client (its own retries off: the shared helper retries)."""

    def __init__(self, settings: CohereSettings, *, retry: RetryPolicy | None = None) -> None:
        if settings.api_key is None or not settings.api_key.get_secret_value():
            raise Unavailable("cohere: COHERE_API_KEY is not set")
        self._key = settings.api_key.get_secret_value()
        self._settings = settings
        self._retry = retry or settings.retry_policy()
        self._client: cohere.AsyncClientV2 | None = None
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"CohereService(base_url={self._settings.base_url!r})"

    def _sdk(self) -> cohere.AsyncClientV2:
        if self._client is None:
            timeout = self._settings.timeout
            options: dict[str, Any] = {"base_url": self._settings.base_url} if self._settings.base_url else {}
            self._http = httpx.AsyncClient(timeout=timeout)
            self._client = cohere.AsyncClientV2(
                api_key=self._key,
                httpx_client=self._http,
                timeout=timeout,
                max_retries=0,
                **options,
            )
        return self._client

    async def call(self, operation: Callable[[cohere.AsyncClientV2], Awaitable[T]]) -> T:
        """`operation(client)` with retries; API errors raised as `BigRagError` with the key scrubbed."""

        async def attempt() -> T:
            try:
                return await operation(self._sdk())
            except ApiError as exc:
                raise ServiceFailure(
                    error_detail(exc.body),
                    status=exc.status_code,
                    retry_after=retry_after_from_headers(exc.headers or {}),
                ) from None

        return await call_service(SERVICE, attempt, self._retry, secrets=(self._key,))

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        self._client = self._http = None
