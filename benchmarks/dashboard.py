"""Server time of the dashboard overview with 1,000 tenants and 90 days of usage, against the usage_get it wraps.

Usage: python benchmarks/dashboard.py [--tenants 1000] [--days 90] [--repeat 7]
Prints JSON: median milliseconds of GET /dashboard/?days=90 (an admin key, over the ASGI transport, so the
figure is the server's work without a network), of the usage report alone (read from the usage rollup), of the
dashboard's own part (building the page from a ready report and rendering it), of the same sums read straight from
`usage_events` as the report did before the rollup (its two GROUP BY statements), the 300 ms budget and the ratios;
and the median time of a transaction that meters one event, with the rollup's trigger and with it dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert, text

from bigrag_mcp.dashboard import Dashboard
from bigrag_mcp.policy import load_policy
from bigrag_mcp.services import admin
from bigrag_mcp.services.keys import create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.services.usage import record_usage
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


# What usage_report ran before the rollup: every window's events summed by group and by day.
SCAN = """SELECT {keys}, SUM(CASE WHEN operation = 'query' THEN 1 ELSE 0 END), SUM(CASE WHEN operation = 'chat' THEN 1
ELSE 0 END), SUM(documents), SUM(chunks), SUM(storage_bytes), SUM(embedding_tokens), SUM(chat_input_tokens),
SUM(chat_output_tokens), SUM(CASE WHEN tokens_estimated THEN embedding_tokens ELSE 0 END),
SUM(CASE WHEN operation IN ('query', 'chat') THEN latency_ms ELSE 0.0 END)
FROM usage_events WHERE created_at >= :start AND created_at <= :now GROUP BY {keys}"""


async def scan_events(rt: Runtime, days: int) -> None:
    now = datetime.now(UTC)
    start = datetime.combine(now.date() - timedelta(days=days - 1), datetime.min.time(), UTC)
    async with rt.db.session() as session:
        for keys in ("collection, tenant, provider, model", "strftime('%Y-%m-%d', created_at), provider, model"):
            (await session.execute(text(SCAN.format(keys=keys)), {"start": start, "now": now})).all()


async def meter_one(rt: Runtime) -> None:
    async with rt.db.session() as session:
        record_usage(session, operation="query", collection="shared", tenant="tenant-0001", embedding_tokens=9,
                     provider="openai", model="text-embedding-3-small", latency_ms=3.0)


async def timed(work: Any, repeat: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds (CPU of every thread, so the store's too: the part that load does not stretch)."""
    await work()  # warm caches
    walls, cpus = [], []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        await work()
        walls.append((time.perf_counter() - start) * 1000)
        cpus.append((time.process_time() - cpu) * 1000)
    return statistics.median(walls), statistics.median(cpus)


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

                page_ms, page_cpu_ms = await timed(overview, repeat)
                usage_ms, usage_cpu_ms = await timed(usage_get, repeat)
                render_ms, _ = await timed(render, repeat)
                scan_ms, scan_cpu_ms = await timed(lambda: scan_events(rt, days), repeat)
                write_ms, _ = await timed(lambda: meter_one(rt), 20 * repeat)
                async with rt.db.session() as session:
                    await session.execute(text("DROP TRIGGER usage_rollup_add"))
                write_bare_ms, _ = await timed(lambda: meter_one(rt), 20 * repeat)
        finally:
            await rt.close()
    return {
        "tenants": tenants, "days": days, "usage_events": events, "repeat": repeat,
        "load_average_1m": round(os.getloadavg()[0], 1),
        "overview_ms": round(page_ms, 1), "overview_cpu_ms": round(page_cpu_ms, 1),
        "usage_get_ms": round(usage_ms, 1), "usage_get_cpu_ms": round(usage_cpu_ms, 1),
        "dashboard_own_ms": round(render_ms, 1), "events_scan_ms": round(scan_ms, 1),
        "events_scan_cpu_ms": round(scan_cpu_ms, 1),
        "ratio_overview_to_usage_get": round(page_ms / usage_ms, 2),
        "ratio_events_scan_to_usage_get": round(scan_ms / usage_ms, 1),
        "budget_ms": BUDGET_MS, "ratio_overview_to_budget": round(page_ms / BUDGET_MS, 2),
        "within_budget": page_ms <= BUDGET_MS,
        "meter_one_event_ms": round(write_ms, 3), "meter_one_event_without_rollup_ms": round(write_bare_ms, 3),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=7)
    a = parser.parse_args()
    print(json.dumps(asyncio.run(main(a.tenants, a.days, a.repeat)), indent=2))
