"""The store side of limits: counters changed by single atomic statements that work on SQLite and Postgres.

Admission is one `INSERT ... ON CONFLICT DO UPDATE ... WHERE used + n <= max RETURNING` over every counter a
call touches: a hard counter that would pass its cap is not updated and not returned, so concurrent calls from any
number of processes on one store are admitted exactly up to the cap. A row holds its current window; the first
bump in a new window resets it in place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, case, delete, or_, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.dml import ReturningInsert

from bigrag_mcp.store.models import LimitCounter, LimitWarning

COUNTERS = cast(Table, LimitCounter.__table__)
WARNINGS = cast(Table, LimitWarning.__table__)


@dataclass(frozen=True, slots=True)
class Bump:
    """Add `amount` (> 0) to one counter in `window_start`; `max_value` and `hard` travel with it (the policy may change)."""

    counter_key: str
    limit_name: str
    metric: str
    key_id: str | None
    role: str | None
    collection: str | None
    tenant: str | None
    window_start: str
    amount: int
    max_value: int
    hard: bool

    def row(self) -> dict[str, object]:
        return {
            "counter_key": self.counter_key, "limit_name": self.limit_name, "metric": self.metric,
            "key_id": self.key_id, "role": self.role, "collection": self.collection, "tenant": self.tenant,
            "window_start": self.window_start, "used": self.amount, "max_value": self.max_value, "hard": self.hard,
        }


Executor = AsyncSession | AsyncConnection  # a session, or a bare connection on the per-call path


def _dialect(executor: Executor) -> str:
    bind = executor if isinstance(executor, AsyncConnection) else executor.bind
    assert bind is not None
    return bind.dialect.name


async def bump(session: Executor, bumps: Sequence[Bump], *, enforce: bool) -> dict[str, int]:
    """Add every bump in one statement; with `enforce`, a hard counter only while it stays within its max.

    Returns the new `used` of each counter that changed (a refused hard counter is missing). The caller checks
    that a fresh row's amount fits its max, since an insert has no old row to compare.
    """
    if not bumps:
        return {}
    result = await session.execute(bump_statement(_dialect(session), enforce=enforce), rows(bumps))
    return {key: int(used) for key, used in result.all()}


def rows(bumps: Sequence[Bump]) -> list[dict[str, object]]:
    """The parameters of `bump_statement`, in a stable order (so concurrent calls lock rows alike)."""
    return [b.row() for b in sorted(bumps, key=lambda b: b.counter_key)]


def _insert(dialect: str) -> Callable[[Table], Any]:
    """The dialect's INSERT with ON CONFLICT (the Postgres dialect loads only when a Postgres store uses it)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    return sqlite.insert


@cache
def bump_statement(dialect: str, *, enforce: bool) -> ReturningInsert[Any]:
    """INSERT ... ON CONFLICT DO UPDATE [WHERE it fits] RETURNING counter_key, used, for the rows of `rows()`.

    One statement object per dialect, so it is compiled once; several rows go out as one multi-row statement.
    """
    stmt = _insert(dialect)(COUNTERS)
    new = stmt.excluded
    same_window = COUNTERS.c.window_start == new.window_start
    upsert = stmt.on_conflict_do_update(
        index_elements=[COUNTERS.c.counter_key],
        set_={
            "used": case((same_window, COUNTERS.c.used + new.used), else_=new.used),
            "window_start": new.window_start,
            "max_value": new.max_value,
            "hard": new.hard,
        },
        where=or_(~new.hard, case((same_window, COUNTERS.c.used), else_=0) + new.used <= new.max_value)
        if enforce
        else None,
    )
    return upsert.returning(COUNTERS.c.counter_key, COUNTERS.c.used)


async def reduce(session: Executor, counter_key: str, window_start: str, amount: int) -> None:
    """Take `amount` (> 0) off a counter if it is still in `window_start`, never below zero."""
    await session.execute(
        update(COUNTERS)
        .where(COUNTERS.c.counter_key == counter_key, COUNTERS.c.window_start == window_start)
        .values(used=case((COUNTERS.c.used < amount, 0), else_=COUNTERS.c.used - amount))
    )


async def current(session: Executor, counter_keys: Iterable[str]) -> dict[str, tuple[str, int]]:
    """(window_start, used) of the given counters that exist."""
    rows = await session.execute(
        select(COUNTERS.c.counter_key, COUNTERS.c.window_start, COUNTERS.c.used).where(
            COUNTERS.c.counter_key.in_(list(counter_keys))
        )
    )
    return {key: (window, int(used)) for key, window, used in rows.all()}


async def rows_of(session: AsyncSession, names: Iterable[str], reach: Mapping[str, str | None]) -> list[LimitCounter]:
    """The counters of the named limits within `reach`: for each subject column it names, counters shared by every
    value (NULL) or kept for that value; a column named with None takes only shared counters."""
    where: list[ColumnElement[bool]] = [LimitCounter.limit_name.in_(list(names))]
    for column, value in reach.items():
        field = getattr(LimitCounter, column)
        where.append(field.is_(None) if value is None else or_(field.is_(None), field == value))
    return list(await session.scalars(select(LimitCounter).where(*where)))


async def first_warning(session: AsyncSession, counter_key: str, window_start: str, threshold: str) -> bool:
    """Record that a threshold was crossed in a window; True only for the first caller to record it."""
    stmt = _insert(_dialect(session))(WARNINGS).values(counter_key=counter_key, window_start=window_start, threshold=threshold)
    result = await session.execute(stmt.on_conflict_do_nothing())
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def forget(session: AsyncSession, collection: str, tenant: str | None) -> int:
    """Remove the counters (and their warnings) of a collection, or of one tenant of a shared collection.

    Counters of the tenant that name no collection go too. Returns how many counters were removed.
    """
    if tenant is None:
        where = COUNTERS.c.collection == collection
    else:
        where = and_(
            COUNTERS.c.tenant == tenant, or_(COUNTERS.c.collection == collection, COUNTERS.c.collection.is_(None))
        )
    doomed = select(COUNTERS.c.counter_key).where(where)
    await session.execute(delete(WARNINGS).where(WARNINGS.c.counter_key.in_(doomed)))
    result = await session.execute(delete(COUNTERS).where(where))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
