"""The SQLite fast path: small statements run on the event loop's own thread, never waiting for a lock.

An aiosqlite statement is a round trip through a worker thread, which costs far more than the statement itself
(tens of microseconds) and grows with load. Here the limits' admission statement and the per-call point reads
(the store revision, a partition's sequence, the rows of a result; `Prepared` once) run on a synchronous connection with
`busy_timeout=0`: when the store cannot answer at once it fails with "database is locked", nothing has changed,
and the caller runs it on the async path, which waits in its thread. So the loop never blocks on another writer
(in WAL mode reads do not wait for writers anyway). This connection never checkpoints the WAL (the async
connections do), so a commit here only appends to the WAL file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Float, Integer, LargeBinary, String, create_engine, event
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import ReturningInsert
from sqlalchemy.sql.expression import Insert, Select, Update

from bigrag_mcp.store.db import Database, sqlite_pragmas

BUSY = "database is locked"
PLAIN_TYPES = (Integer, String, Float, LargeBinary)  # types SQLite hands over as they are, with no processing
T = TypeVar("T")


class Prepared:
    """A Core statement compiled once: the fast path runs its SQL with positional parameters on the driver's own
    connection, skipping SQLAlchemy's per-call statement building and coercion (most of a point read's cost).

    Parameters go through their columns' own bind processors (JSON, datetimes, booleans), so they are stored as
    SQLAlchemy would store them; an INSERT names the columns it sets (`keys`); an UPDATE is run as compiled. Selected columns must be of plain
    types (integers, strings, floats, bytes), which SQLite returns unprocessed, so the raw rows equal what
    SQLAlchemy would return. Other stores run `statement` itself with the same named parameters.
    """

    def __init__(self, statement: Select[*tuple[Any, ...]] | Insert | Update, keys: Sequence[str] | None = None) -> None:
        self.statement = statement
        dialect = sqlite.dialect()
        compiled = statement.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None)
        selected = getattr(statement, "selected_columns", ())
        unprocessed = [column.name for column in selected if not isinstance(column.type, PLAIN_TYPES)]
        if unprocessed:
            raise TypeError(f"a prepared statement returns plain types only, not {unprocessed}")
        self.sql = str(compiled)
        self.names = tuple(compiled.positiontup or ())
        self.fixed = {name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
        self.processors = {
            name: process for name, bind in compiled.binds.items()
            if (process := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }

    def process(self, name: str, value: Any) -> Any:
        """`value` as parameter `name` goes to the driver (its column's bind processor applied, if it has one)."""
        process = self.processors.get(name)
        return value if process is None else process(value)

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The positional parameters: `values` by name, the statement's own literals for the rest, each processed."""
        return tuple(
            self.process(name, values[name] if name in values else self.fixed[name]) for name in self.names
        )


class SqliteFastPath:
    """One synchronous connection to the store's SQLite file, for statements that must not wait."""

    def __init__(self, async_url: str) -> None:
        self.engine: Engine = create_engine(
            async_url.replace("sqlite+aiosqlite://", "sqlite://", 1), poolclass=StaticPool,
            connect_args={"check_same_thread": False},
        )
        pragmas = sqlite_pragmas("foreign_keys=ON", "synchronous=NORMAL", "busy_timeout=0", "wal_autocheckpoint=0")
        event.listen(self.engine, "connect", pragmas)
        # the engine's one connection as the driver's own, for prepared reads (the engine hands out the same one)
        self.connection: sqlite3.Connection = self.engine.raw_connection().driver_connection  # type: ignore[assignment]
        self.path = Path(str(self.engine.url.database))  # the store's file

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

    def fetch(self, prepared: Prepared, values: Mapping[str, Any]) -> list[Any] | None:
        """The rows of a prepared read, as the driver returns them (one statement, its own snapshot of the store);
        None when the store is busy."""
        try:
            return self.connection.execute(prepared.sql, prepared.parameters(values)).fetchall()
        except sqlite3.OperationalError as exc:
            if BUSY in str(exc):
                return None
            raise

    def write(self, prepared: Prepared, values: Mapping[str, Any]) -> bool:
        """Run a prepared write and commit it; False when the store is busy (nothing was written)."""
        return self.write_many(prepared, [values])

    def write_many(self, prepared: Prepared, rows: Sequence[Mapping[str, Any]]) -> bool:
        """Run a prepared write for each of `rows` and commit them together; False when the store is busy (nothing
        was written)."""
        try:
            with self.connection:  # commits, or rolls back on an error
                self.connection.executemany(prepared.sql, [prepared.parameters(values) for values in rows])
        except sqlite3.OperationalError as exc:
            if BUSY in str(exc):
                return False
            raise
        return True

    def close(self) -> None:
        self.engine.dispose()


async def read(fast: SqliteFastPath | None, db: Database, prepared: Prepared, values: Mapping[str, Any]) -> Sequence[Any]:
    """A prepared read on the fast path when it can answer at once, else in a session of the store."""
    found = fast.fetch(prepared, values) if fast is not None else None
    if found is not None:
        return found
    async with db.session() as session:
        return (await session.execute(prepared.statement, dict(values))).all()


def _unless_busy(work: Callable[[], T]) -> T | None:
    """`work()`, or None when the store is busy and `work` fails at once ("database is locked"), having done nothing."""
    try:
        return work()
    except OperationalError as exc:
        if BUSY in str(exc.orig):
            return None
        raise
