"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright against a loopback server."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import uvicorn
from conftest import XSS_TENANT, DashboardWorld, call, free_port, mcp_session
from playwright.async_api import Page, async_playwright

from bigrag_mcp.services.keys import revoke_key

CHROMIUM = os.environ.get("BIGRAG_CHROMIUM", "/usr/bin/chromium")
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]


@pytest.fixture
async def browser_page(dashboard_world: DashboardWorld, tmp_path: Path) -> AsyncIterator[tuple[Page, str, Path]]:
    """The dashboard served by uvicorn on a loopback port, and a fresh Chromium page; screenshots go to tmp_path."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(dashboard_world.dashboard.app(), host="127.0.0.1", port=port, log_level="warning"))
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(server.serve)
        while not server.started:
            await anyio.sleep(0.01)  # waiting for the socket to open, not timing anything
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1200, "height": 900})
            page.set_default_timeout(10_000)
            shots = Path(os.environ.get("BIGRAG_SCREENSHOTS", tmp_path / "screenshots"))
            shots.mkdir(parents=True, exist_ok=True)
            yield page, f"http://127.0.0.1:{port}/dashboard", shots
            await browser.close()
        server.should_exit = True


async def sign_in(page: Page, base: str, key: str) -> None:
    await page.goto(base + "/")
    assert page.url == base + "/login"
    await page.fill("#api_key", key)
    await page.click("#sign-in")
    await page.wait_for_url(base + "/")


async def stat(page: Page, label: str) -> str:
    return (await page.inner_text(f'[data-stat="{label}"] .value')).strip()


async def test_admin_signs_in_sees_usage_get_totals_and_every_page(
    dashboard_world: DashboardWorld, browser_page: tuple[Page, str, Path]
) -> None:
    page, base, shots = browser_page
    async with mcp_session(dashboard_world.rt, dashboard_world.admin_key) as mcp:
        report = await call(mcp, "usage_get", window_days=30)
    await sign_in(page, base, dashboard_world.admin_key)
    assert await stat(page, "Queries") == f"{report['queries_total']:,}"
    assert await stat(page, "Embedding tokens") == f"{report['embedding_tokens_total']:,}"
    assert await stat(page, "Estimated embedding cost") == f"${report['embedding_cost_usd_estimate']:,.6f}"
    assert await page.locator("svg.chart").count() == 3
    await page.screenshot(path=shots / "overview.png", full_page=True)
    # the tenant named like markup is shown as its text, and no script ran
    dialogs: list[str] = []
    page.on("dialog", lambda d: dialogs.append(d.message))
    assert XSS_TENANT in await page.inner_text("#table-tenants")
    await page.click(f"#table-tenants a:text-is('{XSS_TENANT}')")
    assert XSS_TENANT in await page.inner_text("#title")
    assert await page.locator("#table-collections img").count() == 0 and dialogs == []
    await page.screenshot(path=shots / "tenant-xss.png", full_page=True)
    await page.select_option("select[name=days]", "7")
    await page.click("#window button")
    assert "days=7" in page.url and "7 days" in await stat(page, "Window")
    for name in ("keys", "audit", "outbox"):
        await page.goto(f"{base}/{name}")
        assert await page.locator("#error").count() == 0
        await page.screenshot(path=shots / f"{name}.png", full_page=True)
        if name == "audit":
            assert "passes" in await stat(page, "audit verify")
    await page.click("#sign-out")
    await page.wait_for_url(base + "/login?notice=out")
    await page.goto(base + "/keys")
    assert page.url == base + "/login"


async def test_tenant_key_sees_its_tenant_only_and_is_thrown_out_when_revoked(
    dashboard_world: DashboardWorld, browser_page: tuple[Page, str, Path]
) -> None:
    page, base, shots = browser_page
    w = dashboard_world
    async with mcp_session(w.rt, w.tenant_key) as mcp:
        report = await call(mcp, "usage_get", window_days=30)
    await sign_in(page, base, w.tenant_key)
    assert await stat(page, "Queries") == f"{report['queries_total']:,}" == "30"
    assert "globex" not in await page.content()
    await page.screenshot(path=shots / "tenant-overview.png", full_page=True)
    response = await page.goto(base + "/tenant?collection=shared&tenant=globex")
    assert response is not None and response.status == 403
    assert "permission_denied" in await page.inner_text("#error") and "globex</td>" not in await page.content()
    await page.screenshot(path=shots / "tenant-refused.png", full_page=True)
    await revoke_key(w.rt.db, w.tenant_key_id)
    await page.goto(base + "/")
    assert page.url == base + "/login?notice=ended"
    assert "revoked" in await page.inner_text(".notice")
