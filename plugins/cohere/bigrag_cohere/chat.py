"""The "cohere" chat provider: v2 chat, non-streamed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cohere

from bigrag_cohere.client import SERVICE, CohereService
from bigrag_mcp.errors import Unavailable
from bigrag_mcp.types import ChatMessage, ChatReply

MESSAGE_TYPES = {
    "system": cohere.SystemChatMessageV2,
    "user": cohere.UserChatMessageV2,
    "assistant": cohere.AssistantChatMessageV2,
}


class CohereChat:
    """One chat reply; tokens from `usage.billed_units`, else `usage.tokens`."""

    name = "cohere"

    def __init__(self, service: CohereService, *, model: str) -> None:
        self.model = model
        self._service = service

    def __repr__(self) -> str:
        return f"CohereChat(model={self.model!r})"

    async def aclose(self) -> None:
        """Close the pooled HTTP connections."""
        await self._service.aclose()

    async def generate(
        self, messages: Sequence[ChatMessage], *, temperature: float | None = None, max_tokens: int | None = None
    ) -> ChatReply:
        options: dict[str, Any] = {}
        if temperature is not None:
            options["temperature"] = temperature
        if max_tokens is not None:
            options["max_tokens"] = max_tokens
        sdk_messages: list[Any] = [MESSAGE_TYPES[m.role](content=m.content) for m in messages]
        reply = await self._service.call(
            lambda client: client.chat(model=self.model, messages=sdk_messages, **options)
        )
        content = reply.message.content if reply.message else None
        texts = [item.text for item in content or [] if item.type == "text"]
        if not texts:
            raise Unavailable(f"{SERVICE}: the chat reply holds no message text")
        usage = reply.usage
        counts = usage and (usage.billed_units or usage.tokens)
        return ChatReply(
            text="".join(texts),
            model=self.model,
            input_tokens=_count(counts.input_tokens if counts else None),
            output_tokens=_count(counts.output_tokens if counts else None),
        )


def _count(value: float | None) -> int | None:
    return None if value is None else int(value)
