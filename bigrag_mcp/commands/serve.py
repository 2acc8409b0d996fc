"""`bigrag-mcp serve`: run the MCP server on stdio, SSE or streamable HTTP."""

from __future__ import annotations

import argparse
import sys

import anyio

from bigrag_mcp.cli import settings_for
from bigrag_mcp.dashboard import Dashboard
from bigrag_mcp.policy import PolicyError, load_policy
from bigrag_mcp.server import build_server
from bigrag_mcp.services.background import STOP_GRACE_SECONDS, background_work
from bigrag_mcp.services.documents import MAX_REQUEST_BODY_BYTES
from bigrag_mcp.services.keys import authenticate, refusal_reason
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings


def refuse(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


async def serve(settings: Settings, transport: str, host: str, port: int) -> int:
    try:
        policy = load_policy(settings.policy_file)
    except PolicyError as exc:
        return refuse(f"the policy cannot be used: {exc}")
    folder = settings.data_dir.resolve()
    if settings.database_url is None and not folder.is_dir():
        return refuse(
            f"the data folder {folder} does not exist; point BIGRAG_DATA_DIR (or --data-dir) at yours, "
            "or create one with `bigrag-mcp keys create --admin`"
        )
    key = settings.api_key.get_secret_value() if settings.api_key else None
    if transport == "stdio" and not key:
        return refuse(f"a stdio server needs an API key in BIGRAG_API_KEY (data folder {folder}; mint one with `bigrag-mcp keys create`)")
    rt = await Runtime.open(settings)
    try:
        if transport == "stdio":
            assert key is not None
            principal = await authenticate(rt.db, key)
            if principal is None:
                return refuse(f"the API key in BIGRAG_API_KEY is {await refusal_reason(rt.db, key)} (data folder {folder})")
            server = build_server(rt, policy, session_key=key, principal=principal)
        else:
            base = (settings.public_url or f"http://{host}:{port}").rstrip("/")
            server = build_server(rt, policy, http_url=base + ("/sse" if transport == "sse" else "/mcp"))
            Dashboard(rt, policy).install(server)
        stop = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(background_work, rt, stop)
            if transport == "stdio":
                await server.run_stdio_async()
            elif transport == "sse":
                await server.run_sse_async(host=host, port=port, max_request_body_size=MAX_REQUEST_BODY_BYTES)
            else:
                await server.run_streamable_http_async(host=host, port=port, max_request_body_size=MAX_REQUEST_BODY_BYTES)
            stop.set()  # the relay ends after its current pass; cancelled only if that outlasts the grace period
            tasks.cancel_scope.deadline = anyio.current_time() + STOP_GRACE_SECONDS
    finally:
        await rt.close()
    return 0


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("serve", help="run the MCP server")
    parser.add_argument("--transport", choices=("stdio", "sse", "streamable-http"), default="stdio", help="how clients connect")
    parser.add_argument("--host", default="127.0.0.1", help="address the HTTP transports listen on")
    parser.add_argument("--port", type=int, default=8000, help="port the HTTP transports listen on")
    parser.set_defaults(handler=lambda a: anyio.run(serve, settings_for(a), a.transport, a.host, a.port))
