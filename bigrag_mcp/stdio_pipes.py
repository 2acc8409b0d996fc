"""MCP over stdio without worker threads: the wire's descriptors as non-blocking asyncio pipes.

The SDK's stdio transport reads and writes through `anyio.wrap_file`, one worker-thread hand-off per line read,
per write and per flush; on a small virtual machine each hand-off costs hundreds of microseconds. Here the same
message loop (`mcp.server.stdio.stdio_server` with explicit streams) reads and writes the pipes on the event loop.
As the SDK does, fd 0 points at the null device and fd 1 at stderr while serving, so stray reads see end of file and
stray prints miss the wire; both are restored on exit. Descriptors that are not pipes, sockets or terminals (a file
redirected to stdin, say), or one socket for both, keep the SDK's own transport.
"""

from __future__ import annotations

import asyncio
import os
import stat
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import IO, Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

_LINE_LIMIT = 2**40  # the SDK's transport reads a line of any length; so does this one
_FLUSH_SECONDS = 5.0  # how long the last responses may take to drain into a pipe whose reader is slow


class PipeLines:
    """Lines (text) read from a pipe on the event loop, as `async for line in stdin` reads them."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> PipeLines:
        return self

    async def __anext__(self) -> str:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class PipeWriter:
    """`write` and `flush` of text on a pipe, written on the event loop; `flush` waits while the pipe is full."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()


def _pipes() -> bool:
    """Whether fd 0 and fd 1 can be event-loop pipes: pipes, sockets or terminals, and not one socket or pipe for both
    (an asyncio write pipe reads its descriptor to notice the reader going away, so it would eat the requests)."""
    if sys.platform == "win32":  # the SDK's transport handles Windows handles
        return False
    try:
        wire_in, wire_out = os.fstat(0), os.fstat(1)
    except OSError:
        return False
    kinds = (stat.S_ISFIFO, stat.S_ISSOCK, stat.S_ISCHR)
    if not all(any(kind(s.st_mode) for kind in kinds) for s in (wire_in, wire_out)):
        return False
    return stat.S_ISCHR(wire_in.st_mode) or (wire_in.st_dev, wire_in.st_ino) != (wire_out.st_dev, wire_out.st_ino)


@contextmanager
def _claimed(fd: int, divert_to: int, mode: str) -> Iterator[IO[bytes]]:
    """A private duplicate of `fd` (the wire) while `fd` itself points at `divert_to`; all restored on exit."""
    import fcntl  # POSIX only, as the callers are

    wire = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    was_blocking = os.get_blocking(wire)
    os.dup2(divert_to, fd)
    try:
        with os.fdopen(wire, mode, buffering=0, closefd=False) as file:
            yield file
    finally:
        os.set_blocking(wire, was_blocking)  # a terminal is shared with the shell that started us
        os.dup2(wire, fd)
        os.close(wire)


@asynccontextmanager
async def stdio_streams() -> AsyncIterator[tuple[Any, Any]]:
    """The SDK's stdio read and write streams, over event-loop pipes where fd 0 and 1 allow it."""
    if not _pipes():
        async with stdio_server() as streams:
            yield streams
        return
    loop = asyncio.get_running_loop()
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        with _claimed(0, null, "rb") as wire_in, _claimed(1, 2, "wb") as wire_out:
            reader = asyncio.StreamReader(limit=_LINE_LIMIT)
            read_transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), wire_in)
            write_transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, wire_out)
            writer = asyncio.StreamWriter(write_transport, protocol, None, loop)
            try:
                async with stdio_server(PipeLines(reader), PipeWriter(writer)) as streams:  # type: ignore[arg-type]
                    yield streams
            finally:
                read_transport.close()
                write_transport.set_write_buffer_limits(high=0)  # drain() now waits until nothing is left buffered
                with anyio.move_on_after(_FLUSH_SECONDS, shield=True), suppress(OSError):
                    await writer.drain()
                write_transport.close()
    finally:
        os.close(null)


async def run_stdio(server: MCPServer) -> None:
    """`server.run_stdio_async()`, over `stdio_streams()`."""
    lowlevel = server._lowlevel_server  # what the SDK's own run_stdio_async runs; there is no public accessor
    async with stdio_streams() as (read_stream, write_stream):
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
