"""JSON over HTTP to an OpenAI-compatible server: auth, timeouts, retries, error mapping."""

from __future__ import annotations

from typing import Any

import httpx

from bigrag_mcp.errors import Unavailable
from bigrag_mcp.retry import RetryPolicy, ServiceFailure, call_service, retry_after_from_headers
from bigrag_openai.settings import OFFICIAL_BASE_URL, OpenAISettings

SERVICE = "openai"


def error_detail(response: httpx.Response) -> str:
    """The server's own message: OpenAI's `error.message`, or what compatible servers put instead."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])
        for value in (error, body.get("message"), body.get("detail")):
            if isinstance(value, str):
                return value
    return response.text[:500]


class OpenAIClient:
    """POSTs JSON to `{base_url}/{path}`; the API key lives only in the request header."""

    def __init__(self, settings: OpenAISettings, *, retry: RetryPolicy | None = None) -> None:
        key = settings.api_key.get_secret_value() if settings.api_key else None
        if not key and settings.base_url.rstrip("/") == OFFICIAL_BASE_URL:
            raise Unavailable("openai: OPENAI_API_KEY is not set; set it, or point OPENAI_BASE_URL at a local server")
        self.base_url = settings.base_url.rstrip("/")
        self._key = key
        self._timeout = httpx.Timeout(settings.timeout, connect=settings.connect_timeout)
        self._retry = retry or settings.retry_policy()
        self._http: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"OpenAIClient(base_url={self.base_url!r})"

    def _client(self) -> httpx.AsyncClient:
        if self._http is None or self._http.is_closed:
            headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
            self._http = httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=self._timeout)
        return self._http

    async def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The reply's JSON object; failures raised as `BigRagError` after the retry policy is spent."""

        async def attempt() -> dict[str, Any]:
            response = await self._client().post(path, json=payload)
            if response.is_success:
                try:
                    body = response.json()
                except ValueError:
                    body = None
                if not isinstance(body, dict):
                    raise Unavailable(f"{SERVICE}: the reply to {path} is not a JSON object")
                return body
            raise ServiceFailure(
                error_detail(response),
                status=response.status_code,
                retry_after=retry_after_from_headers(response.headers),
            )

        return await call_service(SERVICE, attempt, self._retry, secrets=(self._key,))

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
