"""A local stand-in for the OpenAI API on 127.0.0.1: documented reply shapes and errors, scripted failures."""

from __future__ import annotations

import hashlib
import json
import math
import struct
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

MODELS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
COMPATIBLE_MODELS = {"nomic-embed-text": 12}  # what a local compatible server (e.g. Ollama) might serve
MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000


def count_tokens(text: str) -> int:
    """The fake's own tokenizer: a token per word and per non-ASCII character (not the client's estimate)."""
    return len(text.split()) + sum(1 for ch in text if ord(ch) > 127)


def vector_for(text: str, dimension: int) -> list[float]:
    """A deterministic unit vector for `text`."""
    raw: list[float] = []
    counter = 0
    while len(raw) < dimension:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        raw.extend(x / 2**31 for x in struct.unpack("<8i", digest))
        counter += 1
    raw = raw[:dimension]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


def error(
    status: int, message: str, kind: str = "invalid_request_error", code: str | None = None, **headers: str
) -> Reply:
    """An error in OpenAI's documented shape."""
    return Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, headers)


RATE_LIMITED = error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded", **{"retry-after": "7"})
SERVER_ERROR = error(500, "The server had an error while processing your request.", "server_error")
HANG = Reply(0, None, hang=True)


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: Any


Script = Callable[[Request], Reply | None]


class FakeOpenAI:
    """Answers /v1/embeddings and /v1/chat/completions; `script` replies come first, one per request."""

    def __init__(self, api_key: str | None = "sk-fake-0123456789abcdef") -> None:
        self.api_key = api_key
        self.requests: list[Request] = []
        self.script: deque[Reply | Script] = deque()
        self.release = threading.Event()
        self.shuffle = True  # answer embeddings in reverse order, as `index` allows
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def embedding_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/v1/embeddings"]

    def answer(self, request: Request) -> Reply:
        if self.script:
            scripted = self.script.popleft()
            reply = scripted(request) if callable(scripted) else scripted
            if reply is not None:
                return reply
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            presented = request.headers.get("authorization", "").removeprefix("Bearer ")
            return error(401, f"Incorrect API key provided: {presented}.", code="invalid_api_key")
        if request.path == "/v1/embeddings":
            return self.embeddings(request.body)
        if request.path == "/v1/chat/completions":
            return self.chat(request.body)
        return error(404, f"Unknown request URL: POST {request.path}.")

    def embeddings(self, body: dict[str, Any]) -> Reply:
        model = str(body.get("model"))
        inputs = body.get("input")
        inputs = [inputs] if isinstance(inputs, str) else inputs
        native = MODELS.get(model) or COMPATIBLE_MODELS.get(model)
        if native is None:
            return error(404, f"The model `{model}` does not exist or you do not have access to it.")
        if not isinstance(inputs, list) or not inputs or not all(isinstance(t, str) and t for t in inputs):
            return error(400, "'$.input' is invalid. Please check the API reference.")
        if len(inputs) > MAX_INPUTS:
            return error(400, f"'$.input' is too long. Expected an array with maximum length {MAX_INPUTS}.")
        tokens = [count_tokens(t) for t in inputs]
        if max(tokens) > MAX_INPUT_TOKENS:
            return error(400, f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens, "
                              f"however you requested {max(tokens)} tokens.")
        if sum(tokens) > MAX_REQUEST_TOKENS:
            return error(400, f"Requested {sum(tokens)} tokens, max {MAX_REQUEST_TOKENS} tokens per request")
        dimension = body.get("dimensions", native)
        if "dimensions" in body and (model not in MODELS or model == "text-embedding-ada-002"):
            return error(400, "This model does not support specifying dimensions.")
        data = [
            {"object": "embedding", "index": i, "embedding": vector_for(text, dimension)}
            for i, text in enumerate(inputs)
        ]
        if self.shuffle:
            data.reverse()
        usage = {"prompt_tokens": sum(tokens), "total_tokens": sum(tokens)}
        return Reply(200, {"object": "list", "data": data, "model": model, "usage": usage})

    def chat(self, body: dict[str, Any]) -> Reply:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return error(400, "'messages' must contain at least one message.")
        question = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        answer = f"You asked: {question}"
        prompt_tokens = sum(count_tokens(m.get("content", "")) + 4 for m in messages)
        return Reply(200, {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1700000000,
            "model": f"{body.get('model')}-2024-07-18",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": count_tokens(answer),
                      "total_tokens": prompt_tokens + count_tokens(answer)},
        })

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw or b"null"))
                fake.requests.append(request)
                reply = fake.answer(request)
                if reply.hang:
                    fake.release.wait(30)
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
