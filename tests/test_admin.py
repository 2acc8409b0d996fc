"""Admin tools through MCP: keys within the caller's rights, audited in the same transaction; webhooks; audit paging."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import call, mcp_session, refused, within_as_stated
from mcp import Client
from mcp.server.auth.provider import AccessToken

from bigrag_mcp.errors import NotFound
from bigrag_mcp.gate import principal_of_token
from bigrag_mcp.policy import Principal, parse_policy
from bigrag_mcp.server import build_server
from bigrag_mcp.services import admin as admin_service
from bigrag_mcp.services import collections
from bigrag_mcp.services.audit import verify_chain
from bigrag_mcp.services.keys import authenticate, create_key
from bigrag_mcp.services.ledger import Caller
from bigrag_mcp.services.runtime import Runtime

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[1]


def _keys_policy_for_pinned_keys() -> Any:
    """The default policy with the key tools open to pinned keys (not cross-collection)."""
    source = (REPO / "policies" / "default.toml").read_text(encoding="utf-8")
    for tool in ("api_keys_create", "api_keys_list", "api_keys_revoke"):
        source = source.replace(f"[operations.{tool}]\nscope = \"api_key:admin\"\ncross_collection = true", f"[operations.{tool}]\nscope = \"api_key:admin\"")
    policy = parse_policy(source, "pinned-key-admins.toml")
    assert not policy.operations["api_keys_create"].cross_collection
    return policy


async def test_keys_never_escalate_and_pinned_keys_cannot_manage_keys(rt: Runtime, admin) -> None:
    await call(admin, "collections_create", collection="shared", tenant_field="tenant_id")
    made = await call(admin, "api_keys_create", name="key admin", scopes=["api_key:admin", "query:read"])
    rows = (await call(admin, "audit_list", action="api_key.created"))["rows"]
    assert [r["resource_id"] for r in rows] == [made["key"]["id"]] and made["secret"] not in str(rows)
    async with mcp_session(rt, made["secret"]) as key_admin:
        text = await refused(key_admin, "api_keys_create", name="x", scopes=["*:*"])
        assert text.startswith("permission_denied") and "cannot grant" in text
        assert (await refused(key_admin, "api_keys_create", name="x", scopes=["query:shout"])).startswith("invalid_argument")
        child = await call(key_admin, "api_keys_create", name="acme reader", scopes=["query:read"], collection="shared", tenant="acme")
        assert child["key"]["created_by"] == made["key"]["id"]
    async with mcp_session(rt, child["secret"]) as pinned:
        listed = {t.name for t in (await pinned.list_tools()).tools}
        assert listed == {"query"}
    _, pinned_admin = await create_key(rt.db, name="pinned admin", scopes=["api_key:admin"], collection="shared")
    async with mcp_session(rt, pinned_admin) as client:
        text = await refused(client, "api_keys_create", name="x", scopes=[])
        assert text == "permission_denied: This API key cannot use cross-collection operations."


async def test_a_policy_that_lets_pinned_keys_manage_keys_keeps_them_within_their_pins(rt: Runtime, admin) -> None:
    policy = _keys_policy_for_pinned_keys()
    await call(admin, "collections_create", collection="shared", tenant_field="tenant_id")
    _, acme_secret = await create_key(rt.db, name="acme admin", scopes=["api_key:admin", "query:read"], collection="shared", tenant="acme")
    _, outsider = await create_key(rt.db, name="globex app", scopes=["query:read"], collection="shared", tenant="globex")
    server = build_server(rt, policy, session_key=acme_secret, principal=await authenticate(rt.db, acme_secret))
    async with Client(server) as acme_admin:
        assert (await refused(acme_admin, "api_keys_create", name="x", scopes=["query:read"], tenant="globex")).startswith("permission_denied")
        child = await call(acme_admin, "api_keys_create", name="acme reader", scopes=["query:read"])
        assert (child["key"]["collection"], child["key"]["tenant"]) == ("shared", "acme")  # pins inherited
        visible = {k["name"] for k in (await call(acme_admin, "api_keys_list"))["keys"]}
        assert visible == {"acme admin", "acme reader"}
        globex_id = next(k["id"] for k in (await call(admin, "api_keys_list"))["keys"] if k["name"] == "globex app")
        assert (await refused(acme_admin, "api_keys_revoke", key_id=globex_id)).startswith("not_found")
        await call(acme_admin, "api_keys_revoke", key_id=child["key"]["id"])
    assert await authenticate(rt.db, outsider) is not None and await authenticate(rt.db, child["secret"]) is None
    revoked = (await call(admin, "audit_list", action="api_key.revoked"))["rows"]
    acme_admin_id = next(k["id"] for k in (await call(admin, "api_keys_list"))["keys"] if k["name"] == "acme admin")
    assert [(r["resource_id"], r["actor_key_id"]) for r in revoked] == [(child["key"]["id"], acme_admin_id)]
    assert (await verify_chain(rt.db)).ok


async def test_a_tenant_pinned_creator_cannot_mint_a_key_into_another_customers_own_collection(rt: Runtime, admin) -> None:
    await call(admin, "collections_create", collection="shared", tenant_field="tenant_id")
    await call(admin, "collections_create", collection="tenant_globex")
    await call(admin, "documents_upload", collection="tenant_globex", text="globex secret roadmap", filename="r.txt")
    _, acme_secret = await create_key(rt.db, name="acme admin", scopes=["api_key:admin", "query:read"], tenant="acme")
    server = build_server(rt, _keys_policy_for_pinned_keys(), session_key=acme_secret, principal=await authenticate(rt.db, acme_secret))
    async with Client(server) as acme_admin:
        text = await refused(acme_admin, "api_keys_create", name="x", scopes=["query:read"], collection="tenant_globex")
        assert text.startswith("permission_denied") and "all of collection 'tenant_globex'" in text
        own = await call(acme_admin, "api_keys_create", name="acme reader", scopes=["query:read"], collection="shared")
        assert (own["key"]["collection"], own["key"]["tenant"]) == ("shared", "acme")
    assert [k["name"] for k in (await call(admin, "api_keys_list"))["keys"]] == ["admin", "acme admin", "acme reader"]


async def test_a_key_admin_neither_sees_nor_revokes_keys_beyond_its_reach(rt: Runtime, admin, admin_key: str) -> None:
    await call(admin, "collections_create", collection="shared", tenant_field="tenant_id")
    keymaster = await call(admin, "api_keys_create", name="keymaster", scopes=["api_key:admin", "query:read"])
    reader = await call(admin, "api_keys_create", name="reader", scopes=["query:read"], collection="shared", tenant="acme")
    await call(admin, "api_keys_create", name="chatter", scopes=["chat:write"])
    root_id = next(k["id"] for k in (await call(admin, "api_keys_list"))["keys"] if k["name"] == "admin")
    async with mcp_session(rt, keymaster["secret"]) as client:
        assert [k["name"] for k in (await call(client, "api_keys_list"))["keys"]] == ["keymaster", "reader"]
        assert (await refused(client, "api_keys_revoke", key_id=root_id)).startswith("not_found")
        await call(client, "api_keys_revoke", key_id=reader["key"]["id"])
    assert await authenticate(rt.db, admin_key) is not None
    assert await authenticate(rt.db, reader["secret"]) is None


async def test_denials_and_webhook_changes_are_audited(rt: Runtime, admin) -> None:
    _, reader = await create_key(rt.db, name="reader", scopes=["collection:read"])
    async with mcp_session(rt, reader) as client:
        await refused(client, "collections_delete", collection="nope")
    denied = (await call(admin, "audit_list", resource_id="nope"))["rows"]
    assert [(r["action"], r["outcome"]) for r in denied] == [("collections_delete.denied", "denied")]
    internal = await refused(admin, "webhooks_create", url="http://169.254.169.254/latest/meta-data", events=["document.*"])
    assert internal.startswith("invalid_argument") and "internal address" in internal
    hook = await call(admin, "webhooks_create", url="https://example.test/hook", events=["document.*"])
    assert hook["secret"].startswith("whsec_")
    assert "secret" not in (await call(admin, "webhooks_list"))["webhooks"][0]
    await call(admin, "webhooks_delete", webhook_id=hook["id"])
    actions = [r["action"] for r in (await call(admin, "audit_list", resource_type="webhook"))["rows"]]
    assert actions == ["webhook.deleted", "webhook.created"]
    page = await call(admin, "audit_list", limit=1)
    rest = await call(admin, "audit_list", limit=500, cursor=page["next_cursor"])
    assert len(page["rows"]) + len(rest["rows"]) == len((await call(admin, "audit_list", limit=500))["rows"])


async def test_api_keys_create_takes_a_role_like_the_cli(admin) -> None:
    made = await call(admin, "api_keys_create", name="app", role="tenant-app", scopes=["usage:read"])
    assert made["key"]["scopes"] == ["query:read", "chat:write", "document:upload", "usage:read"]
    assert (await call(admin, "api_keys_create", name="ro", role="read-only"))["key"]["scopes"] == [
        "collection:read", "document:read", "query:read", "usage:read"
    ]
    text = await refused(admin, "api_keys_create", name="x", role="superuser")
    assert text.startswith("invalid_argument: unknown role 'superuser'")


def test_an_http_key_carries_its_expiry_into_the_principal() -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    token = AccessToken(token="t", client_id="key_1", scopes=["*:*"], claims={"collection": None, "tenant": "acme", "expires_at": expires.isoformat()})
    assert principal_of_token(token) == Principal("key_1", frozenset({"*:*"}), None, "acme", expires_at=expires)
    assert principal_of_token(AccessToken(token="t", client_id="key_2", scopes=[], claims={})).expires_at is None


async def test_each_key_lists_and_revokes_exactly_the_keys_within_its_reach(rt: Runtime) -> None:
    await collections.create(rt, name="shared", tenant_field="tenant_id")
    await collections.create(rt, name="plain")
    scope_sets = [["*:*"], ["api_key:admin", "query:read"], ["query:read"], ["document:*"], ["*:read"]]
    keys = [
        (await create_key(rt.db, name=f"k{i}", scopes=scopes, collection=collection, tenant=tenant))[0]
        for i, (scopes, collection, tenant) in enumerate(
            itertools.product(scope_sets, [None, "shared", "plain"], [None, "acme", "globex"])
        )
    ]
    for key in keys:
        caller = Caller(key.principal())
        expected = {k.id for k in keys if within_as_stated(key.principal(), k.principal(), {"shared"})}
        assert {k.id for k in await admin_service.keys_visible(rt, caller)} == expected, key
        hidden = next((k for k in keys if k.id not in expected), None)
        if hidden is not None:
            with pytest.raises(NotFound):
                await admin_service.revoke(rt, hidden.id, caller)
    assert all(k.revoked_at is None for k in await admin_service.keys_visible(rt))
