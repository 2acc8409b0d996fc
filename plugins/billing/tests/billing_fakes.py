"""Loopback fakes of Stripe, OpenMeter and Lago that keep deduplicated books like the real services.

Each fake can be scripted to answer the next requests with "429" (Retry-After: 7), "500", or "timeout"
(the event IS recorded, then the answer is held until the client has given up), and can go down
(connection refused) and come back on the same port.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

Answer = tuple[int, dict[str, str], bytes]
API_KEY = "sk_test_fake_key_123"


def json_answer(status: int, body: Any, content_type: str = "application/json") -> Answer:
    return status, {"Content-Type": content_type}, json.dumps(body).encode()


class LoopbackService:
    """A threaded HTTP server on 127.0.0.1; subclasses implement `handle` and fill `books`."""

    path = "/"

    def __init__(self) -> None:
        self.script: list[str] = []
        self.requests = 0
        self.books: dict[str, dict[str, Any]] = {}  # idempotency key -> what was booked, once
        self.duplicates = 0
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.port = 0
        self.server: ThreadingHTTPServer | None = None
        self.up()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, headers, payload = service.dispatch(self.path, dict(self.headers.items()), body)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def down(self) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()
        self.server = None

    def stop(self) -> None:
        self.released.set()
        if self.server is not None:
            self.down()

    def dispatch(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        with self.lock:
            self.requests += 1
            step = self.script.pop(0) if self.script else None
            if step == "429":
                status, headers_out, payload = json_answer(429, {"error": {"message": "Too many requests"}})
                return status, {**headers_out, "Retry-After": "7"}, payload
            if step == "500":
                return json_answer(500, {"error": {"message": "Internal error"}})
            if path != self.path:
                return json_answer(404, {"error": {"message": f"no route {path}"}})
            if headers.get("Authorization") != f"Bearer {API_KEY}" and self.needs_key:
                return json_answer(401, {"error": {"message": "Invalid API Key provided"}})
            answer = self.handle(headers, body)
        if step == "timeout":
            self.released.wait()
        return answer

    needs_key = True

    def book(self, key: str, record: dict[str, Any]) -> bool:
        """Record once per idempotency key; False when the key was already booked."""
        if key in self.books:
            self.duplicates += 1
            return False
        self.books[key] = record
        return True

    def handle(self, headers: dict[str, str], body: bytes) -> Answer:
        raise NotImplementedError


class FakeStripe(LoopbackService):
    path = "/v1/billing/meter_events"

    def handle(self, headers: dict[str, str], body: bytes) -> Answer:
        if headers.get("Content-Type") != "application/x-www-form-urlencoded":
            return json_answer(400, {"error": {"type": "invalid_request_error", "message": "Invalid request body"}})
        form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
        for required in ("event_name", "payload[stripe_customer_id]", "payload[value]"):
            if required not in form:
                return json_answer(
                    400,
                    {
                        "error": {
                            "type": "invalid_request_error",
                            "code": "parameter_missing",
                            "param": required,
                            "message": f"Missing required param: {required}.",
                        }
                    },
                )
        stamp = datetime.fromtimestamp(int(form.get("timestamp", datetime.now(UTC).timestamp())), UTC)
        if datetime.now(UTC) - stamp > timedelta(days=35):
            return json_answer(
                400,
                {"error": {"type": "invalid_request_error", "message": "Timestamp must be within the past 35 days."}},
            )
        identifier = form.get("identifier", f"gen_{self.requests}")
        if not self.book(identifier, form):
            return json_answer(
                400,
                {
                    "error": {
                        "type": "invalid_request_error",
                        "message": f"An event already exists with identifier {identifier}.",
                    }
                },
            )
        return json_answer(
            200, {"object": "billing.meter_event", "identifier": identifier, "event_name": form["event_name"]}
        )


class FakeOpenMeter(LoopbackService):
    path = "/api/v1/events"

    def handle(self, headers: dict[str, str], body: bytes) -> Answer:
        problem = "application/problem+json"
        if headers.get("Content-Type") != "application/cloudevents+json":
            return json_answer(400, {"title": "Bad Request", "detail": "unsupported content type"}, problem)
        event = json.loads(body)
        missing = [k for k in ("specversion", "id", "source", "type", "subject", "time") if not event.get(k)]
        if missing or event["specversion"] != "1.0":
            return json_answer(400, {"title": "Bad Request", "detail": f"invalid cloudevent: {missing}"}, problem)
        datetime.fromisoformat(event["time"])  # RFC 3339
        self.book(f"{event['source']}\x00{event['id']}", event)  # duplicates are accepted and dropped
        return 204, {}, b""


class FakeLago(LoopbackService):
    path = "/api/v1/events"

    def handle(self, headers: dict[str, str], body: bytes) -> Answer:
        event = json.loads(body).get("event", {})
        mandatory = [k for k in ("transaction_id", "external_subscription_id", "code") if not event.get(k)]
        if mandatory:
            return self.invalid({k: ["value_is_mandatory"] for k in mandatory})
        if not self.book(event["transaction_id"], event):
            return self.invalid({"transaction_id": ["value_already_exist"]})
        return json_answer(200, {"event": {"lago_id": f"lago_{len(self.books)}", **event}})

    @staticmethod
    def invalid(details: dict[str, list[str]]) -> Answer:
        return json_answer(
            422, {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors", "error_details": details}
        )
