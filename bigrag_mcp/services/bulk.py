"""A write transaction's statements in one round trip each to the driver, where it allows it.

Each statement through SQLAlchemy's aiosqlite adapter is three or four round trips to the driver's thread (open a
cursor, run, fetch, close it) plus per-row parameter handling; a write runs a dozen of them per transaction, and each
round trip waits for the event loop, which a batch keeps busy. On a DIRECT_DRIVERS store these run on the driver's own
connection instead (the session's, so in its transaction): an insert of whole rows as one executemany, each value
through its column's own bind processor, so the stored values are SQLAlchemy's; a `Prepared` statement as one call.
Elsewhere they run through the session. Statements run this way do not flush the session's pending objects first.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from bigrag_mcp.limits.fastpath import Prepared
from bigrag_mcp.store.models import Base, bulk_insert

DIRECT_DRIVERS = frozenset({"aiosqlite"})  # drivers whose own connection may run a session's statements directly


async def driver_connection(conn: AsyncConnection) -> Any | None:
    """The driver's own connection under `conn` (in its transaction) on a DIRECT_DRIVERS store, else None."""
    if conn.dialect.driver not in DIRECT_DRIVERS:
        return None
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    return driver


@functools.cache
def _whole_row_insert(model: type[Base], keys: frozenset[str]) -> Prepared | None:
    """The table's insert of exactly the columns `keys`, compiled once; None when it would set other columns too
    (columns with defaults that SQLAlchemy fills per row)."""
    prepared = Prepared(bulk_insert(model), sorted(keys))
    return prepared if set(prepared.names) == keys else None


async def insert_rows(session: AsyncSession, model: type[Base], rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert `rows` (column-named values, every row naming the same columns) into `model`'s table in the session's
    transaction: no ORM bookkeeping, nothing read back."""
    if not rows:
        return
    conn = await session.connection()
    prepared = _whole_row_insert(model, frozenset(rows[0]))
    driver = await driver_connection(conn) if prepared is not None else None
    if prepared is None or driver is None:
        await session.execute(bulk_insert(model), list(rows))
        return
    await driver.executemany(prepared.sql, [prepared.parameters(row) for row in rows])


async def fetch(session: AsyncSession, prepared: Prepared, values: Mapping[str, Any]) -> Sequence[Any]:
    """The rows of a prepared read in the session's transaction (plain values, as `Prepared` returns them)."""
    driver = await driver_connection(await session.connection())
    if driver is None:
        return (await session.execute(prepared.statement, dict(values))).all()
    rows: Sequence[Any] = await driver.execute_fetchall(prepared.sql, prepared.parameters(values))
    return rows


async def run(session: AsyncSession, prepared: Prepared, values: Mapping[str, Any]) -> int:
    """Run a prepared write in the session's transaction; the number of rows it changed."""
    driver = await driver_connection(await session.connection())
    if driver is None:
        return int((await session.execute(prepared.statement, dict(values))).rowcount)  # type: ignore[attr-defined]
    cursor = await driver.execute(prepared.sql, prepared.parameters(values))
    return int(cursor.rowcount)
