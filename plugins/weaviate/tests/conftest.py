"""Fixtures: a fake Weaviate per test, and a backend wired to it whose retry sleeps are recorded, not slept."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from bigrag_weaviate import WeaviateBackend, WeaviateSettings
from bigrag_weaviate.testing import FakeWeaviate


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> Iterator[FakeWeaviate]:
    with FakeWeaviate() as server:
        yield server


class Sleeps(list[float]):
    """Stands in for asyncio.sleep: remembers each requested delay and returns at once."""

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def settings_for(fake: FakeWeaviate, **overrides: object) -> WeaviateSettings:
    return WeaviateSettings(url=fake.url, grpc_port=fake.grpc_port, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def backend(fake: FakeWeaviate, sleeps: Sleeps) -> AsyncIterator[WeaviateBackend]:
    b = WeaviateBackend(settings_for(fake), sleep=sleeps)
    yield b
    await b.close()
