"""Engine and sessions: SQLAlchemy async, SQLite in WAL mode by default, schema through Alembic."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from bigrag_mcp.store import revisions  # noqa: F401  (its session events bump the store revision on every write)

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x62696772616D6967  # any fixed 64-bit number: the advisory lock taken while migrating
_REVISION_LINE = re.compile(r"^(down_revision|revision)\b[^=]*=\s*['\"]?([\w-]+|None)['\"]?", re.MULTILINE)


def sqlite_pragmas(*pragmas: str) -> Callable[[Any, Any], None]:
    """A "connect" event listener running `PRAGMA <each>` on every new SQLite connection."""

    def run(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    return run


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    """The newest migration, read from the version files (None unless there is exactly one head)."""
    revisions_, parents = set(), set()
    for path in (MIGRATIONS / "versions").glob("*.py"):
        found = dict(_REVISION_LINE.findall(path.read_text(encoding="utf-8")))
        if "revision" in found:
            revisions_.add(found["revision"])
            parents.add(found.get("down_revision"))
    heads = revisions_ - parents
    return heads.pop() if len(heads) == 1 else None


def _at_head(connection: Connection) -> bool:
    """Whether the store's schema is at the newest migration (read without loading Alembic)."""
    head = head_revision()
    return (
        head is not None
        and inspect(connection).has_table("alembic_version")
        and connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]
    )


def _upgrade(connection: Connection) -> None:
    """Migrate to the head; a store already there is left alone without loading Alembic (a faster server start).

    On Postgres the migration holds a transaction-scoped advisory lock, so replicas starting at once on a new store
    migrate one after another (the later ones find it at the head) instead of racing to create the same tables."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    if _at_head(connection):
        return
    from alembic import command

    command.upgrade(alembic_config(connection), "head")


class Database:
    """Owns the engine; `session()` yields a session whose transaction commits on success."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite") and ":memory:" not in url and "///" in url:
            Path(url.split("///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        self.url = url
        # Sessions always end in commit or rollback, so SQLite's extra rollback on check-in is a wasted driver call.
        reset = {"pool_reset_on_return": None} if url.startswith("sqlite") else {}
        self.engine: AsyncEngine = create_async_engine(url, **reset)
        if self.engine.dialect.name == "sqlite":
            event.listen(
                self.engine.sync_engine, "connect",
                sqlite_pragmas("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL", "busy_timeout=30000"),
            )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def migrate(self) -> None:
        """Bring the schema to the newest revision; never drops data."""
        async with self.engine.begin() as conn:
            await conn.run_sync(_upgrade)

    async def schema_is_current(self) -> bool:
        """True when the store answers and its schema is at the newest migration (for readiness checks)."""
        async with self.engine.connect() as conn:
            return await conn.run_sync(_at_head)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session, session.begin():
            yield session

    async def close(self) -> None:
        await self.engine.dispose()
