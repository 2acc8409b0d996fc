"""Bounded retries with backoff for outside HTTP services, and what their final failures mean to a caller."""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from bigrag_mcp.errors import BigRagError, InvalidArgument, LimitExceeded, Unavailable

T = TypeVar("T")
log = logging.getLogger(__name__)


class ServiceFailure(Exception):
    """A reply (or no reply: `status=None`) that a service call ended with; `detail` is the service's own words."""

    def __init__(self, detail: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """True when another attempt may succeed: rate limits, server errors, timeouts, dropped connections."""
        return self.status is None or is_transient_status(self.status)


def is_transient_status(status: int) -> bool:
    """429, 408 and every 5xx are worth retrying; other statuses will answer the same again."""
    return status in (408, 429) or status >= 500


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """The wait a reply asks for: `retry-after-ms` (OpenAI) or `retry-after`, header names in any case."""
    lowered = {key.lower(): value for key, value in headers.items()}
    millis = parse_retry_after(lowered.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    return parse_retry_after(lowered.get("retry-after"))


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry; `sleep` and `rand` are injectable so tests never really wait."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0
    sleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep, repr=False, compare=False)
    rand: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def delay(self, retry: int, retry_after: float | None = None) -> float | None:
        """Seconds to wait before retry number `retry` (1-based), or None when the service asks for too long a wait.

        A Retry-After from the service is honoured as given; otherwise exponential backoff with jitter
        (half the step fixed, half random) capped at `max_delay`.
        """
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        step = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return step / 2 + self.rand() * step / 2


def _as_failure(exc: BaseException) -> ServiceFailure | None:
    if isinstance(exc, ServiceFailure):
        return exc
    import httpx  # here, not at the top: commands that call no service (an ingest) never load the HTTP client

    if isinstance(exc, httpx.TimeoutException):
        return ServiceFailure(f"no reply in time ({type(exc).__name__})")
    if isinstance(exc, httpx.TransportError):
        return ServiceFailure(f"connection failed ({type(exc).__name__}: {exc})")
    return None


async def with_retries(
    operation: Callable[[], Awaitable[T]], policy: RetryPolicy, *, label: str, secrets: Iterable[str | None] = ()
) -> T:
    """Run `operation` until it succeeds, fails permanently, or the attempts run out; re-raise the last failure.

    Retried: a transient `ServiceFailure`, an httpx timeout or transport error (these are re-raised as
    `ServiceFailure` with `status=None`). Anything else propagates at once. Logged details omit `secrets`.
    """
    secrets = tuple(secrets)
    attempt = 1
    while True:
        try:
            return await operation()
        except Exception as exc:
            failure = _as_failure(exc)
            if failure is None:
                raise
            wait = policy.delay(attempt, failure.retry_after) if failure.transient else None
            if wait is None or attempt >= policy.attempts:
                if failure is exc:
                    raise
                raise failure from exc
            log.warning(
                "%s: %s (HTTP %s); retry %d of %d in %.2fs",
                label, redact(failure.detail, secrets), failure.status, attempt, policy.attempts - 1, wait,
            )
            attempt += 1
            await policy.sleep(wait)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every non-empty secret in `text` with `***`."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def service_error(service: str, failure: ServiceFailure, *, secrets: Iterable[str | None] = ()) -> BigRagError:
    """Map a final failure to the design's codes, keeping the service's own message (with secrets removed)."""
    detail = redact(failure.detail, secrets)
    status = failure.status
    if status is None:
        return Unavailable(f"{service} did not answer: {detail}; try again later")
    if status in (401, 403):
        return Unavailable(f"{service} refused the credentials (HTTP {status}): {detail}; check the API key")
    if status == 429:
        return LimitExceeded(f"{service} rate limit or quota reached (HTTP 429): {detail}; try again later")
    if is_transient_status(status):
        return Unavailable(f"{service} failed (HTTP {status}): {detail}; try again later")
    if status in (400, 404, 413, 422):
        return InvalidArgument(f"{service} rejected the request (HTTP {status}): {detail}")
    return Unavailable(f"{service} answered HTTP {status}: {detail}")


async def call_service(
    service: str,
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    secrets: Iterable[str | None] = (),
) -> T:
    """`with_retries`, then a final failure raised as the matching `BigRagError` (secrets redacted)."""
    secrets = tuple(secrets)
    try:
        return await with_retries(operation, policy, label=service, secrets=secrets)
    except ServiceFailure as failure:
        raise service_error(service, failure, secrets=secrets) from None
