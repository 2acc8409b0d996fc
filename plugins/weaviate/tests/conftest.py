"""Fixtures: a fake Weaviate per test, and a backend wired to it whose retry sleeps are recorded, not slept."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from bigrag_weaviate import WeaviateBackend
from bigrag_weaviate.testing import FakeWeaviate, RecordedSleeps


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sleeps() -> RecordedSleeps:
    return RecordedSleeps()


@pytest.fixture
def fake(sleeps: RecordedSleeps) -> Iterator[FakeWeaviate]:
    """A fake whose clock is the backend's recorded sleeps: offloaded tenants onload in 3 fake seconds."""
    with FakeWeaviate(clock=sleeps.now, onload_seconds=3.0) as server:
        yield server


@pytest.fixture
async def backend(fake: FakeWeaviate, sleeps: RecordedSleeps) -> AsyncIterator[WeaviateBackend]:
    b = WeaviateBackend(fake.settings(), sleep=sleeps)
    yield b
    await b.close()
