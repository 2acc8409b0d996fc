"""CPU-bound work off the event loop: a bounded pool of worker threads, and BLAS threads set deliberately.

numpy releases the GIL inside BLAS calls, so searches running in worker threads use several cores at once while
the event loop keeps answering. Each BLAS call then gets `blas_threads` threads of its own: OpenBLAS's default
(one per core) makes its threads busy-wait against each other and the worker threads on a small machine.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar
from threadpoolctl import threadpool_limits

from bigrag_mcp.errors import Unavailable

T = TypeVar("T")
_limiter: RunVar[CapacityLimiter] = RunVar("bigrag_compute_limiter")
_threads = 0


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure(threads: int = 0, blas_threads: int = 1) -> None:
    """Use `threads` worker threads for CPU-bound work (0: one per core) and `blas_threads` per BLAS call (0: leave it)."""
    global _threads
    _threads = threads if threads > 0 else cores()
    if blas_threads > 0:
        threadpool_limits(limits=blas_threads, user_api="blas")  # applies to the process from now on


def limiter() -> CapacityLimiter:
    """The event loop's limiter of worker threads (made on first use in each loop)."""
    try:
        found = _limiter.get()
    except LookupError:
        found = CapacityLimiter(_threads or cores())
        _limiter.set(found)
    return found


async def run(work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` in a worker thread, at most `threads` at a time."""
    return await anyio.to_thread.run_sync(work, *args, limiter=limiter())


@asynccontextmanager
async def worker_process(wanted: bool = True) -> AsyncIterator[Executor | None]:
    """One worker process for a batch's pure-Python CPU work, which in threads would share this process's GIL with
    everything else. Forked (at once, before the batch starts threads of its own), so it starts with this process's
    modules loaded; None when not `wanted`, where fork is not offered, or on one core."""
    if not wanted or "fork" not in multiprocessing.get_all_start_methods() or cores() < 2:
        yield None
        return
    pool = ProcessPoolExecutor(  # Ctrl-C is this process's to handle: it stops the worker on its way out
        max_workers=1, mp_context=multiprocessing.get_context("fork"), initializer=signal.signal,
        initargs=(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        pool.submit(int).result()  # fork now, from this thread
        yield pool
    finally:
        with anyio.CancelScope(shield=True):  # a cancelled batch still ends its worker
            await anyio.to_thread.run_sync(lambda: pool.shutdown(wait=True, cancel_futures=True))


async def in_worker(worker: Executor, work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` in the worker process (work and arguments pickled there, the result back); a worker that died
    is `unavailable`."""
    future = worker.submit(work, *args)
    try:
        return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)
    except BrokenProcessPool:
        raise Unavailable("the batch's worker process ended unexpectedly") from None


class ReadWriteLock:
    """Many readers or one writer, across threads: searches share a backend, a write waits for them and goes next."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:  # a waiting writer goes first, so a stream of searches cannot starve writes
            self._cond.wait_for(lambda: not self._writing and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            self._release_read()

    @contextmanager
    def reading_now(self) -> Iterator[bool]:
        """`reading()` if it needs no wait (yields True); otherwise holds nothing and yields False."""
        with self._cond:
            free = not self._writing and not self._writers_waiting
            if free:
                self._readers += 1
        if not free:
            yield False
            return
        try:
            yield True
        finally:
            self._release_read()

    def _release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if not self._readers:
                self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            self._cond.wait_for(lambda: not self._writing and not self._readers)
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()
