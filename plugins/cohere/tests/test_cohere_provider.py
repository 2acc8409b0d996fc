"""The Cohere plugin through the cohere SDK's async v2 client against a local fake of the Cohere API."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pluggy
import pytest
from bigrag_cohere import CohereChat, CohereEmbeddings, CohereReranker, CohereService, CohereSettings
from fake_cohere import RATE_LIMITED, SERVER_ERROR, FakeCohere, error, relevance, vector_for, words
from pydantic import SecretStr

from bigrag_mcp import hookspecs
from bigrag_mcp.errors import InvalidArgument, LimitExceeded, Unavailable
from bigrag_mcp.retry import RetryPolicy
from bigrag_mcp.testing.embedders import EmbeddingProviderConformance
from bigrag_mcp.testing.fake_http import HANG, RecordingSleep, Reply, Request
from bigrag_mcp.types import ChatMessage, ChatProvider, EmbeddingProvider, Reranker

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> Iterator[FakeCohere]:
    with FakeCohere() as server:
        yield server


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


def service(fake: FakeCohere, sleeps: RecordingSleep, *, attempts: int = 3, **overrides: Any) -> CohereService:
    values: dict[str, Any] = {"api_key": SecretStr(fake.api_key), "base_url": fake.url, "timeout": 5.0, **overrides}
    settings = CohereSettings(_env_file=None, **values)  # type: ignore[call-arg]
    return CohereService(settings, retry=RetryPolicy(attempts=attempts, sleep=sleeps, rand=lambda: 0.5))


def embedder(
    fake: FakeCohere, sleeps: RecordingSleep, *, model: str = "embed-v4.0", dimension: int | None = 256, **overrides: Any
) -> CohereEmbeddings:
    return CohereEmbeddings(service(fake, sleeps, **overrides), model=model, dimension=dimension)


class TestCohereConformance(EmbeddingProviderConformance):
    @pytest.fixture
    async def provider(self, fake: FakeCohere, sleeps: RecordingSleep) -> EmbeddingProvider:
        return embedder(fake, sleeps)


async def test_batches_of_96_keep_order_and_sum_billed_tokens(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    texts = [f"passage {i} about item {i}" for i in range(200)]
    result = await embedder(fake, sleeps).embed(texts, purpose="document")
    bodies = fake.bodies("/v2/embed")
    assert [len(b["texts"]) for b in bodies] == [96, 96, 8]
    assert all(b["input_type"] == "search_document" and b["embedding_types"] == ["float"] for b in bodies)
    assert all(b["output_dimension"] == 256 and b["truncate"] == "END" for b in bodies)
    assert result.vectors == [vector_for(t, "search_document", 256) for t in texts]
    assert result.tokens == sum(len(words(t)) for t in texts)


async def test_queries_use_the_search_query_input_type(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    provider = embedder(fake, sleeps, model="embed-english-v3.0", dimension=None)
    assert provider.dimension == 1024
    query = await provider.embed(["refund policy"], purpose="query")
    document = await provider.embed(["refund policy"], purpose="document")
    assert [b["input_type"] for b in fake.bodies("/v2/embed")] == ["search_query", "search_document"]
    assert query.vectors == [vector_for("refund policy", "search_query", 1024)]
    assert query.vectors != document.vectors
    assert all("output_dimension" not in b for b in fake.bodies("/v2/embed"))


@pytest.mark.parametrize(
    ("model", "dimension", "fragment"),
    [
        ("embed-v4.0", 300, "256, 512, 1024, 1536, not 300"),
        ("embed-english-v3.0", 256, "1024, not 256"),
        ("embed-custom", None, "give its dimension"),
    ],
)
def test_impossible_dimensions_are_refused(model: str, dimension: int | None, fragment: str) -> None:
    settings = CohereSettings(_env_file=None, api_key=SecretStr("k"))  # type: ignore[call-arg]
    with pytest.raises(InvalidArgument, match=fragment):
        CohereEmbeddings(CohereService(settings), model=model, dimension=dimension)


async def test_a_wrong_dimension_for_an_unknown_model_names_the_real_one(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    fake.script.append(lambda request: Reply(200, {
        "id": "x", "embeddings": {"float": [[0.6, 0.8]]}, "meta": {"billed_units": {"input_tokens": 1}},
    }))
    with pytest.raises(InvalidArgument, match="returned 2-dimensional vectors.*set the dimension to 2"):
        await embedder(fake, sleeps, model="embed-custom", dimension=8).embed(["a"], purpose="document")


def _short(request: Request) -> Reply:
    texts = request.body["texts"]
    floats = [vector_for(t, "search_document", 256) for t in texts[:-1]]
    return Reply(200, {"id": "x", "embeddings": {"float": floats}, "meta": {"billed_units": {"input_tokens": 3}}})


async def test_a_reply_with_fewer_embeddings_is_an_error_not_a_truncation(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    fake.script.append(_short)
    with pytest.raises(Unavailable, match="asked for 3 embeddings, the reply holds 2"):
        await embedder(fake, sleeps).embed(["a", "b", "c"], purpose="document")


async def test_a_reply_without_billed_units_reports_no_tokens(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    fake.script.append(lambda request: Reply(200, {"id": "x", "embeddings": {"float": [vector_for("a", "q", 256)]}}))
    assert (await embedder(fake, sleeps).embed(["a"], purpose="query")).tokens is None


async def test_429_is_retried_honouring_retry_after_then_limit_exceeded(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    fake.script.extend([RATE_LIMITED] * 3)
    with pytest.raises(LimitExceeded, match="limited to 40 API calls / minute"):
        await embedder(fake, sleeps, attempts=3).embed(["a"], purpose="document")
    assert sleeps.delays == [3.0, 3.0]
    assert len(fake.requests) == 3


async def test_429_then_success_recovers(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    fake.script.append(RATE_LIMITED)
    result = await embedder(fake, sleeps).embed(["a"], purpose="document")
    assert result.vectors == [vector_for("a", "search_document", 256)]
    assert sleeps.delays == [3.0] and len(fake.requests) == 2


async def test_5xx_is_retried_with_backoff_then_unavailable(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    fake.script.extend([SERVER_ERROR] * 3)
    with pytest.raises(Unavailable, match="HTTP 500.*internal server error"):
        await embedder(fake, sleeps, attempts=3).embed(["a"], purpose="document")
    assert sleeps.delays == [0.375, 0.75] and len(fake.requests) == 3


async def test_400_is_invalid_argument_and_not_retried(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    fake.script.append(error(400, "invalid request: texts must not be empty"))
    with pytest.raises(InvalidArgument, match="HTTP 400.*texts must not be empty"):
        await embedder(fake, sleeps).embed(["a"], purpose="document")
    assert len(fake.requests) == 1 and sleeps.delays == []


async def test_an_unknown_model_is_invalid_argument_with_the_service_message(
    fake: FakeCohere, sleeps: RecordingSleep
) -> None:
    with pytest.raises(InvalidArgument, match="model 'embed-old' not found"):
        await embedder(fake, sleeps, model="embed-old", dimension=64).embed(["a"], purpose="document")


async def test_a_wrong_key_is_unavailable_and_never_shown(
    fake: FakeCohere, sleeps: RecordingSleep, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "co-wrong-secret-key-42"
    caplog.set_level(logging.DEBUG)
    provider = embedder(fake, sleeps, api_key=SecretStr(secret))
    with pytest.raises(Unavailable) as caught:
        await provider.embed(["a"], purpose="document")
    assert "check the API key" in str(caught.value) and "invalid api token" in str(caught.value)
    assert secret not in "".join(traceback.format_exception(caught.value))
    assert secret not in repr(provider) and secret not in caplog.text
    assert len(fake.requests) == 1


async def test_a_key_echoed_in_a_5xx_body_is_scrubbed(
    fake: FakeCohere, sleeps: RecordingSleep, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.script.extend([error(503, f"upstream said no to {fake.api_key}")] * 3)
    with pytest.raises(Unavailable) as caught:
        await embedder(fake, sleeps).embed(["a"], purpose="document")
    assert "upstream said no to ***" in str(caught.value)
    assert fake.api_key not in caplog.text and "retry 2 of 2" in caplog.text


async def test_a_hanging_server_times_out_and_is_retried(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    fake.script.extend([HANG, HANG])
    with pytest.raises(Unavailable, match="did not answer.*ReadTimeout"):
        await embedder(fake, sleeps, attempts=2, timeout=0.2).embed(["a"], purpose="document")
    assert len(fake.requests) == 2 and len(sleeps.delays) == 1


async def test_a_timeout_then_success_recovers(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    fake.script.append(HANG)
    result = await embedder(fake, sleeps, timeout=0.2).embed(["a"], purpose="document")
    assert result.vectors == [vector_for("a", "search_document", 256)]


DOCUMENTS = [
    "Refunds are issued within 14 days of a return.",
    "Our office is closed on public holidays.",
    "To request refunds, contact support with the order number.",
    "Shipping takes three to five business days.",
]


async def test_rerank_returns_indices_and_scores_best_first(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    reranker = CohereReranker(service(fake, sleeps))
    ranked = await reranker.rerank("request refunds", DOCUMENTS, top_n=2)
    assert [index for index, _ in ranked] == [2, 0]
    assert ranked[0][1] == relevance("request refunds", DOCUMENTS[2])
    assert fake.bodies("/v2/rerank") == [
        {"model": "rerank-v3.5", "query": "request refunds", "documents": DOCUMENTS, "top_n": 2}
    ]


async def test_rerank_splits_large_document_lists_and_merges(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    documents = [f"filler document {i}" for i in range(1500)]
    documents[1234] = "the refunds answer"
    documents[7] = "refunds"
    ranked = await CohereReranker(service(fake, sleeps)).rerank("refunds answer", documents, top_n=3)
    assert [len(b["documents"]) for b in fake.bodies("/v2/rerank")] == [1000, 500]
    assert [index for index, _ in ranked[:2]] == [1234, 7]
    assert len(ranked) == 3


async def test_rerank_of_nothing_makes_no_request(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    assert await CohereReranker(service(fake, sleeps)).rerank("q", [], top_n=5) == []
    assert fake.requests == []


async def test_rerank_rate_limit_is_limit_exceeded(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    fake.script.extend([RATE_LIMITED] * 3)
    with pytest.raises(LimitExceeded):
        await CohereReranker(service(fake, sleeps)).rerank("q", DOCUMENTS, top_n=1)


async def test_chat_sends_roles_and_reads_billed_units(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    chat = CohereChat(service(fake, sleeps), model="command-r-08-2024")
    messages = [ChatMessage("system", "Answer from sources."), ChatMessage("user", "What is RAG?")]
    reply = await chat.generate(messages, temperature=0.3, max_tokens=50)
    body = fake.bodies("/v2/chat")[0]
    assert body["model"] == "command-r-08-2024" and body["temperature"] == 0.3 and body["max_tokens"] == 50
    assert body["messages"] == [
        {"role": "system", "content": "Answer from sources."},
        {"role": "user", "content": "What is RAG?"},
    ]
    assert reply.text == "Cohere says: What is RAG?" and reply.model == "command-r-08-2024"
    assert (reply.input_tokens, reply.output_tokens) == (6, 5)


async def test_chat_falls_back_to_usage_tokens(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    fake.script.append(lambda request: Reply(200, {
        "id": "c", "finish_reason": "COMPLETE",
        "message": {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        "usage": {"tokens": {"input_tokens": 70, "output_tokens": 2}},
    }))
    reply = await CohereChat(service(fake, sleeps), model="m").generate([ChatMessage("user", "hi")])
    assert (reply.text, reply.input_tokens, reply.output_tokens) == ("ok", 70, 2)
    assert "temperature" not in fake.requests[0].body and "max_tokens" not in fake.requests[0].body


async def test_chat_5xx_then_success_and_empty_reply_is_unavailable(fake: FakeCohere, sleeps: RecordingSleep) -> None:
    chat = CohereChat(service(fake, sleeps), model="m")
    fake.script.append(SERVER_ERROR)
    assert (await chat.generate([ChatMessage("user", "hi")])).text == "Cohere says: hi"
    fake.script.append(lambda request: Reply(200, {"id": "c", "message": {"role": "assistant", "content": []}}))
    with pytest.raises(Unavailable, match="no message text"):
        await chat.generate([ChatMessage("user", "hi")])


def registered(hook: str) -> dict[str, Any]:
    manager = pluggy.PluginManager("bigrag")
    manager.add_hookspecs(hookspecs)
    manager.load_setuptools_entrypoints("bigrag", name="cohere")
    found: dict[str, Any] = {}
    getattr(manager.hook, hook)(register=lambda name, factory: found.__setitem__(name, factory))
    return found


async def test_entry_point_factories_read_the_environment(fake: FakeCohere, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COHERE_API_KEY", fake.api_key)
    monkeypatch.setenv("COHERE_BASE_URL", fake.url)
    monkeypatch.setenv("COHERE_CHAT_MODEL", "command-r7b-12-2024")
    embeddings = registered("register_embedding_providers")["cohere"](model=None, dimension=512)
    assert isinstance(embeddings, EmbeddingProvider)
    assert (embeddings.model, embeddings.dimension, embeddings.max_batch) == ("embed-v4.0", 512, 96)
    assert (await embeddings.embed(["a"], purpose="query")).vectors == [vector_for("a", "search_query", 512)]
    chat = registered("register_chat_providers")["cohere"](model=None)
    assert isinstance(chat, ChatProvider) and chat.model == "command-r7b-12-2024"
    assert (await chat.generate([ChatMessage("user", "hi")])).text == "Cohere says: hi"
    reranker = registered("register_rerankers")["cohere"](model=None)
    assert isinstance(reranker, Reranker) and (reranker.name, reranker.model) == ("cohere", "rerank-v3.5")
    assert (await reranker.rerank("office holidays", DOCUMENTS, top_n=1))[0][0] == 1
    for closable in (embeddings, chat, reranker):
        await closable.aclose()  # type: ignore[union-attr]


def test_a_missing_key_is_refused_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COHERE_API_KEY", raising=False)
    with pytest.raises(Unavailable, match="COHERE_API_KEY is not set"):
        registered("register_embedding_providers")["cohere"](model=None, dimension=None)
