"""API keys: mint (secret shown once, stored hashed), list, revoke, and authenticate a presented secret."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.errors import InvalidArgument, NotFound
from bigrag_mcp.policy import CollectionFacts, Principal, check_key_grant, scope_error
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import ApiKey, Collection
from bigrag_mcp.store.revisions import NEUTRAL

SECRET_PREFIX = "brg_"
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_NAME = 200
MAX_TENANT = 256


Audit = Callable[[AsyncSession, "ApiKeyInfo"], Awaitable[None]]
"""Writes the audit row of a key change inside the change's own transaction."""


class ApiKeyInfo(BaseModel):
    """What may be shown about a key: never its secret or the secret's hash."""

    id: str
    name: str
    scopes: list[str]
    collection: str | None
    tenant: str | None
    role: str | None = None
    expires_at: datetime | None
    created_by: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def principal(self) -> Principal:
        """The principal this key acts as (for `policy explain` and key reach)."""
        return Principal(
            self.id, frozenset(self.scopes), self.collection, self.tenant, role=self.role, expires_at=self.expires_at
        )


def _info(row: ApiKey) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row.id,
        name=row.name,
        scopes=list(row.scopes),
        collection=row.collection,
        tenant=row.tenant,
        role=row.role,
        expires_at=row.expires_at,
        created_by=row.created_by,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def hash_secret(secret: str) -> str:
    """SHA-256 of the secret, hex.

    A fast hash is right here: the secret carries 256 random bits, so no amount of hashing speed makes guessing
    feasible, while a slow password hash (bcrypt, argon2) would add milliseconds to every authenticated call.
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _validated(name: str, scopes: Sequence[str], tenant: str | None, expires_at: datetime | None) -> list[str]:
    if not name.strip() or len(name) > MAX_NAME:
        raise InvalidArgument(f"the key name must be 1 to {MAX_NAME} characters")
    for scope in scopes:
        problem = scope_error(scope)
        if problem:
            raise InvalidArgument(problem)
    if tenant is not None and (not tenant or len(tenant) > MAX_TENANT):
        raise InvalidArgument(f"the tenant pin must be 1 to {MAX_TENANT} characters")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidArgument("expires_at must carry a time zone (for example 2030-01-01T00:00:00Z)")
        if expires_at <= datetime.now(UTC):
            raise InvalidArgument("expires_at must be in the future")
    return list(dict.fromkeys(scopes))


async def create_key(
    db: Database,
    *,
    name: str,
    scopes: Sequence[str],
    collection: str | None = None,
    tenant: str | None = None,
    expires_at: datetime | None = None,
    creator: Principal | None = None,
    audit: Audit | None = None,
    role: str | None = None,
) -> tuple[ApiKeyInfo, str]:
    """Mint a key; return its description and the secret, which is shown this once and never stored.

    `creator` is the key asking (None for the operator on the command line): the new key must be within its
    reach in scopes, pins and expiry (`check_key_grant`; PermissionDenied otherwise), and inherits its pins
    and expiry when they are omitted. `audit` writes the audit row in the same transaction. `role` records
    the policy role the scopes came from (limits may name it).
    """
    scopes = _validated(name, scopes, tenant, expires_at)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    async with db.session() as session:
        if creator is not None:
            target = creator.collection if collection is None else collection
            facts = (await collection_facts(session, [target]))[target] if target is not None else None
            grant = check_key_grant(creator, scopes, collection, tenant, expires_at, facts)
            grant.raise_if_denied()
            collection, tenant, expires_at = grant.collection, grant.tenant, grant.args["expires_at"]
        if collection is not None:
            found = await session.scalar(select(Collection.id).where(Collection.name == collection))
            if found is None:
                raise NotFound(f"collection {collection!r} does not exist; create it before pinning a key to it")
        row = ApiKey(
            id="key_" + secrets.token_hex(12),
            name=name,
            secret_hash=hash_secret(secret),
            scopes=scopes,
            collection=collection,
            tenant=tenant,
            role=role,
            expires_at=expires_at,
            created_by=creator.key_id if creator else None,
            created_at=datetime.now(UTC),
        )
        session.add(row)
        if audit is not None:
            await session.flush()
            await audit(session, _info(row))
    return _info(row), secret


async def collection_facts(session: AsyncSession, names: Iterable[str]) -> dict[str, CollectionFacts]:
    """What the store says about each named collection (exists=False for a name no collection has)."""
    wanted = set(names)
    rows = (await session.execute(select(Collection.name, Collection.tenant_field).where(Collection.name.in_(wanted)))).all()
    found = {name: CollectionFacts(name, True, tenant_field) for name, tenant_field in rows}
    return {name: found.get(name, CollectionFacts(name, False, None)) for name in wanted}


async def list_keys(db: Database) -> list[ApiKeyInfo]:
    """Every key, oldest first, revoked ones included (with revoked_at set)."""
    async with db.session() as session:
        rows = (await session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))).all()
    return [_info(row) for row in rows]


async def get_key(db: Database, key_id: str) -> ApiKeyInfo:
    """One key by id; NotFound when there is none."""
    async with db.session() as session:
        row = await session.get(ApiKey, key_id)
    if row is None:
        raise NotFound(f"there is no API key {key_id!r}")
    return _info(row)


async def revoke_key(db: Database, key_id: str, *, audit: Audit | None = None) -> ApiKeyInfo:
    """Revoke a key from its next call on; revoking it again keeps the first revocation time."""
    async with db.session() as session:
        row = await session.get(ApiKey, key_id)
        if row is None:
            raise NotFound(f"there is no API key {key_id!r}")
        if row.revoked_at is None:
            row.revoked_at = datetime.now(UTC)
        if audit is not None:
            await audit(session, _info(row))
    return _info(row)


@dataclass
class KeyState:
    """What authenticating a stored key needs to know; the cache in `services/lookups.py` keeps these."""

    principal: Principal
    expires_at: datetime | None
    revoked: bool
    last_used_at: datetime | None

    def valid_at(self, now: datetime) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)


async def key_state(session: AsyncSession, secret: str) -> KeyState | None:
    """The stored state of a presented secret, or None when no key has it (one statement)."""
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        return None
    presented = hash_secret(secret)
    # The lookup is by hash, so its timing can only reveal bits of a SHA-256 digest, never of the secret;
    # the constant-time comparison below guards the final equality all the same.
    row = await session.scalar(select(ApiKey).where(ApiKey.secret_hash == presented))
    if row is None or not hmac.compare_digest(row.secret_hash, presented):
        return None
    expires_at = row.expires_at
    principal = Principal(row.id, frozenset(row.scopes), row.collection, row.tenant, role=row.role, expires_at=expires_at)
    return KeyState(principal, expires_at, row.revoked_at is not None, row.last_used_at)


def needs_touch(state: KeyState, now: datetime) -> bool:
    """Whether `last_used_at` is due a write: at most one a minute a key, however many calls it makes."""
    return state.last_used_at is None or now - state.last_used_at >= LAST_USED_RESOLUTION


async def touch(session: AsyncSession, state: KeyState, now: datetime) -> None:
    """Record the key's use at `now` (a write that leaves the store revision alone: no cache holds it)."""
    await session.execute(
        update(ApiKey).where(ApiKey.id == state.principal.key_id).values(last_used_at=now).execution_options(**{NEUTRAL: True})
    )
    state.last_used_at = now


async def refusal_reason(db: Database, secret: str, *, now: datetime | None = None) -> str:
    """Why `authenticate` refuses a secret, in words for the operator (never sent to an MCP client)."""
    if not secret.startswith(SECRET_PREFIX):
        return f"not a bigrag-mcp key (keys start with {SECRET_PREFIX!r})"
    async with db.session() as session:
        state = await key_state(session, secret)
    if state is None:
        return "unknown in this data folder"
    if state.revoked:
        return f"revoked (key {state.principal.key_id})"
    if state.expires_at is not None and not state.valid_at(now or datetime.now(UTC)):
        return f"expired (key {state.principal.key_id}, at {state.expires_at.isoformat()})"
    return "valid"


async def authenticate(db: Database, secret: str, *, now: datetime | None = None) -> Principal | None:
    """The principal of a presented secret, or None when it is unknown, revoked or expired.

    Reads the store on every call; the runtime's `Lookups.principal` is the cached equivalent for serving.
    """
    now = now or datetime.now(UTC)
    async with db.session() as session:
        state = await key_state(session, secret)
        if state is None or not state.valid_at(now):
            return None
        if needs_touch(state, now):
            await touch(session, state, now)
        return state.principal
