"""The store's schema is managed by Alembic: a data folder made by an older version upgrades without loss."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from bigrag_mcp.store.db import Database, alembic_config, head_revision

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]


async def test_an_older_schema_upgrades_to_head_and_keeps_its_rows(empty_database_url: str) -> None:
    old = Database(empty_database_url)
    async with old.engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0001"))
        await conn.execute(
            text(
                "INSERT INTO collections (name, description, embedding_provider, embedding_model, dimension, "
                "chunk_size, chunk_overlap, chunk_strategy, created_at, updated_at) VALUES "
                "('kept', '', 'hash', 'hash-v1', 8, 512, 50, 'recursive', '2026-01-01', '2026-01-01')"
            )
        )
    await old.close()

    upgraded = Database(empty_database_url)
    await upgraded.migrate()
    async with upgraded.engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
        names = (await conn.execute(text("SELECT name FROM collections"))).scalars().all()
        head = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    await upgraded.close()
    assert names == ["kept"] and "index_generations" in tables
    assert head == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_the_head_read_from_version_files_is_alembics() -> None:
    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_a_store_at_the_head_opens_without_loading_alembic(empty_database_url: str) -> None:
    probe = (
        "import asyncio, sys; from bigrag_mcp.store.db import Database\n"
        "async def main():\n"
        f"    db = Database({empty_database_url!r}); await db.migrate(); await db.close()\n"
        "asyncio.run(main()); print('alembic' in sys.modules)"
    )
    runs = [subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
            for _ in range(2)]
    assert runs == ["True", "False"]  # the first start migrates; the next finds the head and skips Alembic


async def test_upgrade_gives_each_collection_its_own_identity_and_keys_usage_on_it(empty_database_url: str) -> None:
    old = Database(empty_database_url)
    async with old.engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), "0002"))
        for name in ("a", "b"):
            await conn.execute(
                text(
                    "INSERT INTO collections (name, description, embedding_provider, embedding_model, dimension, "
                    "chunk_size, chunk_overlap, chunk_strategy, created_at, updated_at) VALUES "
                    f"('{name}', '', 'hash', 'hash-v1', 8, 512, 50, 'recursive', '2026-01-01', '2026-01-01')"
                )
            )
        for name in ("a", "gone"):
            await conn.execute(
                text(
                    "INSERT INTO usage_events (created_at, operation, collection, documents, chunks, storage_bytes, "
                    "embedding_tokens, tokens_estimated, chat_input_tokens, chat_output_tokens, latency_ms) VALUES "
                    f"('2026-01-01', 'query', '{name}', 0, 0, 0, 0, false, 0, 0, 1.0)"
                )
            )
    await old.close()

    upgraded = Database(empty_database_url)
    await upgraded.migrate()
    async with upgraded.engine.connect() as conn:
        uids = dict((await conn.execute(text("SELECT name, uid FROM collections"))).all())
        usage = dict((await conn.execute(text("SELECT collection, collection_uid FROM usage_events"))).all())
    await upgraded.close()
    assert sorted(uids.values()) == ["1", "2"]  # their partition address stays `name.id`: no reindex needed
    assert usage == {"a": uids["a"], "gone": None}
