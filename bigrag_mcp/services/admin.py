"""Admin operations for callers holding a key: keys, webhooks and usage, always within the caller's pins."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.errors import NotFound
from bigrag_mcp.limits.engine import LimitStatus
from bigrag_mcp.policy import Principal, reach_gap
from bigrag_mcp.services.audit import append_audit
from bigrag_mcp.services.keys import ApiKeyInfo, Audit, collection_facts, create_key, list_keys, revoke_key
from bigrag_mcp.services.ledger import OPERATOR, Caller
from bigrag_mcp.services.prices import load_prices
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.services.usage import UsageReport, usage_report
from bigrag_mcp.services.webhooks import WebhookInfo, create_webhook, delete_webhook, list_webhooks


def _key_audit(caller: Caller, action: str) -> Audit:
    """Writes the audit row of a key change in the change's own transaction."""

    async def audit(session: AsyncSession, info: ApiKeyInfo) -> None:
        await append_audit(
            session,
            actor_key_id=caller.key_id,
            action=action,
            resource_type="api_key",
            resource_id=info.id,
            tenant=info.tenant,
            request_id=caller.request_id,
            metadata={"name": info.name, "scopes": info.scopes, "collection": info.collection},
        )

    return audit


async def mint_key(
    rt: Runtime,
    *,
    name: str,
    scopes: Sequence[str],
    collection: str | None = None,
    tenant: str | None = None,
    expires_at: datetime | None = None,
    caller: Caller = OPERATOR,
    role: str | None = None,
) -> tuple[ApiKeyInfo, str]:
    """A new key (never with more rights than the caller's), audited in its transaction; the secret is returned once."""
    return await create_key(
        rt.db,
        name=name,
        scopes=scopes,
        collection=collection,
        tenant=tenant,
        expires_at=expires_at,
        creator=caller.principal,
        audit=_key_audit(caller, "api_key.created"),
        role=role,
    )


async def keys_visible(rt: Runtime, caller: Caller = OPERATOR) -> list[ApiKeyInfo]:
    """The keys within the caller's reach (scopes held, pins at least as narrow, no wider collection slice);
    the operator sees every key."""
    keys = await list_keys(rt.db)
    outer = caller.principal
    if outer is None:
        return keys
    async with rt.db.session() as session:
        facts = await collection_facts(session, {k.collection for k in keys if k.collection is not None})
    return [k for k in keys if reach_gap(outer, k.principal(), facts.get(k.collection or "")) is None]


async def revoke(rt: Runtime, key_id: str, caller: Caller = OPERATOR) -> ApiKeyInfo:
    if not any(k.id == key_id for k in await keys_visible(rt, caller)):
        raise NotFound(f"no API key with id {key_id!r}; api_keys_list shows the ids")
    return await revoke_key(rt.db, key_id, audit=_key_audit(caller, "api_key.revoked"))


async def add_webhook(
    rt: Runtime, url: str, events: Sequence[str], secret: str | None = None, caller: Caller = OPERATOR
) -> WebhookInfo:
    async with rt.db.session() as session:
        hook = await create_webhook(
            session, url, events, secret=secret, created_by=caller.key_id, allow_private=rt.settings.webhook_allow_private
        )
        await append_audit(
            session,
            actor_key_id=caller.key_id,
            action="webhook.created",
            resource_type="webhook",
            resource_id=hook.id,
            request_id=caller.request_id,
            metadata={"url": hook.url, "events": hook.events},
        )
        return hook


async def webhooks(rt: Runtime) -> list[WebhookInfo]:
    async with rt.db.session() as session:
        return await list_webhooks(session)


async def remove_webhook(rt: Runtime, webhook_id: str, caller: Caller = OPERATOR) -> WebhookInfo:
    async with rt.db.session() as session:
        hook = await delete_webhook(session, webhook_id)
        await append_audit(
            session,
            actor_key_id=caller.key_id,
            action="webhook.deleted",
            resource_type="webhook",
            resource_id=webhook_id,
            request_id=caller.request_id,
        )
        return hook


class UsageView(UsageReport):
    """A usage report with the limits within the same reach."""

    limits: list[LimitStatus]


async def usage(
    rt: Runtime, *, window_days: int = 30, collection: str | None = None, tenant: str | None = None,
    principal: Principal | None = None,
) -> UsageView:
    """Usage of one collection and/or tenant, or of everything (the policy fills in a pinned key's reach), and the
    limits of that reach (a pinned key's own)."""
    await rt.ledger.flush()  # this process's queries whose usage rows still wait for the store count too
    report = await usage_report(
        rt.db, window_days=window_days, collection=collection, tenant=tenant, prices=load_prices(rt.settings.price_file)
    )
    limits = await rt.limits.status(principal, collection=collection, tenant=tenant)
    return UsageView(**dict(report), limits=limits)  # the report's rows as they are, not validated again
