"""A local stand-in for the OpenAI API on 127.0.0.1: documented reply shapes and errors, scripted failures."""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any

from bigrag_mcp.testing.fake_http import Reply, Request, ScriptedHTTPServer

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


def error(
    status: int, message: str, kind: str = "invalid_request_error", code: str | None = None, **headers: str
) -> Reply:
    """An error in OpenAI's documented shape."""
    return Reply(status, {"error": {"message": message, "type": kind, "param": None, "code": code}}, headers)


RATE_LIMITED = error(429, "Rate limit reached for requests", "requests", "rate_limit_exceeded", **{"retry-after": "7"})
SERVER_ERROR = error(500, "The server had an error while processing your request.", "server_error")
class FakeOpenAI(ScriptedHTTPServer):
    """Answers /v1/embeddings and /v1/chat/completions (embeddings in reverse order, as `index` allows)."""

    def __init__(self, api_key: str | None = "sk-fake-0123456789abcdef") -> None:
        super().__init__()
        self.api_key = api_key

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def embedding_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/v1/embeddings"]

    def answer(self, request: Request) -> Reply:
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
