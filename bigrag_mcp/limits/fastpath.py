"""The SQLite fast path: small statements run on the event loop's own thread, never waiting for a lock.

An aiosqlite statement is a round trip through a worker thread, which costs far more than the statement itself
(tens of microseconds) and grows with load. Here the limits' admission statement and the per-call point reads
(the store revision, a partition's sequence, the rows of a result) run on a synchronous connection with
`busy_timeout=0`: when the store cannot answer at once it fails with "database is locked", nothing has changed,
and the caller runs it on the async path, which waits in its thread. So the loop never blocks on another writer
(in WAL mode reads do not wait for writers anyway). This connection never checkpoints the WAL (the async
connections do), so a commit here only appends to the WAL file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import ReturningInsert
from sqlalchemy.sql.expression import Executable

BUSY = "database is locked"
T = TypeVar("T")


def _pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=0")
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


class SqliteFastPath:
    """One synchronous connection to the store's SQLite file, for statements that must not wait."""

    def __init__(self, async_url: str) -> None:
        self.engine: Engine = create_engine(
            async_url.replace("sqlite+aiosqlite://", "sqlite://", 1), poolclass=StaticPool,
            connect_args={"check_same_thread": False},
        )
        event.listen(self.engine, "connect", _pragmas)

    @staticmethod
    def for_url(url: str) -> SqliteFastPath | None:
        """A fast path for a file SQLite store (WAL mode, set by the store), None for anything else."""
        if not url.startswith("sqlite+aiosqlite:///") or ":memory:" in url:
            return None
        return SqliteFastPath(url)

    def bump(self, stmt: ReturningInsert[Any], rows: list[dict[str, Any]], wanted: set[str]) -> dict[str, int] | None:
        """Run a bump statement and commit it only if every counter in `wanted` changed; the counters' new values
        (all or nothing: a refused one means nothing was committed). None when the store is busy: nothing ran."""

        def run() -> dict[str, int]:
            with self.engine.connect() as conn:
                after = {key: int(used) for key, used in conn.execute(stmt, rows).all()}
                if wanted <= after.keys():
                    conn.commit()
                else:
                    conn.rollback()
                return after

        return _unless_busy(run)

    def rows(self, stmt: Executable) -> list[Any] | None:
        """The rows of a read (ORM entities included) in a transaction of its own; None when the store is busy."""

        def run() -> list[Any]:
            with Session(self.engine) as session:
                return list(session.execute(stmt).all())

        return _unless_busy(run)

    def write(self, stmt: Executable, rows: list[dict[str, Any]]) -> bool:
        """Run a write and commit it; False when the store is busy (nothing was written)."""

        def run() -> bool:
            with self.engine.connect() as conn:
                conn.execute(stmt, rows)
                conn.commit()
            return True

        return _unless_busy(run) is not None

    def close(self) -> None:
        self.engine.dispose()


def _unless_busy(work: Callable[[], T]) -> T | None:
    """`work()`, or None when the store is busy and `work` fails at once ("database is locked"), having done nothing."""
    try:
        return work()
    except OperationalError as exc:
        if BUSY in str(exc.orig):
            return None
        raise
