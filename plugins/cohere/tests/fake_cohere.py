"""A local stand-in for the Cohere v2 API on 127.0.0.1: embed, rerank and chat in their documented shapes."""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any

from bigrag_mcp.testing.fake_http import Reply, Request, ScriptedHTTPServer

DIMENSIONS = {"embed-v4.0": 1536, "embed-english-v3.0": 1024, "embed-multilingual-light-v3.0": 384}
OUTPUT_DIMENSIONS = {256, 512, 1024, 1536}
MAX_TEXTS = 96
MAX_INPUT_TOKENS = 512  # embed v3 models; longer texts are cut when truncate is END


def words(text: str) -> list[str]:
    """The fake's tokenizer: a token per word."""
    return text.split()


def vector_for(text: str, input_type: str, dimension: int) -> list[float]:
    """A deterministic unit vector; documents and queries of the same text differ, as with Cohere."""
    seed = f"{input_type}:{text}"
    raw: list[float] = []
    while len(raw) < dimension:
        digest = hashlib.sha256(f"{len(raw)}:{seed}".encode()).digest()
        raw.extend(x / 2**31 for x in struct.unpack("<8i", digest))
    norm = math.sqrt(sum(x * x for x in raw[:dimension])) or 1.0
    return [x / norm for x in raw[:dimension]]


def relevance(query: str, document: str) -> float:
    """Share of the query's words found in the document, nudged by length so ties are rare."""
    q = {w.lower() for w in words(query)}
    d = {w.lower().strip(".,") for w in words(document)}
    return round(len(q & d) / (len(q) or 1) - len(document) / 1e6, 6)


def error(status: int, message: str, **headers: str) -> Reply:
    """An error in Cohere's documented shape: `{"message": ...}`."""
    return Reply(status, {"message": message}, headers)


RATE_LIMITED = error(429, "You are using a Trial key, which is limited to 40 API calls / minute.", **{"Retry-After": "3"})
SERVER_ERROR = error(500, "internal server error, this has been reported to our developers")


class FakeCohere(ScriptedHTTPServer):
    """Answers /v2/embed, /v2/rerank and /v2/chat with a bearer key check."""

    def __init__(self, api_key: str = "co-fake-secret-0123456789") -> None:
        super().__init__()
        self.api_key = api_key

    def answer(self, request: Request) -> Reply:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return error(401, "invalid api token")
        routes = {"/v2/embed": self.embed, "/v2/rerank": self.rerank, "/v2/chat": self.chat}
        route = routes.get(request.path)
        return route(request.body) if route else error(404, f"path {request.path} not found")

    def embed(self, body: dict[str, Any]) -> Reply:
        model, texts, input_type = body.get("model"), body.get("texts"), body.get("input_type")
        if model not in DIMENSIONS:
            return error(404, f"model '{model}' not found, make sure the correct model ID was used")
        if input_type not in ("search_document", "search_query", "classification", "clustering"):
            return error(400, "invalid request: input_type is required for embed v3 and newer models")
        if not isinstance(texts, list) or not texts or len(texts) > MAX_TEXTS:
            return error(400, f"invalid request: valid input must be provided, at most {MAX_TEXTS} texts")
        dimension = body.get("output_dimension", DIMENSIONS[model])
        if "output_dimension" in body and (model != "embed-v4.0" or dimension not in OUTPUT_DIMENSIONS):
            return error(400, f"invalid request: output_dimension {dimension} is not supported for {model}")
        if body.get("truncate") == "NONE" and any(len(words(t)) > MAX_INPUT_TOKENS for t in texts):
            return error(400, "invalid request: input is too long and truncate is NONE")
        tokens = sum(min(len(words(t)), MAX_INPUT_TOKENS) for t in texts)
        return Reply(200, {
            "id": "emb-fake",
            "response_type": "embeddings_by_type",
            "embeddings": {"float": [vector_for(" ".join(words(t)[:MAX_INPUT_TOKENS]), input_type, dimension)
                                     for t in texts]},
            "texts": texts,
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
        })

    def rerank(self, body: dict[str, Any]) -> Reply:
        documents = body.get("documents") or []
        if not body.get("query") or not documents:
            return error(400, "invalid request: query and documents are required")
        ranked = sorted(range(len(documents)), key=lambda i: -relevance(body["query"], documents[i]))
        top = ranked[: body.get("top_n") or len(documents)]
        return Reply(200, {
            "id": "rerank-fake",
            "results": [{"index": i, "relevance_score": relevance(body["query"], documents[i])} for i in top],
            "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
        })

    def chat(self, body: dict[str, Any]) -> Reply:
        messages = body.get("messages") or []
        question = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), None)
        if question is None:
            return error(400, "invalid request: messages must contain a user message")
        answer = f"Cohere says: {question}"
        prompt = sum(len(words(m.get("content", ""))) for m in messages)
        return Reply(200, {
            "id": "chat-fake",
            "finish_reason": "COMPLETE",
            "message": {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            "usage": {
                "billed_units": {"input_tokens": prompt, "output_tokens": len(words(answer))},
                "tokens": {"input_tokens": prompt + 60, "output_tokens": len(words(answer)) + 1},
            },
        })
