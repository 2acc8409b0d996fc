"""Admin tools through MCP: keys within the caller's rights, audited in the same transaction; webhooks; audit paging."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import call, mcp_session, refused
from mcp import Client

from bigrag_mcp.policy import parse_policy
from bigrag_mcp.server import build_server
from bigrag_mcp.services.audit import verify_chain
from bigrag_mcp.services.keys import authenticate, create_key
from bigrag_mcp.services.runtime import Runtime

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[1]


async def test_keys_never_escalate_and_pinned_keys_cannot_manage_keys(rt: Runtime, admin) -> None:
    await call(admin, "collections_create", name="shared", tenant_field="tenant_id")
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
    source = (REPO / "policies" / "default.toml").read_text(encoding="utf-8")
    for tool in ("api_keys_create", "api_keys_list", "api_keys_revoke"):
        source = source.replace(f"[operations.{tool}]\nscope = \"api_key:admin\"\ncross_collection = true", f"[operations.{tool}]\nscope = \"api_key:admin\"")
    policy = parse_policy(source, "pinned-key-admins.toml")
    assert not policy.operations["api_keys_create"].cross_collection
    await call(admin, "collections_create", name="shared", tenant_field="tenant_id")
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
