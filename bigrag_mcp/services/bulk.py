"""Many rows into one table in the caller's transaction, in one round trip to the driver where it allows it.

Each statement through SQLAlchemy's aiosqlite adapter is several round trips to the driver's thread (open a cursor,
run, close it) plus per-row parameter handling; a batch write runs a handful of these per transaction, and each round
trip waits for the event loop, which a batch keeps busy. On a DIRECT_DRIVERS store an insert of whole rows is instead
one executemany on the driver's own connection (the session's, so in its transaction), each value through its
column's own bind processor, so the stored values are SQLAlchemy's; elsewhere it is one Core executemany.
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
