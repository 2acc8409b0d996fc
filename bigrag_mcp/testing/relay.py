"""Helpers for testing billing exporters through the outbox relay: a settable clock and a simulated crash."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bigrag_mcp.store.db import Database
from bigrag_mcp.types import BillingEvent, BillingExporter, DeliveryResult


class FakeClock:
    """An injected clock a little ahead of real time, so rows queued just now are already due."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Crash(BaseException):
    """Stands in for the process dying: nothing after it runs, not even `except Exception`."""


class CrashAfterSend:
    """Wraps an exporter: the send really happens, then the 'process' dies before the relay can mark the row."""

    def __init__(self, inner: BillingExporter) -> None:
        self.inner = inner
        self.name = inner.name

    async def send(self, event: BillingEvent) -> DeliveryResult:
        result = await self.inner.send(event)
        assert result.status == "sent", result
        raise Crash()

    async def close(self) -> None:
        await self.inner.close()


@asynccontextmanager
async def temporary_database(folder: Path) -> AsyncIterator[Database]:
    """A migrated SQLite store in `folder`, closed afterwards."""
    database = Database(f"sqlite+aiosqlite:///{folder}/t.db")
    await database.migrate()
    try:
        yield database
    finally:
        await database.close()
