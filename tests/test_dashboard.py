"""The dashboard over plain HTTP: every route's sign-in rule, sessions, the policy's reach, CSV, escaping, mounting."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import XSS_TENANT, DashboardWorld, call, dashboard_client, free_port, mcp_session, server_env, sign_in
from markupsafe import escape

from bigrag_mcp.dashboard.app import COOKIE, Dashboard
from bigrag_mcp.dashboard.sessions import SessionStore
from bigrag_mcp.policy import load_policy
from bigrag_mcp.server import build_server
from bigrag_mcp.services.keys import create_key, revoke_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.anyio

PAGES = ["/dashboard/", "/dashboard/collection?collection=shared", "/dashboard/tenant?collection=shared&tenant=acme",
         "/dashboard/keys", "/dashboard/audit", "/dashboard/outbox", "/dashboard/?csv=tenants"]


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_without_a_session_redirects_to_sign_in(dashboard_world: DashboardWorld, path: str) -> None:
    async with dashboard_client(dashboard_world.dashboard.app()) as client:
        response = await client.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/dashboard/login"
        client.cookies.set(COOKIE, "forged-session-id", path="/dashboard")
        response = await client.get(path)
        assert response.status_code == 303 and response.headers["location"].startswith("/dashboard/login")


async def test_a_wrong_key_is_refused_and_never_logged(dashboard_world: DashboardWorld, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "brg_" + "x" * 43
    caplog.set_level(logging.DEBUG)
    async with dashboard_client(dashboard_world.dashboard.app()) as client:
        response = await sign_in(client, wrong)
        assert response.status_code == 401
        assert "unknown, revoked or expired" in response.text
        assert COOKIE not in response.cookies
        assert (await client.get("/dashboard/")).status_code == 303
        ok = await sign_in(client, dashboard_world.admin_key)
        assert ok.status_code == 303
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert wrong not in logged and dashboard_world.admin_key not in logged
    assert "dashboard sign-in refused" in caplog.text


async def test_sign_in_needs_the_forms_csrf_token(dashboard_world: DashboardWorld) -> None:
    async with dashboard_client(dashboard_world.dashboard.app()) as client:
        response = await client.post("/dashboard/login", data={"api_key": dashboard_world.admin_key, "csrf": "guess"})
        assert response.status_code == 400 and COOKIE not in response.cookies


async def test_session_cookie_is_httponly_strict_and_secure_on_https(dashboard_world: DashboardWorld) -> None:
    for base, secure in (("http://testserver", False), ("https://testserver", True)):
        async with dashboard_client(dashboard_world.dashboard.app(), base) as client:
            response = await sign_in(client, dashboard_world.admin_key)
            cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith(COOKIE + "="))
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
            assert ("Secure" in cookie) is secure


async def test_overview_totals_are_usage_get_for_the_same_key_and_window(dashboard_world: DashboardWorld) -> None:
    w = dashboard_world
    for key in (w.admin_key, w.tenant_key):
        async with mcp_session(w.rt, key) as mcp:
            report = await call(mcp, "usage_get", window_days=7)
        async with dashboard_client(w.dashboard.app()) as client:
            await sign_in(client, key)
            page = (await client.get("/dashboard/?days=7")).text
        assert f'<div class="label">Queries</div><div class="value">{report["queries_total"]:,}</div>' in page
        assert f'<div class="value">{report["embedding_tokens_total"]:,}</div>' in page
        assert f"${report['embedding_cost_usd_estimate']:,.6f}" in page
        assert f'<div class="value">{report["chat_calls_total"]:,}</div>' in page
    # the tenant key's view is its tenant: 3 queries a day for 7 days
    assert report["queries_total"] == 21 and "globex" not in page


async def test_a_tenant_key_cannot_reach_another_tenant_or_admin_pages(dashboard_world: DashboardWorld) -> None:
    w = dashboard_world
    async with dashboard_client(w.dashboard.app()) as client:
        await sign_in(client, w.tenant_key)
        own = await client.get("/dashboard/tenant?collection=shared&tenant=acme")
        assert own.status_code == 200 and "Tenant acme in shared" in own.text
        for path in ("/dashboard/tenant?collection=shared&tenant=globex", "/dashboard/collection?collection=docs",
                     "/dashboard/keys", "/dashboard/audit", "/dashboard/outbox",
                     "/dashboard/tenant?collection=shared&tenant=globex&csv=collections"):
            refused = await client.get(path)
            assert refused.status_code == 403, path
            assert "permission_denied" in refused.text and "globex</td>" not in refused.text
    async with mcp_session(w.rt, w.admin_key) as mcp:
        audit = await call(mcp, "audit_list", action="usage_get.denied")
    assert any(r["actor_key_id"] == w.tenant_key_id for r in audit["rows"])


async def test_untrusted_names_render_as_text(dashboard_world: DashboardWorld) -> None:
    async with dashboard_client(dashboard_world.dashboard.app()) as client:
        await sign_in(client, dashboard_world.admin_key)
        page = (await client.get("/dashboard/")).text
        assert XSS_TENANT not in page and str(escape(XSS_TENANT)) in page
        assert "script-src" not in page  # no script anywhere; the CSP forbids any
        response = await client.get("/dashboard/")
        assert "default-src 'none'" in response.headers["content-security-policy"]


async def test_csv_is_the_tables_rows_with_formulas_defused(dashboard_world: DashboardWorld) -> None:
    async with dashboard_client(dashboard_world.dashboard.app()) as client:
        await sign_in(client, dashboard_world.admin_key)
        response = await client.get("/dashboard/?days=30&csv=tenants")
        assert response.headers["content-type"].startswith("text/csv")
        lines = response.text.splitlines()
        assert lines[0].startswith("Collection,Tenant,Queries") and len(lines) == 4
        assert lines[1].startswith("shared,globex,50,")
        assert (await client.get("/dashboard/?csv=nope")).status_code == 404
        keys = await client.get("/dashboard/keys?csv=keys")
        assert dashboard_world.admin_key not in keys.text and "acme app" in keys.text


async def test_a_revoked_key_is_thrown_out_on_its_next_request(dashboard_world: DashboardWorld) -> None:
    w = dashboard_world
    async with dashboard_client(w.dashboard.app()) as client:
        await sign_in(client, w.tenant_key)
        assert (await client.get("/dashboard/")).status_code == 200
        await revoke_key(w.rt.db, w.tenant_key_id)
        response = await client.get("/dashboard/")
        assert response.status_code == 303 and response.headers["location"] == "/dashboard/login?notice=ended"
        assert (await sign_in(client, w.tenant_key)).status_code == 401


async def test_idle_sessions_expire_and_sign_out_ends_the_session(dashboard_world: DashboardWorld) -> None:
    w = dashboard_world
    async with dashboard_client(w.dashboard.app()) as client:
        await sign_in(client, w.admin_key)
        w.clock[0] += 599
        page = await client.get("/dashboard/keys")
        assert page.status_code == 200
        w.clock[0] += 601
        assert (await client.get("/dashboard/keys")).status_code == 303
        await sign_in(client, w.admin_key)
        page = await client.get("/dashboard/keys")
        csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
        assert (await client.post("/dashboard/logout", data={"csrf": "stale"})).status_code == 400
        assert (await client.get("/dashboard/keys")).status_code == 200
        out = await client.post("/dashboard/logout", data={"csrf": csrf})
        assert out.status_code == 303 and out.headers["location"] == "/dashboard/login?notice=out"
        assert (await client.get("/dashboard/keys")).status_code == 303


async def test_pages_show_keys_audit_outbox_and_reject_bad_windows(dashboard_world: DashboardWorld) -> None:
    async with dashboard_client(dashboard_world.dashboard.app()) as client:
        await sign_in(client, dashboard_world.admin_key)
        audit = await client.get("/dashboard/audit?action=collection.created")
        assert "audit verify" in audit.text and "passes" in audit.text and "collection.created" in audit.text
        outbox = await client.get("/dashboard/outbox")
        assert outbox.status_code == 200 and "Parked" in outbox.text
        overview = await client.get("/dashboard/?days=90")
        link = '/dashboard/collection?collection=shared'  # the overview links each collection to its page
        assert f'href="{link}' in overview.text
        collection = await client.get(f"{link}&days=90")
        assert "Documents now" in collection.text and "globex" in collection.text
        assert (await client.get("/dashboard/?days=31")).status_code == 400
        assert (await client.get("/dashboard/collection?collection=missing")).status_code in (403, 404)


async def test_mounted_on_the_http_transport(dashboard_world: DashboardWorld) -> None:
    w = dashboard_world
    server = build_server(w.rt, load_policy(w.rt.settings.policy_file), http_url="http://testserver/mcp")
    w.dashboard.install(server)
    async with dashboard_client(server.streamable_http_app()) as client:
        assert (await client.get("/dashboard/")).status_code == 303
        assert (await sign_in(client, w.admin_key)).status_code == 303
        assert "Usage: all collections" in (await client.get("/dashboard/")).text


def test_serve_and_the_dashboard_command_serve_the_dashboard(settings: Settings, http_server: Any) -> None:
    settings.data_dir.mkdir(parents=True)
    base = http_server("streamable-http")
    with httpx.Client(base_url=base) as client:
        assert client.get("/dashboard/").headers["location"] == "/dashboard/login"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bigrag_mcp", "dashboard", "--port", str(port)],
                            env=server_env(settings), stderr=subprocess.PIPE)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    response = client.get("/dashboard/login")
                    break
                except httpx.ConnectError:
                    assert proc.poll() is None and time.monotonic() < deadline, "dashboard did not start"
                    time.sleep(0.05)  # polling for the port to open, not timing anything
            assert response.status_code == 200 and 'name="api_key"' in response.text
            assert client.get("/").headers["location"] == "/dashboard/"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def test_the_limits_panel_shows_each_limit_within_reach_as_usage_get_does(settings: Settings, tmp_path: Path) -> None:
    policy = tmp_path / "limited.toml"
    policy.write_text(
        (REPO / "bigrag_mcp" / "policy" / "default.toml").read_text(encoding="utf-8")
        + '\n[[limits]]\nname = "tenant queries"\napplies_to = { collection = "*", tenant = "*" }\n'
        'metric = "queries"\nmax = 5\nper = "day"\n',
        encoding="utf-8",
    )
    rt = await Runtime.open(settings.model_copy(update={"policy_file": policy}))
    try:
        _, admin_key = await create_key(rt.db, name="admin", scopes=["*:*"])
        async with mcp_session(rt, admin_key) as mcp:
            await call(mcp, "collections_create", collection="shared", tenant_field="tenant_id")
            await call(mcp, "documents_upload", collection="shared", text="Refunds take five days.", metadata={"tenant_id": "acme"})
        _, tenant_key = await create_key(rt.db, name="acme", scopes=["query:read", "usage:read"], collection="shared", tenant="acme")
        async with mcp_session(rt, tenant_key) as mcp:
            for _ in range(2):
                await call(mcp, "query", collection="shared", query="refunds")
            limits = (await call(mcp, "usage_get", window_days=7))["limits"]
        assert [(x["name"], x["used"], x["max"], x["remaining"]) for x in limits] == [("tenant queries", 2, 5, 3)]
        dashboard = Dashboard(rt, load_policy(policy), SessionStore())
        async with dashboard_client(dashboard.app()) as client:
            await sign_in(client, tenant_key)
            page = (await client.get("/dashboard/?days=7")).text
        panel = page.split('id="table-limits"', 1)[1].split("</table>", 1)[0]
        cells = [c.split("<", 1)[0] for c in panel.split("<td>")[1:]]
        assert cells[:8] == ["tenant queries", "queries", "hard", "shared", "acme", "2", "5", "3"]
        assert cells[9] == limits[0]["resets_at"].replace("Z", "+00:00")
    finally:
        await rt.close()
