"""`bigrag-mcp dashboard`: serve the read-only usage dashboard on its own (for deployments that serve MCP on stdio)."""

from __future__ import annotations

import argparse
import sys

import anyio
import uvicorn

from bigrag_mcp.cli import settings_for
from bigrag_mcp.dashboard import Dashboard
from bigrag_mcp.dashboard.sessions import SessionStore
from bigrag_mcp.policy import PolicyError, load_policy
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings


async def dashboard(settings: Settings, host: str, port: int, idle_minutes: float) -> int:
    try:
        policy = load_policy(settings.policy_file)
    except PolicyError as exc:
        print(f"error: the policy cannot be used: {exc}", file=sys.stderr)
        return 2
    rt = await Runtime.open(settings)
    try:
        app = Dashboard(rt, policy, SessionStore(idle_seconds=idle_minutes * 60)).app()
        print(f"dashboard: http://{host}:{port}/dashboard/", file=sys.stderr)
        await uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=settings.log_level.lower())).serve()
    finally:
        await rt.close()
    return 0


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("dashboard", help="serve the read-only usage dashboard at /dashboard")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--idle-minutes", type=float, default=30.0, help="sign a browser out after this idle time")
    parser.set_defaults(handler=lambda a: anyio.run(dashboard, settings_for(a), a.host, a.port, a.idle_minutes))
