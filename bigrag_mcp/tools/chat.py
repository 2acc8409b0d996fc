"""chat: retrieval with the policy and tenant guard of `query`, then generation with citations.

The policy check and retrieval run in the `prepare` resolver, before the tool body, so that the `sample` resolver
can put the retrieved sources into a sampling request for the client's own model (`Resolve(Sample)`, which works
on both protocol versions). A denied or invalid call yields an error instead of a retrieval, and `sample` then
asks nothing. Resolvers run once per round; on the 2026-07-28 protocol a sampled call takes two rounds.
"""

# No `from __future__ import annotations`: the resolvers are closures, and the SDK reads their hints at registration.

from collections.abc import Sequence
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer, Resolve, Sample
from mcp.types import (
    CallToolResult,
    CreateMessageResult,
    ModelHint,
    ModelPreferences,
    SamplingMessage,
    TextContent,
    ToolAnnotations,
)
from pydantic import Field

from bigrag_mcp.errors import Unavailable
from bigrag_mcp.gate import Gate
from bigrag_mcp.schemas import SearchModeName
from bigrag_mcp.services.chat import ChatResult, Retrieval, respond, retrieve
from bigrag_mcp.services.ledger import Caller
from bigrag_mcp.tools.search import Filters, MinScore, Rerank
from bigrag_mcp.types import ChatMessage, ChatReply

CHAT = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
DEFAULT_SAMPLING_MAX_TOKENS = 1024

Message = Annotated[str, Field(min_length=1, max_length=8000, description="The question to answer from the collection.")]
TopK = Annotated[int, Field(ge=1, le=50, description="How many chunks to retrieve as sources.")]
SystemPrompt = Annotated[
    str | None, Field(max_length=4000, description="Extra instructions, added after the built-in rules (which still hold).")
]
Provider = Annotated[str | None, Field(description="A registered chat provider; default: the configured one.")]
Model = Annotated[str | None, Field(description="Chat model (for sampling: a hint to the client).")]
Temperature = Annotated[float | None, Field(ge=0.0, le=2.0)]
MaxTokens = Annotated[int | None, Field(ge=1, le=32_000, description="Longest answer in tokens.")]
Prepared = tuple[Caller, Retrieval] | CallToolResult  # who was allowed and what they retrieved, or the refusal


def sampled_reply(result: CreateMessageResult) -> ChatReply:
    """The client's sampled message as a chat reply (sampling reports no token counts)."""
    if not isinstance(result.content, TextContent) or not result.content.text.strip():
        raise Unavailable("the MCP client's model returned no text for the sampling request")
    return ChatReply(text=result.content.text, model=result.model)


def sampling_request(retrieval: Retrieval, model: str | None, temperature: float | None, max_tokens: int | None) -> Sample:
    """The chat prompt as a sampling request: our system message, and the user message with the quoted sources."""
    system = "\n\n".join(m.content for m in retrieval.messages if m.role == "system")
    messages = [
        SamplingMessage(role=m.role, content=TextContent(type="text", text=m.content))
        for m in retrieval.messages
        if m.role != "system"
    ]
    return Sample(
        messages,
        system_prompt=system,
        max_tokens=max_tokens or DEFAULT_SAMPLING_MAX_TOKENS,
        temperature=temperature,
        model_preferences=ModelPreferences(hints=[ModelHint(name=model)]) if model else None,
    )


def register(server: MCPServer, gate: Gate) -> None:
    rt = gate.rt

    async def prepare(
        collection: str, message: str, filters: dict[str, Any] | None, top_k: int, search_mode: SearchModeName,
        min_score: float | None, rerank: str | None, system_prompt: str | None,
    ) -> Prepared:
        """The policy check and the tenant-scoped retrieval, or the error that refused them."""
        args = {
            "collection": collection, "message": message, "filters": filters, "top_k": top_k, "search_mode": search_mode,
            "min_score": min_score, "rerank": rerank, "system_prompt": system_prompt,
        }

        async def allowed(caller: Caller, a: dict[str, Any], d: Any) -> tuple[Caller, Retrieval]:
            return caller, await retrieve(rt, a.pop("collection"), a.pop("message"), caller=caller, **a)

        return await gate.run("chat", args, allowed, settles_later=True)

    def sample(
        prepared: Annotated[Prepared, Resolve(prepare)],
        ctx: Context,
        provider: str | None,
        model: str | None,
        temperature: float | None,
        max_tokens: int | None,
    ) -> Sample | None:
        """Ask the client's model only for an allowed call with sources, no chat provider, and a sampling client."""
        if not isinstance(prepared, tuple) or not prepared[1].sources or provider or rt.settings.chat_provider:
            return None
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.sampling is None:
            return None
        return sampling_request(prepared[1], model, temperature, max_tokens)

    @server.tool(annotations=CHAT)
    async def chat(
        collection: str,
        message: Message,
        filters: Filters = None,
        top_k: TopK = 5,
        search_mode: SearchModeName = "semantic",
        min_score: MinScore = None,
        rerank: Rerank = None,
        system_prompt: SystemPrompt = None,
        provider: Provider = None,
        model: Model = None,
        temperature: Temperature = None,
        max_tokens: MaxTokens = None,
        *,
        prepared: Annotated[Prepared, Resolve(prepare)],
        sampled: Annotated[CreateMessageResult | None, Resolve(sample)],
    ) -> ChatResult:
        """Answer a question from a collection, citing the retrieved sources as [n].

        Generation: the configured chat provider; else the client's own model (MCP sampling), when the client
        offers it; else an extractive answer of source sentences, labelled so. `generation` says which.
        """
        if not isinstance(prepared, tuple):
            return prepared  # type: ignore[return-value]  # an error result, passed through as is
        caller, retrieval = prepared  # the resolver already authorised the call: the body does not ask again

        async def client_model(messages: Sequence[ChatMessage]) -> ChatReply:
            assert sampled is not None
            return sampled_reply(sampled)

        answering = respond(
            rt, retrieval, provider=provider, model=model, temperature=temperature, max_tokens=max_tokens,
            caller=caller, generate=client_model if sampled is not None else None,
        )
        try:
            return await gate.answer("chat", caller.request_id or "", answering)
        finally:
            await gate.finish(caller)  # the chat's limits settle with its usage; what was not used goes back
