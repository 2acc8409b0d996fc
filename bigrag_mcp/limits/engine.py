"""The check/settle API services call: which counters a call counts against, admission, settlement, release, views.

A call is admitted before its work (`admit`, and `reserve` for amounts known only once the work is sized), which
leaves a `Hold` on the caller. The ledger settles the true figures in the work's own transaction (`settle`), and
whatever the hold still keeps when the call ends goes back (`release`): a failed or deduplicated call costs
nothing. `requests` are final at admission: a refused or failed call still was a request.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.errors import LimitExceeded
from bigrag_mcp.limits import counters
from bigrag_mcp.limits.counters import Bump
from bigrag_mcp.limits.fastpath import SqliteFastPath
from bigrag_mcp.limits.model import DIMENSIONS, EACH, MICRO_USD, STANDING, Limit, show
from bigrag_mcp.limits.window import Window, window_of
from bigrag_mcp.services.audit import append_audit
from bigrag_mcp.services.prices import PriceTable
from bigrag_mcp.services.usage import estimate_tokens, resolve_tokens
from bigrag_mcp.services.webhooks import enqueue_webhook_event
from bigrag_mcp.store.db import Database

if TYPE_CHECKING:
    from bigrag_mcp.policy import Principal
    from bigrag_mcp.services.ledger import Activity, Caller
    from bigrag_mcp.store.models import Collection

Clock = Callable[[], datetime]
FINAL = frozenset({"requests"})
# activity action -> the call metric it counts (the other metrics come from the activity's figures)
CALL_METRICS = {"query": "queries", "chat": "chats"}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a call counts: the key, its role, and the collection and tenant it works in."""

    key_id: str | None = None
    role: str | None = None
    collection: str | None = None
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class Counter:
    """One counter of one limit for one subject (the values its applies_to keeps apart)."""

    limit: Limit
    subject: tuple[str | None, ...]
    key: str

    def bump(self, window: Window, amount: int) -> Bump:
        key_id, role, collection, tenant = self.subject
        return Bump(
            self.key, self.limit.name, self.limit.metric, key_id, role, collection, tenant, window.key, amount,
            self.limit.cap, self.limit.mode == "hard",
        )


def subject_of(limit: Limit, scope: Scope) -> tuple[str | None, ...] | None:
    """The subject a call in `scope` counts under for `limit`, or None when the limit does not apply to it."""
    parts: list[str | None] = []
    for dimension in DIMENSIONS:
        rule = getattr(limit.applies_to, dimension)
        value = getattr(scope, dimension)
        if rule is None:
            parts.append(None)
        elif value is None or (rule != EACH and rule != value):
            return None
        else:
            parts.append(value)
    return tuple(parts)


def counter_key(limit: Limit, subject: tuple[str | None, ...]) -> str:
    return hashlib.sha256(json.dumps([limit.name, limit.metric, limit.per, *subject]).encode()).hexdigest()


def counted_against(rules: Sequence[Limit], scope: Scope, metrics: Mapping[str, int] | None = None) -> list[Counter]:
    """The counters of `rules` a call in `scope` counts against (only those of `metrics` when given)."""
    found = []
    for limit in rules:
        if metrics is not None and limit.metric not in metrics:
            continue
        subject = subject_of(limit, scope)
        if subject is not None:
            found.append(Counter(limit, subject, counter_key(limit, subject)))
    return found


def up_front(operation: str, args: Mapping[str, Any]) -> dict[str, int]:
    """What a call is known to cost before its work: one request, one query or chat, one document, the records of
    an upsert; the estimated tokens of a query's text; and a probe of one unit of cost and chat tokens, figures
    known only afterwards. All but requests are settled to the true figure, and a full counter refuses the call."""
    amounts = {"requests": 1}
    if operation in ("query", "query_multi", "chat"):
        amounts["queries" if operation != "chat" else "chats"] = 1
        text = args.get("message" if operation == "chat" else "query")
        if args.get("search_mode") != "keyword" and isinstance(text, str):
            amounts["embedding_tokens"] = max(1, estimate_tokens([text]))
        amounts["cost_usd"] = 1
        if operation == "chat":
            amounts["chat_tokens"] = 1
    elif operation == "documents_upload":
        amounts["documents"] = 1
    elif operation == "vectors_upsert" and isinstance(args.get("vectors"), list):
        amounts["chunks"] = len(args["vectors"])
    return amounts


