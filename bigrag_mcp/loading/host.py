"""A loader host process: reads jobs on stdin, forks one bounded child per job, answers on stdout.

The host runs no threads and no parsers itself, so forking it is safe and cheap, and the heavy parser
libraries are imported once here rather than in every child.
"""

from __future__ import annotations

import importlib
import os
import pickle
import resource
import select
import signal
import struct
import sys
import time
from typing import IO, Any

from bigrag_mcp.errors import BigRagError

PRELOAD = (
    "bigrag_mcp.default_plugins.document_loaders",
    "bigrag_mcp.default_plugins.text_loaders",
    "pypdfium2",
    "docx",
    "openpyxl",
    "pptx",
    "selectolax.lexbor",
)
_HEADER = struct.Struct("<Q")


def read_frame(stream: IO[bytes]) -> bytes | None:
    """One length-prefixed message, or None at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    body = stream.read(size)
    return body if len(body) == size else None


def write_message(stream: IO[bytes], value: Any) -> None:
    body = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def _load(loader: Any, data: bytes, filename: str | None, mime: str) -> tuple[str, Any]:
    try:
        return "ok", loader(data, filename=filename, mime_type=mime)
    except BigRagError as exc:
        return exc.code, exc.message
    except MemoryError:
        return "memory", ""
    except RecursionError:
        return "failed", "nested too deeply"
    except Exception as exc:  # noqa: BLE001 - a parser's own error: the bytes are not what it reads
        return "failed", f"{type(exc).__name__}: {exc}"[:300]


def _child(write_fd: int, job: tuple[Any, ...]) -> None:
    loader, data, filename, mime, seconds, memory_mb = job
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        limit = memory_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CPU, (int(seconds) + 1, int(seconds) + 1))
        payload = pickle.dumps(_load(loader, data, filename, mime), protocol=pickle.HIGHEST_PROTOCOL)
    except BaseException:  # noqa: BLE001 - even a failure to reply must not run the host's code in the child
        payload = pickle.dumps(("failed", "the loader could not run"))
    with os.fdopen(write_fd, "wb") as out:
        out.write(payload)


def run_job(job: tuple[Any, ...]) -> tuple[str, Any]:
    """Fork, let the child load, collect its answer until the deadline, and kill it if it overruns."""
    seconds = job[4]
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        try:
            _child(write_fd, job)
        finally:
            os._exit(0)
    os.close(write_fd)
    deadline, parts, timed_out = time.monotonic() + seconds, [], False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([read_fd], [], [], remaining)
        if ready:
            block = os.read(read_fd, 1 << 20)
            if not block:
                break
            parts.append(block)
    os.close(read_fd)
    if timed_out:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if timed_out:
        return "timeout", ""
    try:
        return pickle.loads(b"".join(parts)) if parts else ("crashed", os.waitstatus_to_exitcode(status))
    except Exception:  # noqa: BLE001 - a child killed mid-reply (e.g. by its CPU limit)
        return "crashed", os.waitstatus_to_exitcode(status)


def main() -> None:
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the reply stream
    for module in PRELOAD:
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    jobs = sys.stdin.buffer
    while (frame := read_frame(jobs)) is not None:
        try:
            reply = run_job(pickle.loads(frame))
        except Exception as exc:  # noqa: BLE001 - e.g. the loader could not be unpickled here
            reply = ("failed", f"{type(exc).__name__}: {exc}"[:300])
        write_message(replies, reply)


if __name__ == "__main__":
    main()
