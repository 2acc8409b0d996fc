"""Usage rows waiting for the store's write lock, kept on disk as well, so a crash does not lose them.

While another transaction holds a SQLite store's write lock, a query's usage row waits in memory (see
`Ledger.record_now`). Each such row is also appended to this process's spool file beside the store
(`<store file>.usage-spool/<name>.jsonl`, one JSON object per line); the process holds `<name>.lock` locked (`flock`)
as long as it runs. Once waiting rows are committed to the store, the file is replaced by one holding only the rows
still waiting; a clean close removes both files.

A process opening the store recovers the spool of every process that died (its lock is free): it inserts the rows
the store does not hold yet and removes the files. A row the store already holds, because its process died after the
commit and before replacing its file, is recognised by its time (to the microsecond), operation, key, collection,
tenant and latency, and is not counted twice.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bigrag_mcp.services.usage import record_usage_many
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import UsageEvent

log = logging.getLogger(__name__)
IDENTITY = ("created_at", "operation", "api_key_id", "collection_uid", "tenant", "latency_ms")


class UsageSpool:
    """This process's spool file in `folder` (created with the first row that waits)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._lock: int | None = None  # the lock file's descriptor, held while this process runs
        self._rows: int | None = None  # the spool file's descriptor, opened for appending

    @staticmethod
    def beside(store: Path) -> UsageSpool | None:
        """The spool of the SQLite store in file `store` (the folder beside it); None on Windows (no `flock`)."""
        if sys.platform == "win32":
            return None
        return UsageSpool(store.with_name(store.name + ".usage-spool"))

    @property
    def _path(self) -> Path:
        return self.folder / f"{self._name}.jsonl"

    def append(self, row: dict[str, Any]) -> None:
        """Add one waiting usage row (`usage_row`'s fields)."""
        if self._rows is None:
            import fcntl  # POSIX only, as `beside` ensures

            self.folder.mkdir(parents=True, exist_ok=True)
            # locked before it takes its name, so a process recovering spools never finds it unlocked
            staged = self.folder / f"{self._name}.locking"
            self._lock = os.open(staged, os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            os.replace(staged, self.folder / f"{self._name}.lock")
            self._rows = _open_for_append(self._path)
        os.write(self._rows, _line(row))

    def keep(self, rows: Sequence[dict[str, Any]]) -> None:
        """After a commit: the spool holds `rows` (those still waiting) and nothing else, replaced in one step."""
        if self._rows is None:
            return
        staged = self._path.with_suffix(".next")
        staged.write_bytes(b"".join(_line(row) for row in rows))
        os.replace(staged, self._path)
        os.close(self._rows)
        self._rows = _open_for_append(self._path)

    def close(self, clean: bool) -> None:
        """Stop spooling; `clean` (every row reached the store) removes the files, else they stay to be recovered."""
        if self._rows is None or self._lock is None:
            return
        if clean:
            self._path.unlink(missing_ok=True)
            (self.folder / f"{self._name}.lock").unlink(missing_ok=True)
        os.close(self._rows)
        os.close(self._lock)  # releases the lock
        self._rows = self._lock = None

    async def recover(self, db: Database) -> int:
        """Insert the rows of dead processes' spools that the store does not hold yet; returns how many."""
        try:
            return await self._recover(db)
        except OSError:  # the store still opens; the files stay for the next try
            log.exception("could not recover the usage spool in %s", self.folder)
            return 0

    async def _recover(self, db: Database) -> int:
        if not self.folder.is_dir():
            return 0
        import fcntl  # POSIX only, as `beside` ensures

        recovered = 0
        for lock_path in sorted(self.folder.glob("*.lock")):
            if lock_path.stem == self._name:
                continue
            try:
                lock = os.open(lock_path, os.O_RDWR)
            except FileNotFoundError:
                continue  # another process recovered it meanwhile
            try:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process is alive and writes its own rows
                if os.fstat(lock).st_nlink == 0:
                    continue  # another process recovered it while this one waited
                rows_path = lock_path.with_suffix(".jsonl")
                rows = list(_rows(rows_path)) if rows_path.exists() else []
                recovered += await _insert_missing(db, rows)
                rows_path.unlink(missing_ok=True)
                rows_path.with_suffix(".next").unlink(missing_ok=True)
                lock_path.unlink()
            finally:
                os.close(lock)
        if recovered:
            log.warning("recovered %d usage rows that a stopped process had not written to the store", recovered)
        return recovered


def _open_for_append(path: Path) -> int:
    return os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)


def _line(row: dict[str, Any]) -> bytes:
    return (json.dumps({**row, "created_at": row["created_at"].isoformat()}) + "\n").encode()


def _rows(path: Path) -> Iterable[dict[str, Any]]:
    """The rows of a spool file; a line cut short by a crash is skipped."""
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            row = json.loads(line)
            row["created_at"] = datetime.fromisoformat(row["created_at"])
        except (ValueError, KeyError, TypeError):
            log.warning("skipped line %d of %s: not a whole usage row", number, path)
            continue
        yield row


def _identity(row: Any) -> tuple[Any, ...]:
    values = row if isinstance(row, dict) else row._mapping
    return tuple(values[name] for name in IDENTITY)


async def _insert_missing(db: Database, rows: list[dict[str, Any]]) -> int:
    """Insert those of `rows` the store does not hold (see the module docstring) in one transaction."""
    if not rows:
        return 0
    columns = [getattr(UsageEvent, name) for name in IDENTITY]
    async with db.session() as session:
        held = {
            _identity(found)
            for found in await session.execute(
                select(*columns).where(UsageEvent.created_at.in_({row["created_at"] for row in rows}))
            )
        }
        missing = [row for row in rows if _identity(row) not in held]
        await record_usage_many(session, missing)
    return len(missing)
