"""Chat: tenant-scoped retrieval, a prompt that quotes sources as data, generation, and the answer's citations.

Generation comes from, in order: a chat provider (the `provider` argument or `settings.chat_provider`), an
injected `generate` callable (the MCP tool passes the client's own model, reached through sampling), or an
offline extractive answer that is labelled as such. When retrieval finds nothing, no model is asked: a language
model with no sources can only refuse or guess, so the answer says that nothing relevant was found
(generation "none").

Usage: one "chat" usage row per call, carrying the retrieval's embedding tokens and the generation's tokens. Its
provider/model stay the embedding provider's, because the usage report prices embedding tokens by them; the
chat model is in the result. A call that fails records nothing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, Unpack

from pydantic import BaseModel, Field

from bigrag_mcp.errors import BigRagError, Unavailable
from bigrag_mcp.schemas import QueryRow, SearchModeName
from bigrag_mcp.services import search
from bigrag_mcp.services.answer import Source, build_messages, extract_citations, extractive_answer
from bigrag_mcp.services.ledger import OPERATOR, Activity, Caller
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.types import ChatMessage, ChatReply

Generation = Literal["provider", "sampling", "extractive", "none"]
Generate = Callable[[Sequence[ChatMessage]], Awaitable[ChatReply]]

NOTHING_FOUND = "Nothing relevant was found in this collection for the question, so there is no answer to give."


class ChatSource(BaseModel):
    """A retrieved chunk; its number in the prompt and in `[n]` citations is its position in `sources` + 1."""

    id: str
    document_id: str | None
    score: float
    text: str
    metadata: dict[str, Any]
    cited: bool = Field(description="True when the answer cites this source.")


class ChatUsage(BaseModel):
    embedding_tokens: int | None = Field(description="Tokens of the embedded question (null: not reported).")
    input_tokens: int | None = Field(description="Prompt tokens the chat model reported (null: none reported).")
    output_tokens: int | None = Field(description="Answer tokens the chat model reported (null: none reported).")


class ChatTimings(BaseModel):
    retrieve_ms: float
    generate_ms: float
    total_ms: float


class ChatResult(BaseModel):
    answer: str
    generation: Generation = Field(
        description="provider: a configured chat provider; sampling: the MCP client's own model; "
        "extractive: source sentences, no model; none: nothing relevant was found, no model asked."
    )
    provider: str | None = Field(description="The chat provider's name (generation 'provider' only).")
    model: str | None = Field(description="The model that wrote the answer, as it reported itself.")
    sources: list[ChatSource]
    citations: list[int] = Field(description="The source numbers ([n], 1-based) the answer cites.")
    search_mode: SearchModeName
    usage: ChatUsage
    timings: ChatTimings


@dataclass(frozen=True)
class Retrieval:
    """What retrieval found for one chat call, and the prompt built from it."""

    question: str
    rows: tuple[QueryRow, ...]
    sources: tuple[Source, ...]
    messages: tuple[ChatMessage, ...]
    search_mode: SearchModeName
    activity: Activity  # the retrieval's usage; recorded once, with the generation's figures, by `respond`
    retrieve_ms: float


class RetrievalOptions(TypedDict, total=False):
    """The keyword arguments of `retrieve` that `chat` passes through."""

    filters: dict[str, Any] | None
    top_k: int
    search_mode: SearchModeName
    min_score: float | None
    rerank: str | None
    system_prompt: str | None


async def retrieve(
    rt: Runtime,
    collection: str,
    message: str,
    *,
    filters: dict[str, Any] | None = None,
    top_k: int = 5,
    search_mode: SearchModeName = "semantic",
    min_score: float | None = None,
    rerank: str | None = None,
    system_prompt: str | None = None,
    caller: Caller = OPERATOR,
) -> Retrieval:
    """Search with the tenant guard of `query`, and quote what was found (chunks with text) into the prompt."""
    found, activity = await search.retrieve(
        rt, collection, message, top_k=top_k, filters=filters, min_score=min_score, search_mode=search_mode,
        rerank=rerank, operation="chat",
    )
    rows = tuple(row for row in found.results if row.text)
    sources = tuple(
        Source(id=row.id, document_id=row.document_id or "", score=row.score, text=row.text or "", metadata=row.metadata)
        for row in rows
    )
    return Retrieval(
        question=message,
        rows=rows,
        sources=sources,
        messages=tuple(build_messages(message, sources, system_prompt)),
        search_mode=search_mode,
        activity=activity,
        retrieve_ms=found.timings.total_ms,
    )


async def _provider_reply(
    rt: Runtime, name: str, model: str | None, messages: Sequence[ChatMessage], temperature: float | None, max_tokens: int | None
) -> ChatReply:
    if model is None and name == rt.settings.chat_provider:
        model = rt.settings.chat_model
    provider = rt.chat_provider(name, model)
    try:
        return await provider.generate(messages, temperature=temperature, max_tokens=max_tokens)
    except BigRagError:
        raise
    except Exception as exc:
        raise Unavailable(f"chat provider {name!r} failed: {type(exc).__name__}: {exc}") from exc


async def respond(
    rt: Runtime,
    retrieval: Retrieval,
    *,
    provider: str | None = None,
    model: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    caller: Caller = OPERATOR,
    generate: Generate | None = None,
) -> ChatResult:
    """Generate the answer for a retrieval (provider, else `generate`, else extractive) and record the call's usage."""
    started = time.perf_counter()
    name = provider or rt.settings.chat_provider
    if name is not None:
        rt.registry.chat_provider(name)  # an unknown provider is refused even when nothing was found
    reply: ChatReply | None = None
    generation: Generation
    if not retrieval.sources:
        text, generation = NOTHING_FOUND, "none"
    elif name is not None:
        reply = await _provider_reply(rt, name, model, retrieval.messages, temperature, max_tokens)
        text, generation = reply.text, "provider"
    elif generate is not None:
        reply = await generate(retrieval.messages)
        text, generation = reply.text, "sampling"
    else:
        text, generation = extractive_answer(retrieval.question, retrieval.sources), "extractive"
    generate_ms = (time.perf_counter() - started) * 1000
    total_ms = retrieval.retrieve_ms + generate_ms
    activity = retrieval.activity.but(
        chat_input_tokens=(reply.input_tokens or 0) if reply else 0,
        chat_output_tokens=(reply.output_tokens or 0) if reply else 0,
        latency_ms=total_ms,
    )
    async with rt.db.session() as session:
        await rt.ledger.record(session, caller, activity)
    citations = extract_citations(text, retrieval.sources)
    return ChatResult(
        answer=text,
        generation=generation,
        provider=name if generation == "provider" else None,
        model=reply.model if reply else None,
        sources=[
            ChatSource(
                id=row.id, document_id=row.document_id, score=row.score, text=source.text, metadata=row.metadata,
                cited=number in citations,
            )
            for number, (row, source) in enumerate(zip(retrieval.rows, retrieval.sources, strict=True), start=1)
        ],
        citations=citations,
        search_mode=retrieval.search_mode,
        usage=ChatUsage(
            embedding_tokens=retrieval.activity.embedding_tokens,
            input_tokens=reply.input_tokens if reply else None,
            output_tokens=reply.output_tokens if reply else None,
        ),
        timings=ChatTimings(retrieve_ms=retrieval.retrieve_ms, generate_ms=generate_ms, total_ms=total_ms),
    )


async def chat(
    rt: Runtime,
    collection: str,
    message: str,
    *,
    provider: str | None = None,
    model: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
    caller: Caller = OPERATOR,
    generate: Generate | None = None,
    **options: Unpack[RetrievalOptions],
) -> ChatResult:
    """Answer `message` from `collection` with citations: `retrieve` (with `options`), then `respond`."""
    found = await retrieve(rt, collection, message, caller=caller, **options)
    return await respond(
        rt, found, provider=provider, model=model, temperature=temperature, max_tokens=max_tokens, caller=caller,
        generate=generate,
    )