@dataclass
class _Held:
    window: str
    amount: int


@dataclass
class Hold:
    """What one call reserved, by counter; settled in the work's transaction, the rest released when it ends."""

    scope: Scope
    actor: str | None = None
    request_id: str | None = None
    held: dict[str, _Held] = field(default_factory=dict)

    def take(self, session: AsyncSession, key: str, window: str) -> int:
        """Hand a counter's reservation to a settlement in `session`; it comes back if that transaction rolls back."""
        held = self.held.get(key)
        if held is None or held.window != window:
            return 0
        del self.held[key]
        sync = session.sync_session
        taken = sync.info.get(("limits", id(self)))  # what this session took from this hold, one listener for it
        if taken is None:
            taken = sync.info[("limits", id(self))] = {}
            event.listen(sync, "after_rollback", lambda _s: self.held.update(taken), once=True)
        taken[key] = held
        return held.amount


class LimitStatus(BaseModel):
    """One counter as callers and dashboards see it."""

    name: str
    metric: str
    mode: str
    window: str = Field(description="minute, hour, day, month (calendar, UTC) or total (a standing cap).")
    used: int | float = Field(description="Counted in the current window (dollars for cost_usd).")
    max: int | float
    remaining: int | float
    resets_at: datetime | None = Field(description="When the window resets (UTC); null for a standing cap.")
    key_id: str | None = None
    role: str | None = None
    collection: str | None = None
    tenant: str | None = None


def refusal(limit: Limit, used: int, window: Window, now: datetime, requested: int) -> LimitExceeded:
    """The error of a call over a hard limit, with its figures as structured content."""
    resets = window.resets_at.isoformat().replace("+00:00", "Z") if window.resets_at else None
    when = f"resets at {resets}" if resets else "a standing cap: it frees up only when usage goes down"
    error = LimitExceeded(
        f"{limit.name}: {limit.metric} {show(limit.metric, used):g}/{limit.max:g} per {limit.per}; {when}"
    )
    error.details = {
        "code": error.code, "limit": limit.name, "metric": limit.metric, "used": show(limit.metric, used),
        "max": show(limit.metric, limit.cap), "requested": show(limit.metric, requested), "window": limit.per, "resets_at": resets,
        "retry_after_s": window.retry_after_s(now),
    }
    return error


