"""The built-in "jsonl" billing exporter: one JSON line per event, each event id written at most once.

Config: {"path": "billing.jsonl"}. The ids already in the file are indexed on open; under an exclusive file
lock each send first reads whatever other processes appended since, so two relays never write an id twice.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import anyio

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.services.outbox import event_to_payload
from bigrag_mcp.types import BillingEvent, BillingExporterFactory, DeliveryResult

log = logging.getLogger(__name__)


class JsonlExporter:
    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ids: set[str] = set()
        self._offset = 0  # bytes of the file already indexed (always just after a newline)
        self._lock = anyio.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a+b") as handle:
            self._index_new_lines(handle)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> JsonlExporter:
        path = config.get("path")
        if not isinstance(path, str) or not path:
            raise InvalidArgument('the jsonl billing exporter needs {"path": "<file>"}')
        return cls(Path(path).expanduser())

    def _index_new_lines(self, handle: IO[bytes]) -> bool:
        """Index lines after the offset; True when the file ends without a newline (a write torn by a crash)."""
        handle.seek(self._offset)
        tail = handle.read()
        complete, newline, torn = tail.rpartition(b"\n")
        for line in complete.splitlines():
            self._index(line, warn=True)
        self._index(torn, warn=False)  # a record whose newline never made it still counts as written
        self._offset += len(complete) + len(newline)
        return bool(torn)

    def _index(self, line: bytes, *, warn: bool) -> None:
        try:
            self._ids.add(json.loads(line)["id"])
        except (ValueError, KeyError, TypeError):
            if warn and line.strip():
                log.warning("skipping an unreadable line in %s", self.path)

    def _append(self, event: BillingEvent) -> DeliveryResult:
        with open(self.path, "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            torn = self._index_new_lines(handle)
            if event.id in self._ids:
                return DeliveryResult("duplicate", f"{event.id} is already in {self.path.name}")
            line = json.dumps(event_to_payload(event), sort_keys=True, separators=(",", ":")) + "\n"
            handle.write((b"\n" if torn else b"") + line.encode())
            handle.flush()
            os.fsync(handle.fileno())
            self._offset = handle.tell()
            self._ids.add(event.id)
        return DeliveryResult("sent", f"appended to {self.path.name}")

    async def send(self, event: BillingEvent) -> DeliveryResult:
        async with self._lock:
            return await anyio.to_thread.run_sync(self._append, event)

    async def close(self) -> None:
        return None


@hookimpl
def register_billing_exporters(register: Callable[[str, BillingExporterFactory], None]) -> None:
    register("jsonl", JsonlExporter.from_config)
