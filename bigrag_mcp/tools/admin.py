"""Admin tools: API keys, usage, audit, webhooks and tenant offboarding."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, Field

from bigrag_mcp.gate import Gate
from bigrag_mcp.services import admin
from bigrag_mcp.services.audit import AuditPage, list_audit
from bigrag_mcp.services.keys import ApiKeyInfo
from bigrag_mcp.services.offboarding import OffboardResult, offboard
from bigrag_mcp.tools import DELETE, READ, WRITE


class CreatedKey(BaseModel):
    key: ApiKeyInfo
    secret: str = Field(description="The key itself: shown this once, stored only as a hash.")


class KeyList(BaseModel):
    keys: list[ApiKeyInfo]


def register(server: MCPServer, gate: Gate) -> None:
    rt = gate.rt

    @server.tool(annotations=WRITE)
    async def api_keys_create(
        name: str,
        scopes: Annotated[tuple[str, ...], Field(description="resource:action scopes, e.g. query:read; empty grants nothing.")] = (),
        role: Annotated[str | None, Field(description="A role of the server's policy (e.g. tenant-app, read-only): its scopes are added to `scopes`.")] = None,
        collection: Annotated[str | None, Field(description="Pin the key to this collection.")] = None,
        tenant: Annotated[str | None, Field(description="Pin the key to this tenant of shared collections.")] = None,
        expires_at: Annotated[datetime | None, Field(description="When the key stops working; at most (and by default) your own key's expiry.")] = None,
    ) -> CreatedKey:
        """Mint an API key within your own reach (scopes, pins, expiry); the secret is returned once."""

        async def call(caller: Any, a: dict[str, Any], d: Any) -> CreatedKey:
            if a["role"] is not None:  # recorded on the key too, so limits that name the role count it
                a["scopes"] = [*gate.policy.role_scopes(a["role"]), *a["scopes"]]
            info, secret = await admin.mint_key(rt, caller=caller, **a)
            return CreatedKey(key=info, secret=secret)

        args = {"name": name, "scopes": scopes, "role": role, "collection": collection, "tenant": tenant, "expires_at": expires_at}
        return await gate.run("api_keys_create", args, call)

    @server.tool(annotations=READ)
    async def api_keys_list() -> KeyList:
        """The keys you may manage (never their secrets)."""

        async def call(caller: Any, a: dict[str, Any], d: Any) -> KeyList:
            return KeyList(keys=await admin.keys_visible(rt, caller))

        return await gate.run("api_keys_list", {}, call)

    @server.tool(annotations=DELETE)
    async def api_keys_revoke(key_id: str) -> ApiKeyInfo:
        """Revoke a key: its very next call fails, also in sessions already open."""
        return await gate.run("api_keys_revoke", {"key_id": key_id}, lambda caller, a, d: admin.revoke(rt, a["key_id"], caller))

    @server.tool(annotations=READ)
    async def usage_get(
        window_days: Annotated[int, Field(ge=1, le=365)] = 30,
        collection: Annotated[str | None, Field(description="One collection; all you may see when omitted.")] = None,
        tenant: Annotated[str | None, Field(description="One tenant of a shared collection (filled in for tenant keys).")] = None,
    ) -> admin.UsageView:
        """Usage totals, a daily timeline, rows by collection and by tenant, and the limits that apply to you."""
        return await gate.run(
            "usage_get",
            {"window_days": window_days, "collection": collection, "tenant": tenant},
            lambda caller, a, d: admin.usage(
                rt, window_days=a["window_days"], collection=a.get("collection"), tenant=a.get("tenant"),
                principal=caller.principal,
            ),
        )

    @server.tool(annotations=READ)
    async def audit_list(
        actor_key_id: str | None = None,
        action: str | None = None,
        resource_type: str | None = None,
        resource_id: str | None = None,
        tenant: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> AuditPage:
        """Audit rows, newest first, filtered and paged by cursor."""
        args = {
            "actor_key_id": actor_key_id,
            "action": action,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "tenant": tenant,
            "since": since,
            "until": until,
            "limit": limit,
            "cursor": cursor,
        }
        return await gate.run("audit_list", args, lambda caller, a, d: list_audit(rt.db, **a))

    @server.tool(annotations=WRITE)
    async def webhooks_create(
        url: str,
        events: Annotated[list[str], Field(description="collection.*, document.*, tenant.offboarded, or exact event names.")],
        secret: Annotated[str | None, Field(description="Signing secret; generated when omitted.")] = None,
    ) -> dict[str, Any]:
        """Subscribe a URL to events; deliveries are signed with HMAC-SHA256 (the secret is shown once)."""

        async def call(caller: Any, a: dict[str, Any], d: Any) -> dict[str, Any]:
            return (await admin.add_webhook(rt, a["url"], a["events"], a.get("secret"), caller)).as_dict()

        return await gate.run("webhooks_create", {"url": url, "events": events, "secret": secret}, call)

    @server.tool(annotations=READ)
    async def webhooks_list() -> dict[str, Any]:
        """Webhook subscriptions (without secrets)."""

        async def call(caller: Any, a: dict[str, Any], d: Any) -> dict[str, Any]:
            return {"webhooks": [h.as_dict() for h in await admin.webhooks(rt)]}

        return await gate.run("webhooks_list", {}, call)

    @server.tool(annotations=DELETE)
    async def webhooks_delete(webhook_id: str) -> dict[str, Any]:
        """Remove a webhook subscription."""

        async def call(caller: Any, a: dict[str, Any], d: Any) -> dict[str, Any]:
            return (await admin.remove_webhook(rt, a["webhook_id"], caller)).as_dict()

        return await gate.run("webhooks_delete", {"webhook_id": webhook_id}, call)

    @server.tool(annotations=DELETE)
    async def tenants_offboard(
        collection: Annotated[str, Field(description="The tenant's own collection, or the shared collection.")],
        tenant: str,
    ) -> OffboardResult:
        """Remove every trace of a tenant: its collection (one per tenant) or its rows in a shared one, and its keys."""
        return await gate.run(
            "tenants_offboard",
            {"collection": collection, "tenant": tenant},
            lambda caller, a, d: offboard(rt, a["collection"], a["tenant"], caller=caller),
        )
