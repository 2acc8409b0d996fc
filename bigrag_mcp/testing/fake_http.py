"""Test aids for plugins that call HTTP services: a scripted local JSON server and a sleep that only records.

Subclass `ScriptedHTTPServer`, answer like the real service in `answer`, and queue failures in `script`::

    class FakeService(ScriptedHTTPServer):
        def answer(self, request: Request) -> Reply:
            return Reply(200, {"ok": True})

    with FakeService() as fake:
        fake.script.append(Reply(429, {"message": "slow down"}, {"retry-after": "2"}))
        ...  # point the client at fake.url
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Reply:
    """What the fake sends back; `hang=True` sends nothing until the server stops (a client timeout)."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


HANG = Reply(0, None, hang=True)


@dataclass
class Request:
    """One request as the fake received it: path, lower-cased headers, parsed JSON body."""

    path: str
    headers: dict[str, str]
    body: Any


Script = Reply | Callable[[Request], Reply]


class ScriptedHTTPServer:
    """A JSON server on 127.0.0.1 at a random port, in a thread; each request takes the next `script` entry
    (a `Reply`, or a function of the request returning one) while there is one, else `answer`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.script: deque[Script] = deque()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def bodies(self, path: str) -> list[Any]:
        """The JSON bodies received on `path`, in order."""
        return [r.body for r in self.requests if r.path == path]

    def answer(self, request: Request) -> Reply:
        """The service's normal behaviour; override it."""
        return Reply(404, {"message": f"no route for {request.path}"})

    def reply_to(self, request: Request) -> Reply:
        self.requests.append(request)
        if self.script:
            scripted = self.script.popleft()
            return scripted(request) if callable(scripted) else scripted
        return self.answer(request)


def _handler(fake: ScriptedHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = fake.reply_to(Request(self.path, headers, json.loads(raw) if raw else None))
            if reply.hang:
                fake._release.wait(30)
                return
            payload = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return Handler


class RecordingSleep:
    """An async sleep to inject into `bigrag_mcp.retry.RetryPolicy`: records the delays, waits for none."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
