"""`bigrag-mcp serve`: run the MCP server on stdio, SSE or streamable HTTP."""

from __future__ import annotations

import argparse
import sys

import anyio

from bigrag_mcp.policy import PolicyError, load_policy
from bigrag_mcp.server import build_server
from bigrag_mcp.services.background import background_work
from bigrag_mcp.services.documents import MAX_REQUEST_BODY_BYTES
from bigrag_mcp.services.keys import authenticate
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings


async def serve(transport: str, host: str, port: int) -> int:
    settings = Settings()
    try:
        policy = load_policy(settings.policy_file)
    except PolicyError as exc:
        print(f"error: the policy cannot be used: {exc}", file=sys.stderr)
        return 2
    rt = await Runtime.open(settings)
    try:
        if transport == "stdio":
            key = settings.api_key.get_secret_value() if settings.api_key else None
            principal = await authenticate(rt.db, key) if key else None
            if principal is None:
                print(
                    "error: a stdio server needs a valid API key in BIGRAG_API_KEY "
                    "(create one with `bigrag-mcp keys create --admin`)",
                    file=sys.stderr,
                )
                return 2
            server = build_server(rt, policy, session_key=key, principal=principal)
        else:
            base = (settings.public_url or f"http://{host}:{port}").rstrip("/")
            server = build_server(rt, policy, http_url=base + ("/sse" if transport == "sse" else "/mcp"))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(background_work, rt)
            if transport == "stdio":
                await server.run_stdio_async()
            elif transport == "sse":
                await server.run_sse_async(host=host, port=port, max_request_body_size=MAX_REQUEST_BODY_BYTES)
            else:
                await server.run_streamable_http_async(host=host, port=port, max_request_body_size=MAX_REQUEST_BODY_BYTES)
            tasks.cancel_scope.cancel()
    finally:
        await rt.close()
    return 0


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("serve", help="run the MCP server")
    parser.add_argument("--transport", choices=("stdio", "sse", "streamable-http"), default="stdio")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.set_defaults(handler=lambda a: anyio.run(serve, a.transport, a.host, a.port))
