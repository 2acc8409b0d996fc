"""`bigrag-mcp` with the time each HTTP request spends inside the server written down, for the serving benchmarks.

`python benchmarks/server_timings.py serve --transport streamable-http ...` runs `bigrag-mcp` unchanged but for one
ASGI layer outermost in its app (inside uvicorn, so after the HTTP parser). For each POST it appends one JSON line to
`$BENCH_TIMINGS_DIR/<pid>.jsonl` (one file per process, so `serve --workers N` works too): the `x-bench-session`
header, the JSON-RPC request's id and method (for `tools/call`, the tool's name), when the app received the request
and the seconds until the last piece of its response with content was handed to the socket (an SSE stream's end
follows later, but the client has its answer by then). Times are `time.monotonic()`, one clock for every process
on Linux, so a client can place them on its own timeline. Not counted as server time: the request waiting in the
socket and in uvicorn before the app is called (the server's event loop busy elsewhere).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import IO, Any

from mcp.server.mcpserver import MCPServer

SESSION_HEADER = b"x-bench-session"
_out: list[IO[str]] = []


def describe(body: bytes) -> tuple[Any, str | None]:
    """A JSON-RPC request's id and method (a tool call: its tool's name)."""
    try:
        message = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(message, dict):
        return None, None
    method = message.get("method")
    if method == "tools/call":
        method = (message.get("params") or {}).get("name")
    return message.get("id"), method


def _record(line: dict[str, Any]) -> None:
    if not _out:  # opened in the process that serves (a worker of `serve --workers` is a process of its own)
        _out.append(open(Path(os.environ["BENCH_TIMINGS_DIR"]) / f"{os.getpid()}.jsonl", "a", buffering=1))  # noqa: SIM115
    _out[0].write(json.dumps(line) + "\n")


class Timed:
    """An ASGI app timing each POST request through `app`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        body = bytearray()
        written: list[float] = []  # when the last piece of the response with content went to the socket

        async def receiving() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                body.extend(message.get("body", b""))
            return message

        async def sending(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.body" and message.get("body"):
                written[:] = [time.monotonic()]

        try:
            await self.app(scope, receiving, sending)
        finally:
            elapsed = (written[0] if written else time.monotonic()) - started
            request_id, method = describe(bytes(body))
            session = dict(scope["headers"]).get(SESSION_HEADER, b"").decode()
            _record({"session": session, "id": request_id, "method": method, "start": started, "seconds": elapsed})


def read_timings(folder: Path) -> list[dict[str, Any]]:
    """The lines every server process wrote to `folder`."""
    return [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.read_text().splitlines()]


if __name__ in ("__main__", "__mp_main__"):  # the workers `serve --workers` spawns run this file as __mp_main__
    _original = MCPServer.streamable_http_app
    MCPServer.streamable_http_app = lambda self, **options: Timed(_original(self, **options))  # type: ignore[method-assign,assignment]

if __name__ == "__main__":
    from bigrag_mcp.cli import run

    sys.argv[0] = "bigrag-mcp"
    run()
