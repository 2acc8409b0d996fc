"""The shared retry helper: backoff, Retry-After, bounds, and what final failures mean."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest

from bigrag_mcp.errors import BigRagError, InvalidArgument, LimitExceeded, Unavailable
from bigrag_mcp.retry import (
    RetryPolicy,
    ServiceFailure,
    call_service,
    parse_retry_after,
    redact,
    retry_after_from_headers,
    service_error,
    with_retries,
)


class Recorder:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def failing(*failures: BaseException, result: str = "ok") -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """An operation raising `failures` in turn, then returning `result`; the list counts the calls."""
    calls = [0]

    async def operation() -> str:
        calls[0] += 1
        if calls[0] <= len(failures):
            raise failures[calls[0] - 1]
        return result

    return operation, calls


def test_parse_retry_after_seconds_dates_and_garbage() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("") is None and parse_retry_after("soon") is None
    date = "Wed, 21 Oct 2015 07:28:30 GMT"
    assert parse_retry_after(date, now=lambda: 1445412480.0) == 30.0
    assert parse_retry_after(date, now=lambda: 1445412600.0) == 0.0


def test_retry_after_headers_prefer_milliseconds_in_any_case() -> None:
    assert retry_after_from_headers({"Retry-After-Ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_from_headers({"RETRY-AFTER": "9"}) == 9.0
    assert retry_after_from_headers({}) is None


def test_backoff_doubles_with_jitter_and_a_cap() -> None:
    low = RetryPolicy(base_delay=1.0, max_delay=5.0, rand=lambda: 0.0)
    high = RetryPolicy(base_delay=1.0, max_delay=5.0, rand=lambda: 1.0)
    assert [low.delay(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1.0, 2.0, 2.5, 2.5]
    assert [high.delay(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_retry_after_is_honoured_up_to_a_limit() -> None:
    policy = RetryPolicy(max_retry_after=60.0)
    assert policy.delay(1, retry_after=42.0) == 42.0
    assert policy.delay(3, retry_after=0.0) == 0.0
    assert policy.delay(1, retry_after=61.0) is None


def test_a_policy_needs_one_attempt() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


@pytest.mark.anyio
async def test_transient_failures_are_retried_until_success() -> None:
    sleep = Recorder()
    operation, calls = failing(
        ServiceFailure("slow down", status=429, retry_after=3.0),
        ServiceFailure("boom", status=503),
        httpx.ConnectError("refused"),
    )
    policy = RetryPolicy(attempts=4, base_delay=1.0, sleep=sleep, rand=lambda: 0.5)
    assert await with_retries(operation, policy, label="svc") == "ok"
    assert calls[0] == 4
    assert sleep.delays == [3.0, 1.5, 3.0]


@pytest.mark.anyio
async def test_attempts_are_bounded_and_the_last_failure_is_raised() -> None:
    sleep = Recorder()
    operation, calls = failing(*[ServiceFailure(f"boom {i}", status=500) for i in range(5)])
    with pytest.raises(ServiceFailure, match="boom 2"):
        await with_retries(operation, RetryPolicy(attempts=3, sleep=sleep), label="svc")
    assert calls[0] == 3 and len(sleep.delays) == 2


@pytest.mark.anyio
async def test_timeouts_become_failures_without_a_status() -> None:
    operation, _ = failing(*[httpx.ReadTimeout("slow")] * 2)
    with pytest.raises(ServiceFailure) as caught:
        await with_retries(operation, RetryPolicy(attempts=2, sleep=Recorder()), label="svc")
    assert caught.value.status is None and "ReadTimeout" in caught.value.detail


@pytest.mark.anyio
async def test_permanent_failures_and_other_errors_are_not_retried() -> None:
    sleep = Recorder()
    operation, calls = failing(ServiceFailure("bad input", status=400))
    with pytest.raises(ServiceFailure):
        await with_retries(operation, RetryPolicy(sleep=sleep), label="svc")
    operation, calls2 = failing(KeyError("bug"))
    with pytest.raises(KeyError):
        await with_retries(operation, RetryPolicy(sleep=sleep), label="svc")
    assert calls == [1] and calls2 == [1] and sleep.delays == []


@pytest.mark.anyio
async def test_a_retry_after_beyond_the_limit_stops_at_once() -> None:
    sleep = Recorder()
    operation, calls = failing(ServiceFailure("quota", status=429, retry_after=3600.0))
    with pytest.raises(LimitExceeded, match="quota"):
        await call_service("svc", operation, RetryPolicy(sleep=sleep))
    assert calls == [1] and sleep.delays == []


@pytest.mark.parametrize(
    ("status", "kind", "fragment"),
    [
        (400, InvalidArgument, "rejected the request (HTTP 400)"),
        (404, InvalidArgument, "rejected the request (HTTP 404)"),
        (422, InvalidArgument, "rejected the request (HTTP 422)"),
        (401, Unavailable, "check the API key"),
        (403, Unavailable, "check the API key"),
        (429, LimitExceeded, "rate limit"),
        (500, Unavailable, "failed (HTTP 500)"),
        (None, Unavailable, "did not answer"),
        (418, Unavailable, "answered HTTP 418"),
    ],
)
def test_final_failures_map_to_the_design_codes(status: int | None, kind: type[BigRagError], fragment: str) -> None:
    error = service_error("svc", ServiceFailure("the service's words", status=status))
    assert type(error) is kind
    assert fragment in error.message and "the service's words" in error.message


def test_secrets_are_redacted_from_messages() -> None:
    failure = ServiceFailure("Incorrect API key provided: sk-123", status=401)
    assert "sk-123" not in service_error("svc", failure, secrets=["sk-123", None]).message
    assert redact("a sk-1 b sk-1", ["sk-1", ""]) == "a *** b ***"
