"""Run a document loader off the event loop, in a child process with time, memory and size bounds."""

from __future__ import annotations

import atexit
import io
import os
import pickle
import subprocess
import sys
import threading
import zipfile
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio

from bigrag_mcp.compute import cores
from bigrag_mcp.errors import BigRagError, InvalidArgument, LimitExceeded, Unavailable
from bigrag_mcp.loading.host import read_frame, write_message
from bigrag_mcp.loading.sniff import DOCX, PPTX, XLSX, ZIP, is_text_type
from bigrag_mcp.types import DocumentLoader, Extracted

ZIPPED = frozenset({DOCX, XLSX, PPTX, ZIP})
MAX_ZIP_ENTRIES = 10_000
_SLOTS = threading.BoundedSemaphore(cores())  # documents loading at once, for all tenants


@dataclass(frozen=True)
class Bounds:
    """How far one document's loader may go: wall time, address space, unzipped bytes and extracted text."""

    seconds: float = 60.0
    memory_mb: int = 1024
    unzipped_mb: int = 256
    text_mb: int = 64


def check_zip(data: bytes, bounds: Bounds, name: str) -> None:
    """Refuse archives whose members would inflate past the bound (zip bombs), before any parser opens them."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise InvalidArgument(f"{name} is not a readable zip archive: {exc}") from None
    total = sum(m.file_size for m in members)
    if len(members) > MAX_ZIP_ENTRIES or total > bounds.unzipped_mb << 20:
        raise InvalidArgument(
            f"{name} would expand to {total >> 20} MB in {len(members)} parts (at most {bounds.unzipped_mb} MB and "
            f"{MAX_ZIP_ENTRIES} parts): zip bomb?"
        )


def _as_extracted(result: str | Extracted) -> Extracted:
    return result if isinstance(result, Extracted) else Extracted(str(result))


class _Host:
    """One loader host process (`bigrag_mcp.loading.host`), used by one job at a time."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from bigrag_mcp.loading.host import main; main()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )

    def call(self, job: tuple[Any, ...]) -> tuple[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            write_message(self.process.stdin, job)
            frame = read_frame(self.process.stdout)
        except (BrokenPipeError, OSError):
            frame = None
        if frame is None:
            self.close()
            raise Unavailable("the document loader host stopped; try again")
        reply: tuple[str, Any] = pickle.loads(frame)
        return reply

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self.process.kill()
        self.process.wait()


_idle: list[_Host] = []
_idle_lock = threading.Lock()


def _checkout() -> _Host:
    with _idle_lock:
        while _idle:
            host = _idle.pop()
            if host.alive:
                return host
    return _Host()


def _checkin(host: _Host) -> None:
    with _idle_lock:
        _idle.append(host)


@atexit.register
def _close_hosts() -> None:
    with _idle_lock:
        hosts, _idle[:] = list(_idle), []
    for host in hosts:
        host.close()


def _isolated(loader: DocumentLoader, data: bytes, filename: str | None, mime: str, bounds: Bounds, name: str) -> Extracted:
    """Send the job to an idle loader host, which forks a bounded child for it and kills it if it overruns."""
    with _SLOTS:
        host = _checkout()
        try:
            status, value = host.call((loader, data, filename, mime, bounds.seconds, bounds.memory_mb))
        except BaseException:  # e.g. a loader that cannot be pickled: this host's stream may be mid-message
            host.close()
            raise
        _checkin(host)
    if status == "ok":
        return _as_extracted(value)
    if status == "timeout":
        raise InvalidArgument(f"{name} took longer than {bounds.seconds:g} s to read; refused")
    if status == "crashed":
        raise InvalidArgument(f"{name} could not be read: its parser stopped (exit code {value})")
    if status == "memory":
        raise InvalidArgument(f"{name} needs more than {bounds.memory_mb} MB of memory to read; refused")
    if status == "failed":
        raise InvalidArgument(f"{name} could not be read as {mime}: {value}")
    raise {c.code: c for c in (LimitExceeded, Unavailable)}.get(status, InvalidArgument)(value)


def _in_process(loader: DocumentLoader, data: bytes, filename: str | None, mime: str, name: str) -> Extracted:
    try:
        return _as_extracted(loader(data, filename=filename, mime_type=mime))
    except BigRagError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure means bytes it cannot read
        raise InvalidArgument(f"{name} could not be read as {mime}: {type(exc).__name__}: {exc}"[:400]) from None


def _checked(found: Extracted, bounds: Bounds, name: str) -> Extracted:
    if len(found.text) > bounds.text_mb << 20:
        raise LimitExceeded(f"{name} holds more than {bounds.text_mb} MB of text")
    starts = found.page_starts
    if any(not 0 <= s <= len(found.text) for s in starts) or list(starts) != sorted(starts):
        raise InvalidArgument(f"the loader for {name} returned page offsets outside its text")
    return found


def _loader(loaders: dict[str, DocumentLoader], mime: str, name: str) -> DocumentLoader:
    loader = loaders.get(mime) or (loaders.get("text/plain") if is_text_type(mime) else None)
    if loader is None:
        known = ", ".join(sorted(loaders))
        raise InvalidArgument(f"{name} is {mime}, which no document loader reads; supported: {known}")
    return loader


def _name(filename: str | None) -> str:
    return repr(filename) if filename else "the document"


def extract_here(
    loaders: dict[str, DocumentLoader], data: bytes, *, mime: str, filename: str | None, bounds: Bounds
) -> Extracted | None:
    """The text of `data` read on the calling thread when its loader runs in process (the pure-Python text
    loaders); None when it needs the loader host (`extract`). Call it off the event loop."""
    name = _name(filename)
    loader = _loader(loaders, mime, name)
    if mime in ZIPPED or not getattr(loader, "in_process", False):
        return None
    return _checked(_in_process(loader, data, filename, mime, name), bounds, name)


async def extract(
    loaders: dict[str, DocumentLoader], data: bytes, *, mime: str, filename: str | None, bounds: Bounds
) -> Extracted:
    """The text (and pages) of `data` read as `mime`, by its registered loader, off the event loop."""
    name = _name(filename)
    loader = _loader(loaders, mime, name)
    if mime in ZIPPED:
        check_zip(data, bounds, name)
    if getattr(loader, "in_process", False):
        found = await anyio.to_thread.run_sync(partial(_in_process, loader, data, filename, mime, name))
    else:
        found = await anyio.to_thread.run_sync(partial(_isolated, loader, data, filename, mime, bounds, name))
    return _checked(found, bounds, name)
