"""Server time of the dashboard overview with 1,000 tenants and 90 days of usage, against the usage_get it wraps.

Usage: python benchmarks/dashboard.py [--tenants 1000] [--days 90] [--repeat 7]
Prints JSON: median milliseconds of GET /dashboard/?days=90 (an admin key, over the ASGI transport, so the
figure is the server's work without a network), of the usage report alone, of the dashboard's own part (building
the page from a ready report and rendering it), the ratio to usage_get, and the 300 ms budget.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from bigrag_mcp.dashboard import Dashboard
from bigrag_mcp.policy import load_policy
from bigrag_mcp.services import admin
from bigrag_mcp.services.keys import create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings
from bigrag_mcp.store.models import UsageEvent

BUDGET_MS = 300.0


async def seed(rt: Runtime, tenants: int, days: int) -> int:
    """One query a day per tenant of a shared collection, and an upload every tenth day (priced model)."""
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for t in range(tenants):
        for d in range(days):
            when = now - timedelta(days=d, minutes=t % 60)
            base = {"collection": "shared", "tenant": f"tenant-{t:04d}", "provider": "openai",
                    "model": "text-embedding-3-small", "created_at": when, "latency_ms": 3.0}
            rows.append({**base, "operation": "query", "embedding_tokens": 9})
            if d % 10 == 0:
                rows.append({**base, "operation": "upload", "documents": 1, "chunks": 4, "storage_bytes": 2048,
                             "embedding_tokens": 400})
    async with rt.db.session() as session:
        await session.execute(insert(UsageEvent), rows)
    return len(rows)


async def timed(work: Any, repeat: int) -> float:
    await work()  # warm caches
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        await work()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


async def main(tenants: int, days: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), embedding_provider="hash", vector_backend="memory", load_plugins="",
                            _env_file=None)  # type: ignore[call-arg]
        rt = await Runtime.open(settings)
        try:
            events = await seed(rt, tenants, days)
            _, key = await create_key(rt.db, name="bench", scopes=["*:*"])
            dashboard = Dashboard(rt, load_policy(settings.policy_file))
            app = dashboard.app()
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
                form = await client.get("/dashboard/login")
                csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
                assert csrf is not None
                await client.post("/dashboard/login", data={"csrf": csrf.group(1), "api_key": key})

                async def overview() -> None:
                    response = await client.get(f"/dashboard/?days={days}")
                    assert response.status_code == 200 and "Top tenants" in response.text

                async def usage_get() -> None:
                    await admin.usage(rt, window_days=days)

                report = await admin.usage(rt, window_days=days)

                async def render() -> None:
                    page = dashboard._usage_page("Usage: all collections", report)
                    dashboard.templates.get_template("page.html").render(
                        prefix="/dashboard", page=page, principal=None, csrf="x", days=str(days), windows=(7, 30, 90),
                        path="/dashboard/", query={}, url=str)

                page_ms = await timed(overview, repeat)
                usage_ms = await timed(usage_get, repeat)
                render_ms = await timed(render, repeat)
        finally:
            await rt.close()
    return {
        "tenants": tenants, "days": days, "usage_events": events, "repeat": repeat,
        "overview_ms": round(page_ms, 1), "usage_get_ms": round(usage_ms, 1),
        "dashboard_own_ms": round(render_ms, 1),
        "ratio_overview_to_usage_get": round(page_ms / usage_ms, 2),
        "budget_ms": BUDGET_MS, "within_budget": page_ms <= BUDGET_MS,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=7)
    a = parser.parse_args()
    print(json.dumps(asyncio.run(main(a.tenants, a.days, a.repeat)), indent=2))
