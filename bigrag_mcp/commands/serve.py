"""`bigrag-mcp serve`: run the MCP server on stdio, SSE or streamable HTTP, in one process or several workers."""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import anyio
from mcp.server.mcpserver import MCPServer

from bigrag_mcp import logs, workers
from bigrag_mcp.cli import settings_for
from bigrag_mcp.policy import Policy, PolicyError, load_policy
from bigrag_mcp.server import build_server
from bigrag_mcp.services.background import STOP_GRACE_SECONDS, background_work
from bigrag_mcp.services.documents import MAX_REQUEST_BODY_BYTES
from bigrag_mcp.services.keys import authenticate, refusal_reason
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings
from bigrag_mcp.stdio_pipes import run_stdio


@dataclass(frozen=True)
class Worker:
    """One of `count` worker processes of `serve --workers`, answering on a listening socket it was handed."""

    index: int
    count: int
    sock: socket.socket


def refuse(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def checked(settings: Settings, transport: str) -> Policy | str:
    """The policy to serve with, or why the server cannot start (a bad policy, a missing data folder or key)."""
    try:
        policy = load_policy(settings.policy_file)
    except PolicyError as exc:
        return f"the policy cannot be used: {exc}"
    folder = settings.data_dir.resolve()
    if settings.database_url is None and not folder.is_dir():
        return (
            f"the data folder {folder} does not exist; point BIGRAG_DATA_DIR (or --data-dir) at yours, "
            "or create one with `bigrag-mcp keys create --admin`"
        )
    if transport == "stdio" and not (settings.api_key.get_secret_value() if settings.api_key else ""):
        return f"a stdio server needs an API key in BIGRAG_API_KEY (data folder {folder}; mint one with `bigrag-mcp keys create`)"
    return policy


async def serve(settings: Settings, transport: str, host: str, port: int, worker: Worker | None = None) -> int:
    policy = checked(settings, transport)
    if isinstance(policy, str):
        return refuse(policy)
    folder = settings.data_dir.resolve()
    key = settings.api_key.get_secret_value() if settings.api_key else None
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
            index = worker.index if worker is not None else None
            server = build_server(rt, policy, http_url=base + ("/sse" if transport == "sse" else "/mcp"), worker=index)
            if worker is None or worker.count == 1:  # dashboard sign-ins live in one process's memory
                from bigrag_mcp.dashboard import Dashboard  # HTTP only: a stdio server never loads it

                Dashboard(rt, policy).install(server)
        stop = anyio.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(background_work, rt, stop)
            if transport == "stdio":
                await run_stdio(server)
            elif transport == "sse":
                await server.run_sse_async(host=host, port=port, max_request_body_size=MAX_REQUEST_BODY_BYTES)
            elif worker is not None:
                await _serve_worker(server, host, worker)
            else:
                await server.run_streamable_http_async(host=host, port=port, max_request_body_size=MAX_REQUEST_BODY_BYTES)
            stop.set()  # the relay ends after its current pass; cancelled only if that outlasts the grace period
            tasks.cancel_scope.deadline = anyio.current_time() + STOP_GRACE_SECONDS
    finally:
        await rt.close()
    return 0


async def _serve_worker(server: MCPServer, host: str, worker: Worker) -> None:
    """Streamable HTTP on the socket the supervisor bound, stateless: any worker can answer any request."""
    import uvicorn

    app = server.streamable_http_app(stateless_http=True, max_request_body_size=MAX_REQUEST_BODY_BYTES, host=host)
    config = uvicorn.Config(app, log_level=server.settings.log_level.lower(), timeout_graceful_shutdown=int(STOP_GRACE_SECONDS))
    # uvicorn stops gracefully on SIGTERM/SIGINT and then raises the signal again for the handler it found: make
    # that a no-op, so the worker goes on to stop its relay and close its store, and exits 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    await uvicorn.Server(config).serve(sockets=[worker.sock])


def run_worker(data_dir: Path | None, transport: str, host: str, worker: Worker) -> None:
    """A worker process's entry point (spawned by `serve --workers`)."""
    settings = Settings(data_dir=data_dir) if data_dir is not None else Settings()
    logs.configure(settings.log_level, settings.log_format)
    workers.exit_with_supervisor()
    sys.exit(anyio.run(serve, settings, transport, host, worker.sock.getsockname()[1], worker))


async def _open_store(settings: Settings) -> None:
    """Migrate the store once, before any worker opens it."""
    await (await Runtime.open(settings)).close()


def serve_workers(args: argparse.Namespace) -> int:
    """`serve` in one process, or with `--workers N` in N processes answering one port."""
    settings = settings_for(args)
    if args.workers < 1:
        return refuse("--workers must be at least 1")
    if args.workers == 1:
        return int(anyio.run(serve, settings, args.transport, args.host, args.port))
    if args.transport != "streamable-http":
        return refuse(f"--workers needs --transport streamable-http: {args.transport} sessions live in one process")
    problem = checked(settings, args.transport)
    if isinstance(problem, str):
        return refuse(problem)
    anyio.run(_open_store, settings)
    try:
        sockets = workers.listening_sockets(args.host, args.port, args.workers)
    except OSError as exc:
        return refuse(f"cannot listen on {args.host}:{args.port}: {exc.strerror}")
    data_dir = getattr(args, "global_data_dir", None)
    return workers.supervise(
        run_worker, lambda n, sock: (data_dir, args.transport, args.host, Worker(n, args.workers, sock)), sockets
    )


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("serve", help="run the MCP server")
    parser.add_argument("--transport", choices=("stdio", "sse", "streamable-http"), default="stdio", help="how clients connect")
    parser.add_argument("--host", default="127.0.0.1", help="address the HTTP transports listen on")
    parser.add_argument("--port", type=int, default=8000, help="port the HTTP transports listen on")
    parser.add_argument(
        "--workers", type=int, default=1, metavar="N",
        help="worker processes answering the port (streamable-http; more than 1 serves it stateless, see the README)",
    )
    parser.set_defaults(handler=serve_workers)
