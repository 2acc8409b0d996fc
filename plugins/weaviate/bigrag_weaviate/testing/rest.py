"""The fake's REST side: meta, readiness, schema and tenants, with Weaviate's status codes and error bodies."""

from __future__ import annotations

import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bigrag_weaviate.testing.state import FakeError, State

CLASS = r"/v1/schema/(?P<cls>[A-Za-z0-9_]+)"


class _Handler(BaseHTTPRequestHandler):
    server: FakeRestServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    wbufsize = 1 << 16  # one write per response; flushed after each request

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet; the tests read state, not logs."""

    def _reply(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        body = self._body()
        state = self.server.state
        fault = state.take_fault(f"{self.command} {path}")
        if fault is not None:
            self._reply(fault.status, {"error": [{"message": fault.message}]})
            return
        try:
            with state.lock:
                status, out = self._route(state, path, body)
        except FakeError as exc:
            status, out = exc.status, {"error": [{"message": exc.message}]}
        self._reply(status, out)

    def _route(self, state: State, path: str, body: Any) -> tuple[int, Any]:
        method = self.command
        if path == "/v1/meta":
            return 200, {"hostname": "http://[::]:8080", "version": state.version, "modules": {}}
        if path.startswith("/v1/.well-known/"):
            return 200, None
        if path == "/v1/schema":
            if method == "POST":
                return 200, state.create_class(body)
            return 200, {"classes": [c.config for c in state.classes.values()]}
        if m := re.fullmatch(CLASS, path):
            if method == "DELETE":
                state.classes.pop(state.get_class(m["cls"]).config["class"])
                return 200, None
            return 200, state.get_class(m["cls"]).config
        if m := re.fullmatch(CLASS + "/properties", path):
            return 200, state.add_property(m["cls"], body)
        if m := re.fullmatch(CLASS + "/tenants", path):
            return self._tenants(state, m["cls"], body)
        if m := re.fullmatch(CLASS + "/tenants/(?P<name>[^/]+)", path):
            shard = state.get_class(m["cls"]).tenants.get(m["name"])
            if shard is None:
                return 404, None
            return 200, {"name": m["name"], "activityStatus": state.status(shard)}
        return 404, {"error": [{"message": f"no route for {method} {path}"}]}

    def _tenants(self, state: State, cls: str, body: Any) -> tuple[int, Any]:
        if self.command == "GET":
            tenants = state.get_class(cls).tenants
            return 200, [{"name": n, "activityStatus": state.status(t)} for n, t in tenants.items()]
        if self.command == "DELETE":
            state.remove_tenants(cls, list(body or []))
            return 200, None
        items = list(body or [])
        state.put_tenants(cls, items, create=self.command == "POST")
        tenants = state.get_class(cls).tenants  # the answer carries the new status: ONLOADING while onloading
        return 200, [{"name": t["name"], "activityStatus": state.status(tenants[t["name"]])} for t in items]

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _dispatch


class FakeRestServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: State) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
