"""The API key service on a temporary SQLite store: secrets hashed at rest, revocation, expiry, no escalation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from bigrag_mcp.errors import InvalidArgument, NotFound, PermissionDenied
from bigrag_mcp.policy import Principal
from bigrag_mcp.services.keys import (
    ApiKeyInfo,
    authenticate,
    create_key,
    get_key,
    hash_secret,
    list_keys,
    revoke_key,
)
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import ApiKey, Collection

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]


@pytest.fixture
async def db(db: Database) -> AsyncIterator[Database]:
    """The store with one collection of tenants, "docs"."""
    async with db.session() as session:
        session.add(
            Collection(
                name="docs",
                embedding_provider="hash",
                embedding_model="hash-256",
                dimension=256,
                tenant_field="tenant_id",
                chunk_size=512,
                chunk_overlap=50,
                chunk_strategy="paragraph",
            )
        )
    yield db


async def _row(db: Database, key_id: str) -> ApiKey:
    async with db.session() as session:
        row = await session.get(ApiKey, key_id)
    assert row is not None
    return row


async def test_secret_is_shown_once_and_stored_only_as_a_hash(db: Database, tmp_path: Path) -> None:
    info, secret = await create_key(db, name="admin", scopes=["*:*"])
    assert secret.startswith("brg_") and len(secret) >= 4 + 43  # 32 random bytes, base64url
    row = await _row(db, info.id)
    assert row.secret_hash == hash_secret(secret) and secret not in row.secret_hash
    if db.engine.dialect.name == "postgresql":  # every row of every table, as text
        async with db.engine.connect() as conn:
            tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
            stored = [" ".join((await conn.execute(text(f"SELECT CAST(t AS text) FROM {name} t"))).scalars().all())
                      for name in tables]
    else:
        await db.close()  # flush the WAL into the file before reading its bytes
        stored = [p.read_bytes().decode("latin-1") for p in tmp_path.iterdir() if p.name.startswith("t.db")]
    for content in stored:
        assert secret not in content and secret.removeprefix("brg_") not in content
    assert any(row.secret_hash in content for content in stored)


async def test_two_keys_never_share_a_secret(db: Database) -> None:
    secrets = {(await create_key(db, name=f"k{i}", scopes=["query:read"]))[1] for i in range(20)}
    assert len(secrets) == 20


async def test_authenticate_returns_the_keys_principal(db: Database) -> None:
    info, secret = await create_key(
        db, name="acme app", scopes=["query:read", "chat:write", "query:read"], collection="docs", tenant="acme"
    )
    assert info.scopes == ["query:read", "chat:write"]
    principal = await authenticate(db, secret)
    assert principal == Principal(info.id, frozenset({"query:read", "chat:write"}), "docs", "acme")
    assert await authenticate(db, secret + "x") is None
    assert await authenticate(db, "brg_" + "A" * 43) is None
    assert await authenticate(db, "") is None
    assert await authenticate(db, hash_secret(secret)) is None  # the stored hash is not a credential


async def test_revoked_key_fails_on_its_very_next_call(db: Database) -> None:
    info, secret = await create_key(db, name="app", scopes=["query:read"])
    assert await authenticate(db, secret) is not None
    revoked = await revoke_key(db, info.id)
    assert revoked.revoked_at is not None
    assert await authenticate(db, secret) is None
    again = await revoke_key(db, info.id)
    assert again.revoked_at == revoked.revoked_at
    with pytest.raises(NotFound):
        await revoke_key(db, "key_missing")


async def test_expired_key_fails(db: Database) -> None:
    expires = datetime.now(UTC) + timedelta(hours=1)
    info, secret = await create_key(db, name="temp", scopes=["query:read"], expires_at=expires)
    assert info.expires_at == expires
    assert await authenticate(db, secret, now=expires - timedelta(seconds=1)) is not None
    assert await authenticate(db, secret, now=expires) is None
    assert await authenticate(db, secret, now=expires + timedelta(days=1)) is None


async def test_last_used_is_written_at_most_once_a_minute(db: Database) -> None:
    info, secret = await create_key(db, name="app", scopes=["query:read"])
    assert info.last_used_at is None
    start = datetime.now(UTC)
    await authenticate(db, secret, now=start)
    assert (await get_key(db, info.id)).last_used_at == start
    await authenticate(db, secret, now=start + timedelta(seconds=59))
    assert (await get_key(db, info.id)).last_used_at == start
    later = start + timedelta(seconds=60)
    await authenticate(db, secret, now=later)
    assert (await get_key(db, info.id)).last_used_at == later


async def test_list_and_get_never_show_the_secret_or_its_hash(db: Database) -> None:
    first, secret = await create_key(db, name="one", scopes=["query:read"])
    second, _ = await create_key(db, name="two", scopes=["usage:read"], collection="docs")
    await revoke_key(db, first.id)
    keys = await list_keys(db)
    assert [k.id for k in keys] == [first.id, second.id]
    assert keys[0].revoked_at is not None and keys[1].collection == "docs"
    assert "secret_hash" not in ApiKeyInfo.model_fields
    dumped = "".join(k.model_dump_json() for k in keys)
    assert secret not in dumped and hash_secret(secret) not in dumped
    assert (await get_key(db, second.id)).principal() == Principal(second.id, frozenset({"usage:read"}), "docs")
    with pytest.raises(NotFound):
        await get_key(db, "key_missing")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"scopes": ["query:reed"]}, InvalidArgument, "query:reed"),
        ({"scopes": ["everything"]}, InvalidArgument, "resource:action"),
        ({"scopes": ["query:read"], "collection": "nowhere"}, NotFound, "'nowhere' does not exist"),
        ({"scopes": ["query:read"], "tenant": ""}, InvalidArgument, "tenant pin"),
        ({"scopes": ["query:read"], "expires_at": datetime(2020, 1, 1, tzinfo=UTC)}, InvalidArgument, "future"),
        ({"scopes": ["query:read"], "expires_at": datetime(2999, 1, 1)}, InvalidArgument, "time zone"),
        ({"scopes": ["query:read"], "name": " "}, InvalidArgument, "name"),
    ],
)
async def test_invalid_keys_are_refused_and_nothing_is_stored(
    db: Database, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await create_key(db, **{"name": "k", **kwargs})  # type: ignore[arg-type]
    assert await list_keys(db) == []


async def test_a_key_cannot_mint_a_key_with_more_rights(db: Database) -> None:
    info, _ = await create_key(db, name="keymaster", scopes=["api_key:admin", "query:read"])
    creator = Principal(info.id, frozenset(info.scopes))
    with pytest.raises(PermissionDenied, match="chat:write"):
        await create_key(db, name="more", scopes=["query:read", "chat:write"], creator=creator)
    with pytest.raises(PermissionDenied, match=r"\*:\*"):
        await create_key(db, name="admin", scopes=["*:*"], creator=creator)
    child, _ = await create_key(db, name="less", scopes=["query:read"], creator=creator)
    assert child.created_by == info.id
    assert len(await list_keys(db)) == 2


async def test_a_pinned_creator_mints_only_inside_its_pins(db: Database) -> None:
    info, _ = await create_key(db, name="acme admin", scopes=["*:*"], collection="docs", tenant="acme")
    creator = Principal(info.id, frozenset(info.scopes), info.collection, info.tenant)
    child, secret = await create_key(db, name="acme app", scopes=["query:read"], creator=creator)
    assert (child.collection, child.tenant) == ("docs", "acme")
    assert await authenticate(db, secret) == Principal(child.id, frozenset({"query:read"}), "docs", "acme")
    with pytest.raises(PermissionDenied, match="pinned to tenant 'acme'"):
        await create_key(db, name="globex app", scopes=["query:read"], tenant="globex", creator=creator)


async def test_an_empty_scope_list_authenticates_to_a_key_that_holds_nothing(db: Database) -> None:
    _, secret = await create_key(db, name="nothing", scopes=[])
    principal = await authenticate(db, secret)
    assert principal is not None and principal.scopes == frozenset()


async def test_a_key_that_expires_mints_no_key_that_outlives_it(db: Database) -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    info, secret = await create_key(db, name="temp admin", scopes=["*:*"], expires_at=soon)
    creator = await authenticate(db, secret)
    assert creator is not None and creator.expires_at == info.expires_at
    for later in (soon + timedelta(seconds=1), datetime(2100, 1, 1, tzinfo=UTC)):
        with pytest.raises(PermissionDenied, match="outlives"):
            await create_key(db, name="forever", scopes=["query:read"], expires_at=later, creator=creator)
    child, child_secret = await create_key(db, name="no expiry given", scopes=["*:*"], creator=creator)
    assert child.expires_at == info.expires_at  # inherited, so its own children are bounded too
    grandchild_creator = await authenticate(db, child_secret)
    assert grandchild_creator is not None
    with pytest.raises(PermissionDenied, match="outlives"):
        await create_key(db, name="g", scopes=["query:read"], expires_at=datetime(2100, 1, 1, tzinfo=UTC), creator=grandchild_creator)
    sooner, _ = await create_key(db, name="sooner", scopes=["query:read"], expires_at=soon - timedelta(minutes=30), creator=creator)
    assert sooner.expires_at is not None and sooner.expires_at < soon
    assert len(await list_keys(db)) == 3
