"""The "openai" chat provider: POST {base_url}/chat/completions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bigrag_mcp.errors import Unavailable
from bigrag_mcp.types import ChatMessage, ChatReply
from bigrag_openai.client import SERVICE, OpenAIClient


class OpenAIChat:
    """One non-streamed completion; token counts from the reply's `usage`."""

    name = "openai"

    def __init__(self, client: OpenAIClient, *, model: str) -> None:
        self.model = model
        self._client = client

    def __repr__(self) -> str:
        return f"OpenAIChat(model={self.model!r}, base_url={self._client.base_url!r})"

    async def aclose(self) -> None:
        """Close the pooled HTTP connections."""
        await self._client.aclose()

    async def generate(
        self, messages: Sequence[ChatMessage], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> ChatReply:
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
        }
        if temperature is not None:
            payload["temperature"] = temperature
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        reply = await self._client.post("/chat/completions", payload)
        choices = reply.get("choices")
        message = choices[0].get("message") if isinstance(choices, list) and choices else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise Unavailable(f"{SERVICE}: the chat reply holds no message text")
        usage = reply.get("usage")
        if not isinstance(usage, dict):
            usage = {}
        return ChatReply(
            text=content,
            model=str(reply.get("model") or self.model),
            input_tokens=_count(usage.get("prompt_tokens")),
            output_tokens=_count(usage.get("completion_tokens")),
        )


def _count(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None
