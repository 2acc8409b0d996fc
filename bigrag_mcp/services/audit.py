"""The audit log: append-only rows chained by sha256, appended in the caller's transaction, verified and listed.

Chain rule: entry_hash = sha256(prev_hash + canonical JSON of every other column of the row), the JSON with
sorted keys, no whitespace and UTC ISO-8601 timestamps with microseconds; the first row's prev_hash is 64 zeros.
Ids are consecutive (each append takes the chain lock, then writes last id + 1), so a gap means a removed row.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import logging
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired, TypedDict, Unpack

from pydantic import BaseModel
from sqlalchemy import false, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.limits.fastpath import Prepared
from bigrag_mcp.services.bulk import fetch, insert_rows, run
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import AuditEntry

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
OUTCOMES = frozenset({"allowed", "denied"})
Problem = Literal["changed", "removed", "inserted"]
MAX_PAGE = 500
REDACTED = "[REDACTED]"
_SECRET = re.compile(r"brg_\S*")
_SECRET_KEYS = re.compile(r"secret|password|passwd|authorization|api_?key|^token$|access_token", re.IGNORECASE)
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_LIMITS = {"actor_key_id": 32, "action": 64, "resource_type": 32, "resource_id": 256, "tenant": 256, "request_id": 64}
_POSTGRES_CHAIN_LOCK = 0x62696772  # pg advisory lock id for the audit chain ("bigr")


def clean_text(value: str) -> str:
    """Drop control, line-separator and bidi-override characters, and redact anything shaped like a key secret."""
    if value.isascii() and value.isprintable():  # no control, separator or bidi character to drop
        kept = value
    else:
        kept = "".join(ch for ch in value if unicodedata.category(ch) not in ("Cc", "Zl", "Zp") and ch not in _BIDI)
    return _SECRET.sub(REDACTED, kept)


def _clean_json(value: Any) -> Any:
    """A JSON-safe copy of metadata with strings cleaned and values under secret-looking keys redacted."""
    if isinstance(value, Mapping):
        return {clean_text(str(key)): REDACTED if _SECRET_KEYS.search(str(key)) else _clean_json(item)
                for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_clean_json(v) for v in value]
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return clean_text(str(value))


def _field(name: str, value: str | None) -> str | None:
    return None if value is None else clean_text(value)[: _LIMITS[name]]


def _iso(moment: datetime) -> str:
    """UTC ISO-8601 with microseconds; naive values (as SQLite returns them) are UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def entry_hash(row: AuditEntry) -> str:
    """sha256(prev_hash + canonical JSON of the row without entry_hash)."""
    return _hash_of({
        "id": row.id, "created_at": row.created_at, "actor_key_id": row.actor_key_id, "action": row.action,
        "resource_type": row.resource_type, "resource_id": row.resource_id, "tenant": row.tenant,
        "outcome": row.outcome, "reason": row.reason, "request_id": row.request_id, "metadata": row.metadata_,
        "prev_hash": row.prev_hash,
    })


def _hash_of(body: dict[str, Any]) -> str:
    """The chain hash of a row's values (`entry_hash`'s keys; `created_at` a datetime)."""
    canonical = json.dumps(
        {**body, "created_at": _iso(body["created_at"])}, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256((body["prev_hash"] + canonical).encode("utf-8")).hexdigest()


@functools.cache
def _chain_statements() -> tuple[Prepared, Prepared]:
    """SQLite's chain lock (a write statement matching no row takes the database write lock until commit) and the
    read of the chain head; compiled on first use."""
    lock = update(AuditEntry).where(false()).values(id=AuditEntry.id).execution_options(synchronize_session=False)
    head = select(AuditEntry.id, AuditEntry.entry_hash).order_by(AuditEntry.id.desc()).limit(1)
    return Prepared(lock), Prepared(head)


async def _chain_head(session: AsyncSession) -> tuple[int, str]:
    """Take the chain lock for the rest of the transaction, so two appends never read the same head; then the head's
    id and hash."""
    lock, head = _chain_statements()
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(func.pg_advisory_xact_lock(_POSTGRES_CHAIN_LOCK)))
    else:
        await run(session, lock, {})
    last = await fetch(session, head, {})
    return (last[0][0], last[0][1]) if last else (0, GENESIS_HASH)


class AuditFields(TypedDict):
    actor_key_id: str | None
    action: str
    resource_type: str
    resource_id: NotRequired[str | None]
    tenant: NotRequired[str | None]
    outcome: NotRequired[Literal["allowed", "denied"]]
    reason: NotRequired[str | None]
    request_id: NotRequired[str | None]
    metadata: NotRequired[Mapping[str, Any] | None]


async def append_audit(session: AsyncSession, **fields: Unpack[AuditFields]) -> None:
    """Append one chained row in the caller's transaction: it commits with the audited work or not at all."""
    await append_audit_many(session, [fields])


async def append_audit_many(session: AsyncSession, entries: Sequence[AuditFields]) -> None:
    """Append chained rows in order in the caller's transaction, taking the chain lock and reading its head once."""
    for fields in entries:
        if fields.get("outcome", "allowed") not in OUTCOMES:
            raise ValueError(f"audit outcome must be one of {sorted(OUTCOMES)}, not {fields.get('outcome')!r}")
    if not entries:
        return
    prev_id, prev_hash = await _chain_head(session)
    rows = []
    for fields in entries:
        reason = fields.get("reason")
        body = {
            "id": prev_id + 1, "created_at": datetime.now(UTC),
            "actor_key_id": _field("actor_key_id", fields["actor_key_id"]), "action": _field("action", fields["action"]) or "",
            "resource_type": _field("resource_type", fields["resource_type"]) or "",
            "resource_id": _field("resource_id", fields.get("resource_id")), "tenant": _field("tenant", fields.get("tenant")),
            "outcome": fields.get("outcome", "allowed"), "reason": None if reason is None else clean_text(reason),
            "request_id": _field("request_id", fields.get("request_id")),
            "metadata": _clean_json(dict(fields.get("metadata") or {})), "prev_hash": prev_hash,
        }
        prev_id, prev_hash = body["id"], _hash_of(body)
        rows.append({**body, "entry_hash": prev_hash})
    await insert_rows(session, AuditEntry, rows)  # one statement, no ORM bookkeeping per row