class Limits:
    """The limits of one policy over one store (`fast`: the SQLite fast path for admissions, which `close` closes)."""

    def __init__(
        self, db: Database, rules: Sequence[Limit], prices: Callable[[], PriceTable], clock: Clock = utc_now,
        fast: SqliteFastPath | None = None,
    ) -> None:
        self.db = db
        self.rules = tuple(rules)
        self.clock = clock
        self._load_prices = prices
        self._prices: PriceTable | None = None
        self.fast = fast

    def with_rules(self, rules: Sequence[Limit]) -> Limits:
        """The same store, prices and clock under other rules (e.g. a policy file being explained)."""
        return Limits(self.db, rules, self._load_prices, self.clock, self.fast)

    def counters(self, scope: Scope, metrics: Mapping[str, int] | None = None) -> list[Counter]:
        """The counters a call in `scope` counts against (only those of `metrics` when given); no I/O."""
        return counted_against(self.rules, scope, metrics)

    def cost_units(self, tokens: int, provider: str | None, model: str | None) -> int:
        """Micro-dollars of embedding tokens by the usage price table (0 for a model it does not price)."""
        if not tokens:
            return 0
        if self._prices is None:
            self._prices = self._load_prices()
        price = self._prices.price(provider, model)
        return math.ceil(tokens * price) if price else 0

    async def admit(self, caller: Caller, operation: str, args: Mapping[str, Any], collection: str | None,
                    tenant: str | None) -> Hold | None:
        """Count a call before its work; LimitExceeded (and nothing counted) when a hard limit is full."""
        if not self.rules or caller.principal is None:
            return None
        p = caller.principal
        hold = Hold(Scope(p.key_id, p.role, collection, tenant or p.tenant), p.key_id, caller.request_id)
        await self.reserve(hold, up_front(operation, args))
        return hold

    async def reserve(self, hold: Hold | None, amounts: Mapping[str, int]) -> None:
        """Add `amounts` to a call's hold, all or nothing; LimitExceeded naming the first full hard limit."""
        if hold is None:
            return
        wanted = [(c, amounts[c.limit.metric]) for c in self.counters(hold.scope, amounts) if amounts[c.limit.metric] > 0]
        if not wanted:
            return
        now = self.clock()
        windows = {c.key: window_of(c.limit.per, now) for c, _ in wanted}
        # A call bigger than a whole cap never fits (and a fresh counter's insert has no old row to compare).
        too_big = next((c for c, n in wanted if c.limit.mode == "hard" and n > c.limit.cap), None)
        after = {} if too_big else await self._admitting([c.bump(windows[c.key], n) for c, n in wanted])
        refused = too_big or next((c for c, _ in wanted if c.key not in after), None)
        if refused is not None:
            async with self.db.engine.connect() as conn:
                used = (await counters.current(conn, [refused.key])).get(refused.key)
            window = windows[refused.key]
            in_window = used[1] if used and used[0] == window.key else 0
            raise refusal(refused.limit, in_window, window, now, amounts[refused.limit.metric])
        crossed = [(c, n, after[c.key], windows[c.key]) for c, n in wanted if _crosses(c.limit, n, after[c.key])]
        if crossed:  # rare: the announcement is its own transaction, and limit_warnings keeps it to one
            async with self.db.session() as session:
                await self._warn(session, crossed, hold)
        for c, amount in wanted:
            if c.limit.metric not in FINAL:
                entry = hold.held.setdefault(c.key, _Held(windows[c.key].key, 0))
                entry.amount += amount

    async def reserve_upload(self, hold: Hold | None, *, pieces: Sequence[str], size_bytes: int, collection: Collection) -> None:
        """Reserve an upload's chunks, bytes, estimated embedding tokens and their cost before it is embedded."""
        if hold is None:
            return
        tokens = estimate_tokens(pieces)
        cost = self.cost_units(tokens, collection.embedding_provider, collection.embedding_model)
        await self.reserve(
            hold, {"chunks": len(pieces), "storage_bytes": size_bytes, "embedding_tokens": tokens, "cost_usd": cost}
        )

    async def _admitting(self, bumps: Sequence[Bump]) -> dict[str, int]:
        """Run the admission statement, committed only when every counter took its amount; the new values.

        On a SQLite file it runs on this thread unless the store is busy, else in a connection of the pool.
        """
        wanted = {b.counter_key for b in bumps}
        if self.fast is not None:
            after = self.fast.bump(counters.bump_statement("sqlite", enforce=True), counters.rows(bumps), wanted)
            if after is not None:
                return after
        async with self.db.engine.connect() as conn:
            after = await counters.bump(conn, bumps, enforce=True)
            await (conn.commit() if wanted <= after.keys() else conn.rollback())
        return after

    def close(self) -> None:
        """Let go of the fast path's connection."""
        if self.fast is not None:
            self.fast.close()

    def figures(self, activity: Activity) -> dict[str, int]:
        """An activity's amounts by metric, as the usage ledger measures them."""
        tokens, _ = resolve_tokens(activity.embedding_tokens, activity.texts)
        amounts = {
            "documents": activity.documents, "chunks": activity.chunks, "storage_bytes": activity.storage_bytes,
            "embedding_tokens": tokens, "chat_tokens": activity.chat_input_tokens + activity.chat_output_tokens,
            "cost_usd": self.cost_units(tokens, activity.provider, activity.model),
        }
        if activity.action in CALL_METRICS:
            amounts[CALL_METRICS[activity.action]] = 1
        return amounts

    async def settle(self, session: AsyncSession, caller: Caller, activity: Activity) -> None:
        """Count what a call really did, in its own transaction: the true figures replace what it held."""
        if not self.rules:
            return
        p = caller.principal
        hold = caller.hold
        scope = hold.scope if hold is not None and hold.scope.collection == activity.collection else Scope(
            p.key_id if p else None, p.role if p else None, activity.collection, activity.tenant or (p.tenant if p else None)
        )
        amounts = self.figures(activity)
        now = self.clock()
        ups: list[tuple[Counter, int, Window]] = []
        for c in self.counters(scope, amounts):
            window = window_of(c.limit.per, now)
            actual = amounts[c.limit.metric]
            if actual < 0 and not (c.limit.per == "total" and c.limit.metric in STANDING):
                actual = 0  # deletes give back standing totals only; a window counts what was added
            delta = actual - (hold.take(session, c.key, window.key) if hold is not None else 0)
            if delta < 0:
                await counters.reduce(session, c.key, window.key, -delta)
            elif delta > 0:
                ups.append((c, delta, window))
        if ups:
            after = await counters.bump(session, [c.bump(w, n) for c, n, w in ups], enforce=False)
            await self._warn(session, [(c, n, after[c.key], w) for c, n, w in ups], hold, caller)

    async def release(self, hold: Hold | None) -> None:
        """Give back whatever a call still holds (all of it when it failed before settling)."""
        if hold is None or not hold.held:
            return
        held, hold.held = hold.held, {}
        async with self.db.engine.begin() as conn:
            for key, entry in held.items():
                await counters.reduce(conn, key, entry.window, entry.amount)

    async def forget(self, session: AsyncSession, collection: str, tenant: str | None) -> int:
        """Drop the counters of an offboarded tenant (or of a dropped collection) in the offboarding transaction."""
        return await counters.forget(session, collection, tenant)

    async def _warn(
        self, session: AsyncSession, bumped: Sequence[tuple[Counter, int, int, Window]], hold: Hold | None,
        caller: Caller | None = None,
    ) -> None:
        """Send quota.warning (a signed webhook through the outbox) and an audit row, once per threshold and window."""
        for c, amount, after, window in bumped:
            for fraction in c.limit.thresholds:
                if not after - amount < fraction * c.limit.cap <= after:
                    continue
                if not await counters.first_warning(session, c.key, window.key, f"{fraction:g}"):
                    continue
                key_id, role, collection, tenant = c.subject
                data = {
                    "limit": c.limit.name, "metric": c.limit.metric, "mode": c.limit.mode, "threshold": fraction,
                    "used": show(c.limit.metric, after), "max": show(c.limit.metric, c.limit.cap), "window": c.limit.per,
                    "resets_at": window.resets_at.isoformat() if window.resets_at else None,
                    "key_id": key_id, "role": role, "collection": collection, "tenant": tenant,
                }
                await enqueue_webhook_event(session, "quota.warning", data)
                actor = hold.actor if hold is not None else (caller.key_id if caller is not None else None)
                await append_audit(
                    session, actor_key_id=actor, action="quota.warning", resource_type="limit",
                    resource_id=c.limit.name, tenant=tenant,
                    request_id=hold.request_id if hold is not None else (caller.request_id if caller else None),
                    reason=f"{c.limit.metric} reached {fraction:.0%} of {c.limit.max:g} per {c.limit.per}",
                    metadata=data,
                )

    async def status(
        self, principal: Principal | None = None, *, collection: str | None = None, tenant: str | None = None,
        key_id: str | None = None,
    ) -> list[LimitStatus]:
        """Each counter within reach: a pinned key's own (its key, role, collection and tenant); everything for an
        unpinned key or the operator, narrowed by `collection`, `tenant` and `key_id`. A limit that applies but
        has counted nothing yet shows with used 0."""
        if not self.rules:
            return []
        pinned = principal is not None and principal.pinned
        collection = collection or (principal.collection if principal else None)
        tenant = tenant or (principal.tenant if principal else None)
        reach: dict[str, str | None] = {name: value for name, value in (("collection", collection), ("tenant", tenant),
                                                                          ("key_id", key_id)) if value is not None}
        if pinned and principal is not None:  # a pinned key sees its own counters, never another key's or role's
            reach.update(key_id=principal.key_id, role=principal.role)
        now = self.clock()
        definitions = {limit.name: limit for limit in self.rules}
        async with self.db.session() as session:
            rows = await counters.rows_of(session, definitions, reach)
        seen: dict[str, LimitStatus] = {}
        for row in rows:
            limit, subject = definitions[row.limit_name], (row.key_id, row.role, row.collection, row.tenant)
            if row.counter_key == counter_key(limit, subject):  # not a counter of an earlier definition
                seen[row.counter_key] = _status(limit, subject, row.window_start, row.used, now)
        if principal is not None:  # what applies to the key but has counted nothing yet
            for c in self.counters(Scope(principal.key_id, principal.role, collection, tenant)):
                seen.setdefault(c.key, _status(c.limit, c.subject, "", 0, now))
        return sorted(seen.values(), key=lambda s: (s.name, s.collection or "", s.tenant or "", s.key_id or "", s.role or ""))

    async def preview(self, principal: Principal, operation: str, args: Mapping[str, Any], collection: str | None,
                      tenant: str | None) -> list[dict[str, Any]]:
        """The counters a call would count against, how full they are, and whether it would be admitted now."""
        amounts = up_front(operation, args)
        found = self.counters(Scope(principal.key_id, principal.role, collection, tenant or principal.tenant), amounts)
        async with self.db.session() as session:
            stored = await counters.current(session, [c.key for c in found])
        now = self.clock()
        shown = []
        for c in found:
            window_start, used = stored.get(c.key, ("", 0))
            view = _status(c.limit, c.subject, window_start, used, now).model_dump(mode="json")
            wanted = amounts[c.limit.metric]
            fits = c.limit.mode == "soft" or view["used"] * (MICRO_USD if c.limit.metric == "cost_usd" else 1) + wanted <= c.limit.cap
            shown.append({**view, "this_call": show(c.limit.metric, wanted), "would_admit": fits})
        return shown

    def describe(self, principal: Principal) -> str | None:
        """One sentence for a key's handshake instructions naming the limits that can apply to it, or None."""
        names = []
        for limit in self.rules:
            rule = limit.applies_to
            if rule.key_id not in (None, EACH, principal.key_id) or rule.role not in (None, EACH, principal.role):
                continue
            if (rule.role == EACH and principal.role is None) or any(
                pin is not None and getattr(rule, dim) not in (None, EACH, pin)
                for dim, pin in (("collection", principal.collection), ("tenant", principal.tenant))
            ):
                continue
            names.append(f"{limit.name} ({limit.max:g} {limit.metric} per {limit.per}{', soft' if limit.mode == 'soft' else ''})")
        if not names:
            return None
        return (
            f"Limits apply to this key: {'; '.join(names)}; a call over a hard limit fails with limit_exceeded and "
            "retry_after_s, and usage_get shows what is left."
        )


def _crosses(limit: Limit, amount: int, after: int) -> bool:
    """Whether adding `amount` to reach `after` crossed one of the limit's warning thresholds."""
    return any(after - amount < fraction * limit.cap <= after for fraction in limit.thresholds)


def _status(limit: Limit, subject: tuple[str | None, ...], window_start: str, used: int, now: datetime) -> LimitStatus:
    window = window_of(limit.per, now)
    in_window = used if window_start == window.key else 0
    cap = limit.cap
    key_id, role, collection, tenant = subject
    return LimitStatus(
        name=limit.name, metric=limit.metric, mode=limit.mode, window=limit.per, used=show(limit.metric, in_window),
        max=show(limit.metric, cap), remaining=show(limit.metric, max(0, cap - in_window)), resets_at=window.resets_at,
        key_id=key_id, role=role, collection=collection, tenant=tenant,
    )
