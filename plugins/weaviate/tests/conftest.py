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
def fake() -> Iterator[FakeWeaviate]:
    with FakeWeaviate() as server:
        yield server


@pytest.fixture
def sleeps() -> RecordedSleeps:
    return RecordedSleeps()


@pytest.fixture
async def backend(fake: FakeWeaviate, sleeps: RecordedSleeps) -> AsyncIterator[WeaviateBackend]:
    b = WeaviateBackend(fake.settings(), sleep=sleeps)
    yield b
    await b.close()
