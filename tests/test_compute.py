"""CPU-bound work off the event loop: worker threads, the read/write lock the memory backend uses, BLAS threads."""

from __future__ import annotations

import threading

import anyio
import anyio.lowlevel
import pytest
from threadpoolctl import threadpool_info

from bigrag_mcp import compute
from bigrag_mcp.compute import ReadWriteLock
from bigrag_mcp.default_plugins import memory_backend
from bigrag_mcp.default_plugins.memory_backend import MemoryBackend
from bigrag_mcp.types import Partition, SearchRequest, VectorRecord

pytestmark = pytest.mark.anyio
WHERE = Partition("c.1", None)


def spy_threads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread each exact search runs in, from now on."""
    seen: list[int] = []
    nearest = memory_backend._Partition.nearest

    def spy(self: memory_backend._Partition, *args: object) -> list[memory_backend.Hit]:
        seen.append(threading.get_ident())
        return nearest(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(memory_backend._Partition, "nearest", spy)
    return seen


async def search_a(backend: MemoryBackend) -> None:
    hits = await backend.search(WHERE, SearchRequest(top_k=1, mode="semantic", vector=[1.0, 0.1]))
    assert [h.id for h in hits] == ["a"]


async def test_a_search_beyond_the_inline_size_runs_in_a_worker_thread_not_on_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = spy_threads(monkeypatch)
    monkeypatch.setattr(memory_backend, "INLINE_SEARCH_CELLS", 3)  # the partition below holds 2 × 2 cells
    backend = MemoryBackend()
    await backend.upsert(WHERE, [VectorRecord("a", [1.0, 0.0]), VectorRecord("b", [0.0, 1.0])])
    await search_a(backend)
    assert seen and seen[0] != threading.get_ident()


async def test_a_small_search_runs_on_the_event_loop_unless_a_write_holds_or_awaits_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = spy_threads(monkeypatch)
    backend = MemoryBackend()
    await backend.upsert(WHERE, [VectorRecord("a", [1.0, 0.0]), VectorRecord("b", [0.0, 1.0])])
    await search_a(backend)
    assert seen == [threading.get_ident()]  # no hand-off to a worker thread and back
    holding, release = threading.Event(), threading.Event()

    def write() -> None:
        with backend._lock.writing():
            holding.set()
            release.wait(5)

    async with anyio.create_task_group() as tasks:  # a write in progress: waiting for it on the loop would stall it
        tasks.start_soon(anyio.to_thread.run_sync, write)
        await anyio.to_thread.run_sync(holding.wait, 5)
        tasks.start_soon(search_a, backend)
        for _ in range(10):
            await anyio.lowlevel.checkpoint()  # the search has started and the event loop still runs this test
        assert len(seen) == 1  # the search waits for the write, in a worker thread
        release.set()
    assert len(seen) == 2 and seen[1] != threading.get_ident()


async def test_worker_threads_are_bounded_by_the_setting() -> None:
    compute.configure(threads=2, blas_threads=0)
    running, peak = 0, 0
    guard = threading.Lock()
    release = threading.Event()

    def work() -> None:
        nonlocal running, peak
        with guard:
            running += 1
            peak = max(peak, running)
        release.wait(5)
        with guard:
            running -= 1

    async with anyio.create_task_group() as tasks:
        for _ in range(5):
            tasks.start_soon(compute.run, work)
        while running < 2:
            await anyio.lowlevel.checkpoint()  # yield until two workers run, not timing anything
        release.set()
    assert peak == 2


def test_a_waiting_writer_goes_before_new_readers_and_after_current_ones() -> None:
    lock = ReadWriteLock()
    order: list[str] = []
    reader_in, writer_waiting = threading.Event(), threading.Event()

    def writer() -> None:
        writer_waiting.set()
        with lock.writing():
            order.append("write")

    def late_reader() -> None:
        with lock.reading():
            order.append("late read")

    with lock.reading():
        reader_in.set()
        w = threading.Thread(target=writer)
        w.start()
        writer_waiting.wait()
        while not lock._writers_waiting:  # the writer is queued behind this reader
            pass
        r = threading.Thread(target=late_reader)
        r.start()
        order.append("first read done")
    w.join(5)
    r.join(5)
    assert order == ["first read done", "write", "late read"]


def test_blas_threads_are_set_deliberately() -> None:
    compute.configure(threads=0, blas_threads=1)
    assert all(pool["num_threads"] == 1 for pool in threadpool_info() if pool["user_api"] == "blas")
