"""Weaviate client failures as bigrag errors, retried through the shared `bigrag_mcp.retry` helper."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import httpx
from grpc import StatusCode
from grpc.aio import AioRpcError
from weaviate.exceptions import (
    UnexpectedStatusCodeError,
    WeaviateBaseError,
    WeaviateConnectionError,
    WeaviateInvalidInputError,
    WeaviateRetryError,
    WeaviateStartUpError,
    WeaviateTimeoutError,
)

from bigrag_mcp.errors import BigRagError, InvalidArgument, Unavailable
from bigrag_mcp.retry import RetryPolicy, ServiceFailure, call_service, redact

T = TypeVar("T")
TENANT_NOT_FOUND = "tenant not found"
TENANT_NOT_ACTIVE = "tenant not active"


def message_of(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc)


def mentions(exc: BaseException, text: str) -> bool:
    return text in message_of(exc)


def is_transient(exc: BaseException) -> bool:
    """Connection trouble, timeouts and gRPC UNAVAILABLE (HTTP statuses are judged by `bigrag_mcp.retry`)."""
    if isinstance(exc, (WeaviateConnectionError, WeaviateTimeoutError, WeaviateStartUpError, WeaviateRetryError)):
        return True
    if isinstance(exc, (httpx.TransportError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, AioRpcError):
        return exc.code() in (StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED)
    return isinstance(exc, WeaviateBaseError) and "UNAVAILABLE" in message_of(exc)


def classify(exc: Exception, doing: str, secrets: Iterable[str | None]) -> Exception:
    """A `ServiceFailure` for what an HTTP status or a lost connection explains; a bigrag error for the rest."""
    detail = redact(message_of(exc).splitlines()[0][:300] if message_of(exc) else type(exc).__name__, secrets)
    if isinstance(exc, UnexpectedStatusCodeError):
        return ServiceFailure(detail, status=exc.status_code)
    if is_transient(exc):
        return ServiceFailure(detail)
    if isinstance(exc, WeaviateInvalidInputError):
        return InvalidArgument(f"Weaviate rejected {doing}: {detail}")
    return Unavailable(f"Weaviate failed while {doing}: {detail}")


async def retrying(
    doing: str, attempt: Callable[[], Awaitable[T]], policy: RetryPolicy, *, secrets: Iterable[str | None] = ()
) -> T:
    """Run `attempt`; transient failures are retried with backoff, the final one raised as a bigrag error."""
    secrets = tuple(secrets)

    async def once() -> T:
        try:
            return await attempt()
        except BigRagError:
            raise
        except Exception as exc:
            raise classify(exc, doing, secrets) from exc

    return await call_service(f"Weaviate ({doing})", once, policy, secrets=secrets)
