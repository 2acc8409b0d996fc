"""The store revision: one counter the store bumps in the same transaction as any change to keys or collections.

Every process may cache key and collection lookups as long as the revision it read on this call is the one the
cache was filled under; a revocation or a collection change in any process moves the counter, so every cache
is dropped on the very next call. Writes are watched through ORM session events, so no service has to remember
to bump it: new, changed or deleted `ApiKey`/`Collection` rows, and ORM bulk insert/update/delete statements on
them. A write that changes nothing a cache holds (a key's `last_used_at`) passes `NEUTRAL` as an execution option.
"""

from __future__ import annotations

import itertools
from typing import Any, cast

from sqlalchemy import Integer, Select, event, inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstanceState, Mapped, ORMExecuteState, Session, UOWTransaction, mapped_column

from bigrag_mcp.store.models import ApiKey, Base, Collection

WATCHED = (ApiKey, Collection)
NEUTRAL = "revision_neutral"
IGNORED_COLUMNS = frozenset({"last_used_at"})
_BUMPED = "bigrag_revision_bumped"
_commits = itertools.count(1)
_local = 0


class StoreRevision(Base):
    """A single row (id 1) holding the revision of keys and collections."""

    __tablename__ = "store_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(Integer, default=0)


def statement() -> Select[int]:
    """The read of the store's revision."""
    return select(StoreRevision.value).where(StoreRevision.id == 1)


async def read(session: AsyncSession) -> int:
    """The store's revision as this transaction sees it (one statement)."""
    return int(await session.scalar(statement()) or 0)


def local_commits() -> int:
    """How many revision-bumping transactions this process has committed (caches compare it too)."""
    return _local


def _bump(session: Session) -> None:
    if not session.info.get(_BUMPED):
        session.connection().execute(
            update(StoreRevision).where(StoreRevision.id == 1).values(value=StoreRevision.value + 1)
        )
        session.info[_BUMPED] = True


def _changes_cached_facts(session: Session, obj: Any) -> bool:
    if not isinstance(obj, WATCHED):
        return False
    if obj in session.new or obj in session.deleted:
        return True
    state = cast(InstanceState[Any], inspect(obj))
    return any(attr.key not in IGNORED_COLUMNS and attr.history.has_changes() for attr in state.attrs)


@event.listens_for(Session, "before_flush")
def _watch_flush(session: Session, _flush: UOWTransaction, _instances: Any) -> None:
    if any(_changes_cached_facts(session, obj) for obj in (*session.new, *session.dirty, *session.deleted)):
        _bump(session)


@event.listens_for(Session, "do_orm_execute")
def _watch_statements(state: ORMExecuteState) -> None:
    if not (state.is_insert or state.is_update or state.is_delete) or state.execution_options.get(NEUTRAL):
        return
    if any(mapper.class_ in WATCHED for mapper in state.all_mappers):
        _bump(state.session)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    global _local
    if session.info.pop(_BUMPED, False):
        _local = next(_commits)


@event.listens_for(Session, "after_rollback")
def _rolled_back(session: Session) -> None:
    session.info.pop(_BUMPED, None)
