"""The OpenAI plugin through httpx against a local fake of the OpenAI API."""

from __future__ import annotations

import logging
import socket
import traceback
from collections.abc import Iterator
from typing import Any

import pluggy
import pytest
from bigrag_openai import OpenAIChat, OpenAIClient, OpenAIEmbeddings, OpenAISettings
from bigrag_openai.embeddings import estimate_tokens
from fake_openai import RATE_LIMITED, SERVER_ERROR, FakeOpenAI, count_tokens, error, vector_for
from pydantic import SecretStr

from bigrag_mcp import hookspecs
from bigrag_mcp.errors import InvalidArgument, LimitExceeded, Unavailable
from bigrag_mcp.retry import RetryPolicy
from bigrag_mcp.testing.embedders import EmbeddingProviderConformance
from bigrag_mcp.testing.fake_http import HANG, RecordingSleep, Reply, Request
from bigrag_mcp.types import ChatMessage, ChatProvider, EmbeddingProvider

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def sleeps() -> RecordingSleep:
    return RecordingSleep()


def make_settings(fake: FakeOpenAI, **overrides: Any) -> OpenAISettings:
    values: dict[str, Any] = {"api_key": fake.api_key, "base_url": fake.base_url, "timeout": 5.0, **overrides}
    return OpenAISettings(_env_file=None, **values)  # type: ignore[call-arg]


def embedder(
    fake: FakeOpenAI, sleeps: RecordingSleep, *, model: str = "text-embedding-3-small", dimension: int | None = 8,
    attempts: int = 3, **overrides: Any,
) -> OpenAIEmbeddings:
    settings = make_settings(fake, **overrides)
    client = OpenAIClient(settings, retry=RetryPolicy(attempts=attempts, sleep=sleeps, rand=lambda: 0.5))
    return OpenAIEmbeddings(client, settings, model=model, dimension=dimension)


def texts(n: int) -> list[str]:
    return [f"text number {i}" for i in range(n)]


class TestOpenAIConformance(EmbeddingProviderConformance):
    @pytest.fixture
    async def provider(self, fake: FakeOpenAI, sleeps: RecordingSleep) -> EmbeddingProvider:
        return embedder(fake, sleeps, dimension=16)


