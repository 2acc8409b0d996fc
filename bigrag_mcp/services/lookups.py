"""Key and collection lookups cached under the store revision: one statement a call, changes seen on the next.

Each call reads the store revision once (`Lookups.call`); while it matches what the caches were filled under,
keys and collections come from memory. A key revoked or a collection changed by any process bumps the revision
in the same transaction (`store/revisions.py`), so every process drops its caches on its very next call.
Expiry is checked against the clock on every call, and `last_used_at` is still written at most once a minute.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import select

from bigrag_mcp.limits.fastpath import Prepared, SqliteFastPath, read
from bigrag_mcp.policy import Principal
from bigrag_mcp.services.keys import KeyState, hash_secret, key_state, needs_touch, touch
from bigrag_mcp.store import revisions
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import Collection

REVISION = Prepared(revisions.statement())
MAX_ENTRIES = 10_000  # per cache; a flood of distinct names cannot grow memory past this
V = TypeVar("V")
_call_revision: ContextVar[int | None] = ContextVar("bigrag_call_revision", default=None)


class Lookups:
    """The runtime's cache of key states (by secret hash) and collection rows (by name, misses included)."""

    def __init__(self, db: Database, fast: SqliteFastPath | None = None) -> None:
        self.db = db
        self.fast = fast
        self._tag: tuple[int, int] | None = None
        self._keys: dict[str, KeyState] = {}
        self._collections: dict[str, Collection | None] = {}

    async def read_revision(self) -> int:
        """The store revision (one statement, on the loop's thread when the fast path can answer at once)."""
        found = await read(self.fast, self.db, REVISION, {})
        return int(found[0][0] or 0) if found else 0

    @asynccontextmanager
    async def call(self, revision: int | None = None) -> AsyncIterator[int]:
        """One call: every lookup inside uses `revision` (e.g. read by the HTTP key check of this request) or one read now."""
        current = revision if revision is not None else await self.read_revision()
        token = _call_revision.set(current)
        try:
            yield current
        finally:
            _call_revision.reset(token)

    async def _fresh(self) -> tuple[int, int] | None:
        """The tag this call may use the caches under, after dropping them if the store moved past them; None
        when this call's revision is older than the caches' (a call that started before a change): it bypasses them."""
        revision = _call_revision.get()
        if revision is None:
            revision = await self.read_revision()
        tag = (revision, revisions.local_commits())
        if self._tag is None or (tag != self._tag and tag[0] >= self._tag[0] and tag[1] >= self._tag[1]):
            self._keys.clear()
            self._collections.clear()
            self._tag = tag
        return tag if tag == self._tag else None

    def _keep(self, tag: tuple[int, int] | None) -> bool:
        """Whether a row read under `tag` may be cached: only while the caches still hold that tag."""
        return tag is not None and tag == self._tag

    async def principal(self, secret: str, *, now: datetime | None = None) -> Principal | None:
        """The principal of a presented secret, or None when it is unknown, revoked or expired."""
        tag = await self._fresh()
        now = now or datetime.now(UTC)
        digest = hash_secret(secret) if isinstance(secret, str) else ""
        state = self._keys.get(digest) if tag else None
        if state is None:
            async with self.db.session() as session:
                state = await key_state(session, secret)
            if state is None:  # unknown secrets are not cached: a guesser cannot fill memory
                return None
            if self._keep(tag):
                _remember(self._keys, digest, state)
        if not state.valid_at(now):
            return None
        if needs_touch(state, now):
            async with self.db.session() as session:
                await touch(session, state, now)
        return state.principal

    async def collection(self, name: str) -> Collection | None:
        """The collection row named `name` (shared and read-only: change collections through a session), or None."""
        tag = await self._fresh()
        if tag and name in self._collections:
            return self._collections[name]
        async with self.db.session() as session:
            found = await session.scalar(select(Collection).where(Collection.name == name))
        if self._keep(tag):
            _remember(self._collections, name, found)
        return found


def _remember(cache: dict[str, V], key: str, value: V) -> None:
    if len(cache) >= MAX_ENTRIES:
        cache.clear()
    cache[key] = value