async def audit_safely(db: Database, **fields: Unpack[AuditFields]) -> bool:
    """Append in a transaction of its own (for denials); a failure is logged to stderr, never raised. True if stored."""
    try:
        async with db.session() as session:
            await append_audit(session, **fields)
    except Exception as exc:  # noqa: BLE001 - the audit log must never take a request down
        # the exception text may quote the row's parameters, so only its type is logged
        log.error("audit append failed (%s) for action %s", type(exc).__name__, clean_text(str(fields.get("action"))))
        return False
    return True


class VerifyResult(BaseModel):
    """`ok`, how many rows verified before the first problem, and that row's id and problem when not ok.

    `head_id`/`head_hash` name the last verified row: record them elsewhere to also detect removal of the newest rows.
    """

    ok: bool
    rows_checked: int
    bad_row_id: int | None = None
    problem: Problem | None = None
    detail: str | None = None
    head_id: int | None = None
    head_hash: str | None = None


def _problem(row: AuditEntry, prev_id: int, prev_hash: str) -> tuple[Problem, str] | None:
    """What is wrong with `row` given the verified row before it (id 0 and the genesis hash at the start)."""
    links = row.prev_hash == prev_hash
    intact = entry_hash(row) == row.entry_hash
    if row.id <= prev_id:
        return "inserted", f"row id {row.id} does not follow row {prev_id}"
    if row.id > prev_id + 1:
        if links and intact:
            return "inserted", f"row {row.id} links to row {prev_id} but skips ids: it was not written by append"
        return "removed", f"row(s) {prev_id + 1}..{row.id - 1} are missing before row {row.id}"
    if links and not intact:
        return "changed", f"row {row.id}'s content no longer matches its entry_hash"
    if not links:
        return "inserted", (f"row {row.id} does not link to row {prev_id}'s hash: it was inserted, "
                            f"or row {prev_id} was rewritten together with its hash")
    return None


async def verify_chain(db: Database, *, batch: int = 1000) -> VerifyResult:
    """Walk the chain from the first row in id order (in batches) and stop at the first row that fails."""
    checked, prev_id, prev_hash = 0, 0, GENESIS_HASH
    async with db.session() as session:
        while True:
            query = select(AuditEntry).order_by(AuditEntry.id).limit(batch)
            rows = (await session.scalars(query.where(AuditEntry.id > prev_id) if checked else query)).all()
            if not rows:
                break
            for row in rows:
                found = _problem(row, prev_id, prev_hash)
                if found is not None:
                    return VerifyResult(ok=False, rows_checked=checked, bad_row_id=row.id, problem=found[0],
                                        detail=found[1], head_id=prev_id or None,
                                        head_hash=prev_hash if prev_id else None)
                checked, prev_id, prev_hash = checked + 1, row.id, row.entry_hash
            session.expunge_all()
    return VerifyResult(ok=True, rows_checked=checked, head_id=prev_id or None,
                        head_hash=prev_hash if prev_id else None)


class AuditRow(BaseModel):
    id: int
    created_at: datetime
    actor_key_id: str | None
    action: str
    resource_type: str
    resource_id: str | None
    tenant: str | None
    outcome: str
    reason: str | None
    request_id: str | None
    metadata: dict[str, Any]
    entry_hash: str


class AuditPage(BaseModel):
    rows: list[AuditRow]
    next_cursor: str | None


def _encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"audit:{last_id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "audit" or not number.isdigit():
            raise ValueError(text)
        return int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument("cursor is not one returned by audit_list; pass next_cursor unchanged") from exc


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def list_audit(
    db: Database,
    *,
    actor_key_id: str | None = None,
    action: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    tenant: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> AuditPage:
    """Rows newest first matching every given filter (`since` inclusive, `until` exclusive; naive times are UTC)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidArgument(f"limit must be a whole number from 1 to {MAX_PAGE}, not {limit!r}")
    if since is not None and until is not None and _utc(since) >= _utc(until):
        raise InvalidArgument("since must be earlier than until")
    exact = {AuditEntry.actor_key_id: actor_key_id, AuditEntry.action: action,
             AuditEntry.resource_type: resource_type, AuditEntry.resource_id: resource_id, AuditEntry.tenant: tenant}
    where = [column == value for column, value in exact.items() if value is not None]
    if since is not None:
        where.append(AuditEntry.created_at >= _utc(since))
    if until is not None:
        where.append(AuditEntry.created_at < _utc(until))
    if cursor is not None:
        where.append(AuditEntry.id < _decode_cursor(cursor))
    async with db.session() as session:
        rows = (await session.scalars(
            select(AuditEntry).where(*where).order_by(AuditEntry.id.desc()).limit(limit + 1)
        )).all()
    page = [
        AuditRow(id=r.id, created_at=_utc(r.created_at), actor_key_id=r.actor_key_id, action=r.action,
                 resource_type=r.resource_type, resource_id=r.resource_id, tenant=r.tenant, outcome=r.outcome,
                 reason=r.reason, request_id=r.request_id, metadata=r.metadata_, entry_hash=r.entry_hash)
        for r in rows[:limit]
    ]
    return AuditPage(rows=page, next_cursor=_encode_cursor(page[-1].id) if len(rows) > limit else None)