async def test_order_is_preserved_across_batches_and_tokens_are_summed(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    provider = embedder(fake, sleeps, max_batch=3)
    batch = texts(8)
    result = await provider.embed(batch, purpose="document")
    assert [len(r.body["input"]) for r in fake.embedding_requests()] == [3, 3, 2]
    assert result.vectors == [vector_for(t, 8) for t in batch]
    assert result.tokens == sum(count_tokens(t) for t in batch)
    assert all(r.body["dimensions"] == 8 and r.body["model"] == "text-embedding-3-small"
               for r in fake.embedding_requests())


async def test_batches_stay_within_2048_inputs(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    result = await embedder(fake, sleeps, dimension=4).embed(texts(2100), purpose="document")
    assert [len(r.body["input"]) for r in fake.embedding_requests()] == [2048, 52]
    assert result.vectors[2099] == vector_for("text number 2099", 4)


async def test_batches_stay_within_the_token_budget(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    # 80 texts of ~27k characters: one request would exceed the service's 300k-token limit (the fake enforces it).
    long_texts = [f"{i} " + "word " * 5500 for i in range(80)]
    result = await embedder(fake, sleeps, dimension=4).embed(long_texts, purpose="document")
    requests = fake.embedding_requests()
    assert len(requests) >= 2
    assert all(sum(estimate_tokens(t) for t in r.body["input"]) <= 300_000 for r in requests)
    assert len(result.vectors) == 80
    assert result.tokens == sum(count_tokens(t) for r in requests for t in r.body["input"])


async def test_a_small_token_budget_splits_requests(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    provider = embedder(fake, sleeps, max_batch_tokens=50)
    batch = ["x" * 100] * 5  # 25 estimated tokens each
    await provider.embed(batch, purpose="document")
    assert [len(r.body["input"]) for r in fake.embedding_requests()] == [2, 2, 1]


async def test_native_dimension_sends_no_dimensions_parameter(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    for model in ("text-embedding-3-small", "text-embedding-ada-002"):
        provider = embedder(fake, sleeps, model=model, dimension=None)
        assert provider.dimension == 1536
        result = await provider.embed(["hello"], purpose="query")
        assert len(result.vectors[0]) == 1536
    assert all("dimensions" not in r.body for r in fake.embedding_requests())
    assert embedder(fake, sleeps, model="text-embedding-3-large", dimension=None).dimension == 3072


@pytest.mark.parametrize(
    ("model", "dimension", "fragment"),
    [
        ("text-embedding-ada-002", 256, "only produces 1536"),
        ("text-embedding-3-small", 2000, "from 1 to 1536"),
        ("my-local-model", None, "give its dimension"),
    ],
)
def test_impossible_dimensions_are_refused(model: str, dimension: int | None, fragment: str) -> None:
    settings = OpenAISettings(_env_file=None, api_key=SecretStr("k"), base_url="http://127.0.0.1:9/v1")  # type: ignore[call-arg]
    with pytest.raises(InvalidArgument, match=fragment):
        OpenAIEmbeddings(OpenAIClient(settings), settings, model=model, dimension=dimension)


async def test_compatible_server_without_key_and_with_prefixes(sleeps: RecordingSleep) -> None:
    with FakeOpenAI(api_key=None) as local:
        provider = embedder(
            local, sleeps, model="nomic-embed-text", dimension=12,
            embedding_query_prefix="search_query: ", embedding_document_prefix="search_document: ",
        )
        query = await provider.embed(["cats"], purpose="query")
        document = await provider.embed(["cats"], purpose="document")
        assert query.vectors == [vector_for("search_query: cats", 12)]
        assert document.vectors == [vector_for("search_document: cats", 12)]
        assert all("authorization" not in r.headers and "dimensions" not in r.body for r in local.requests)


async def test_a_wrong_dimension_for_a_compatible_model_names_the_real_one(sleeps: RecordingSleep) -> None:
    with FakeOpenAI(api_key=None) as local:
        provider = embedder(local, sleeps, model="nomic-embed-text", dimension=10)
        with pytest.raises(InvalidArgument, match="returned 12-dimensional vectors.*set the dimension to 12"):
            await provider.embed(["cats"], purpose="document")


async def test_empty_and_huge_inputs_reach_the_service_in_a_shape_it_accepts(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    huge = "evaluation " * 20_000  # 20k tokens for the fake's tokenizer, over the 8192 limit
    result = await embedder(fake, sleeps).embed(["", huge], purpose="document")
    sent = fake.embedding_requests()[0].body["input"]
    assert sent[0] == " "
    assert huge.startswith(sent[1]) and count_tokens(sent[1]) <= 8192
    assert len(result.vectors) == 2


def _partial(request: Request) -> Reply:
    n = len(request.body["input"])
    data = [{"object": "embedding", "index": i, "embedding": vector_for("x", 8)} for i in range(n - 1)]
    return Reply(200, {"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": 1}})


def _repeated_index(request: Request) -> Reply:
    data = [{"object": "embedding", "index": 0, "embedding": vector_for("x", 8)} for _ in request.body["input"]]
    return Reply(200, {"object": "list", "data": data, "model": "m", "usage": {"prompt_tokens": 1}})


async def test_a_reply_with_fewer_embeddings_is_an_error_not_a_truncation(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    fake.script.append(_partial)
    with pytest.raises(Unavailable, match="asked for 3 embeddings, the reply holds 2"):
        await embedder(fake, sleeps).embed(texts(3), purpose="document")


async def test_a_reply_with_a_repeated_index_is_an_error(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    fake.script.append(_repeated_index)
    with pytest.raises(Unavailable, match="repeated or out-of-range index 0"):
        await embedder(fake, sleeps).embed(texts(2), purpose="document")


async def test_429_is_retried_honouring_retry_after(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    fake.script.extend([RATE_LIMITED, RATE_LIMITED])
    result = await embedder(fake, sleeps).embed(["a"], purpose="document")
    assert result.vectors == [vector_for("a", 8)]
    assert sleeps.delays == [7.0, 7.0]
    assert len(fake.requests) == 3


async def test_429_stops_at_the_bound_with_limit_exceeded(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    fake.script.extend([RATE_LIMITED] * 5)
    with pytest.raises(LimitExceeded, match="Rate limit reached for requests"):
        await embedder(fake, sleeps, attempts=3).embed(["a"], purpose="document")
    assert len(fake.requests) == 3
    assert sleeps.delays == [7.0, 7.0]


async def test_5xx_is_retried_with_backoff_then_unavailable(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    fake.script.extend([SERVER_ERROR] * 4)
    with pytest.raises(Unavailable, match="HTTP 500.*The server had an error"):
        await embedder(fake, sleeps, attempts=4).embed(["a"], purpose="document")
    assert len(fake.requests) == 4
    assert sleeps.delays == [0.375, 0.75, 1.5]  # base 0.5 doubling, half fixed + half jitter (rand=0.5)


async def test_5xx_then_success_recovers(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    fake.script.append(error(503, "The engine is currently overloaded", "server_error"))
    result = await embedder(fake, sleeps).embed(["a", "b"], purpose="document")
    assert result.vectors == [vector_for("a", 8), vector_for("b", 8)]
    assert len(sleeps.delays) == 1


async def test_400_is_invalid_argument_and_not_retried(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    fake.script.append(error(400, "'$.input' is invalid. Please check the API reference."))
    with pytest.raises(InvalidArgument, match=r"HTTP 400.*'\$\.input' is invalid"):
        await embedder(fake, sleeps).embed(["a"], purpose="document")
    assert len(fake.requests) == 1 and sleeps.delays == []


async def test_an_unknown_model_is_invalid_argument_with_the_service_message(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    provider = embedder(fake, sleeps, model="text-embedding-9", dimension=8)
    with pytest.raises(InvalidArgument, match="The model `text-embedding-9` does not exist"):
        await provider.embed(["a"], purpose="document")


async def test_a_wrong_key_is_unavailable_and_never_shown(
    fake: FakeOpenAI, sleeps: RecordingSleep, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-wrong-secret-key-999"
    provider = embedder(fake, sleeps, api_key=secret)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Unavailable) as caught:
        await provider.embed(["a"], purpose="document")
    message = str(caught.value)
    assert "check the API key" in message and "Incorrect API key provided" in message
    assert secret not in message and secret not in repr(caught.value)
    assert secret not in "".join(traceback.format_exception(caught.value))
    assert secret not in repr(provider) and secret not in repr(make_settings(fake, api_key=secret))
    assert secret not in caplog.text
    assert len(fake.requests) == 1


async def test_a_key_echoed_in_a_5xx_body_is_not_logged(
    fake: FakeOpenAI, sleeps: RecordingSleep, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake.script.extend([error(502, f"upstream rejected Bearer {fake.api_key}", "server_error")] * 3)
    with pytest.raises(Unavailable) as caught:
        await embedder(fake, sleeps).embed(["a"], purpose="document")
    assert "upstream rejected Bearer ***" in str(caught.value)
    assert fake.api_key and fake.api_key not in caplog.text and fake.api_key not in str(caught.value)
    assert "retry 1 of 2" in caplog.text


async def test_a_hanging_server_times_out_and_is_retried(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    fake.script.extend([HANG, HANG])
    with pytest.raises(Unavailable, match="did not answer.*ReadTimeout"):
        await embedder(fake, sleeps, attempts=2, timeout=0.2).embed(["a"], purpose="document")
    assert len(fake.requests) == 2 and len(sleeps.delays) == 1


async def test_a_timeout_then_success_recovers(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    fake.script.append(HANG)
    result = await embedder(fake, sleeps, timeout=0.2).embed(["a"], purpose="document")
    assert result.vectors == [vector_for("a", 8)]


async def test_a_refused_connection_is_unavailable_after_retries(sleeps: RecordingSleep) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = OpenAISettings(_env_file=None, api_key=SecretStr("k"), base_url=f"http://127.0.0.1:{port}/v1")  # type: ignore[call-arg]
    client = OpenAIClient(settings, retry=RetryPolicy(attempts=2, sleep=sleeps))
    with pytest.raises(Unavailable, match="did not answer.*ConnectError"):
        await OpenAIEmbeddings(client, settings, model="text-embedding-3-small", dimension=8).embed(
            ["a"], purpose="query"
        )
    assert len(sleeps.delays) == 1


def chat(fake: FakeOpenAI, sleeps: RecordingSleep, model: str = "gpt-4o-mini") -> OpenAIChat:
    client = OpenAIClient(make_settings(fake), retry=RetryPolicy(attempts=3, sleep=sleeps, rand=lambda: 0.5))
    return OpenAIChat(client, model=model)


async def test_chat_sends_the_messages_and_reads_usage(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    messages = [ChatMessage("system", "Answer from the sources."), ChatMessage("user", "What is RAG?")]
    reply = await chat(fake, sleeps).generate(messages, temperature=0.2, max_tokens=100)
    body = fake.requests[0].body
    assert fake.requests[0].path == "/v1/chat/completions"
    assert body["messages"] == [
        {"role": "system", "content": "Answer from the sources."},
        {"role": "user", "content": "What is RAG?"},
    ]
    assert body["temperature"] == 0.2 and body["max_tokens"] == 100 and body["model"] == "gpt-4o-mini"
    assert reply.text == "You asked: What is RAG?"
    assert reply.model == "gpt-4o-mini-2024-07-18"
    assert reply.input_tokens == count_tokens("Answer from the sources.") + 4 + count_tokens("What is RAG?") + 4
    assert reply.output_tokens == count_tokens("You asked: What is RAG?")


async def test_chat_omits_unset_options_and_retries_5xx(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    fake.script.append(SERVER_ERROR)
    reply = await chat(fake, sleeps).generate([ChatMessage("user", "hi")])
    assert reply.text == "You asked: hi"
    assert "temperature" not in fake.requests[1].body and "max_tokens" not in fake.requests[1].body
    assert len(sleeps.delays) == 1


async def test_chat_rate_limit_after_retries_is_limit_exceeded(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    fake.script.extend([RATE_LIMITED] * 3)
    with pytest.raises(LimitExceeded):
        await chat(fake, sleeps).generate([ChatMessage("user", "hi")])


async def test_chat_reply_without_choices_is_unavailable(fake: FakeOpenAI, sleeps: RecordingSleep) -> None:
    fake.script.append(Reply(200, {"id": "x", "object": "chat.completion", "choices": [], "usage": {}}))
    with pytest.raises(Unavailable, match="no message text"):
        await chat(fake, sleeps).generate([ChatMessage("user", "hi")])


def registered(hook: str) -> dict[str, Any]:
    manager = pluggy.PluginManager("bigrag")
    manager.add_hookspecs(hookspecs)
    manager.load_setuptools_entrypoints("bigrag", name="openai")
    found: dict[str, Any] = {}
    getattr(manager.hook, hook)(register=lambda name, factory: found.__setitem__(name, factory))
    return found


async def test_entry_point_factories_read_the_environment(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", fake.api_key or "")
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    monkeypatch.setenv("OPENAI_CHAT_MODEL", "gpt-4.1-mini")
    embeddings = registered("register_embedding_providers")["openai"](model=None, dimension=8)
    assert isinstance(embeddings, EmbeddingProvider)
    assert (embeddings.model, embeddings.dimension) == ("text-embedding-3-small", 8)
    assert (await embeddings.embed(["a"], purpose="query")).vectors == [vector_for("a", 8)]
    chat_provider = registered("register_chat_providers")["openai"](model=None)
    assert isinstance(chat_provider, ChatProvider) and chat_provider.model == "gpt-4.1-mini"
    assert (await chat_provider.generate([ChatMessage("user", "hi")])).text == "You asked: hi"


def test_the_official_endpoint_without_a_key_is_refused_early(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(Unavailable, match="OPENAI_API_KEY is not set"):
        registered("register_embedding_providers")["openai"](model=None, dimension=None)
