"""Reranking through query, query_multi and chat on the SDK's in-memory client: a test reranker plugin, and the
Cohere plugin's reranker against its local fake of the Cohere API."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from conftest import call, mcp_session, refused
from mcp import Client
from sqlalchemy import func, select

from bigrag_mcp.errors import LimitExceeded
from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.plugins import describe, plugin_manager
from bigrag_mcp.services.keys import create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings
from bigrag_mcp.store.models import UsageEvent
from bigrag_mcp.types import Reranker, RerankerFactory

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins" / "cohere" / "tests"))
from fake_cohere import RATE_LIMITED, FakeCohere, relevance

pytestmark = pytest.mark.anyio

ACME = {"tenant_id": "acme"}
ACME_TEXTS = [
    "Acme refunds are paid within five business days.",
    "Acme refund requests go to the billing desk.",
    "Acme shipping to Europe takes three days by air.",
    "Acme passwords are rotated every ninety days.",
    "Acme support answers refund questions by email.",
]
GLOBEX_TEXTS = [
    "Globex refunds are paid within ninety days.",
    "Globex refund requests need a signed form.",
    "Globex shipping takes two weeks.",
]
QUESTION = "refunds paid within days"
Ranking = list[tuple[int, float]]


class Reversing:
    """A reranker for tests: ranks the documents it gets in reverse order, scoring the last 1.0."""

    name = "reverse"

    def __init__(self, model: str | None, plugin: RerankPlugin) -> None:
        self.model = model or "reverse-1"
        self.plugin = plugin
        plugin.made += 1

    async def rerank(self, query: str, documents: Sequence[str], top_n: int) -> Ranking:
        self.plugin.calls.append((query, list(documents), top_n))
        if self.plugin.script:
            return self.plugin.script.pop(0)(len(documents))
        n = len(documents)
        return [(i, (i + 1) / n) for i in reversed(range(n))][:top_n]

    async def aclose(self) -> None:
        self.plugin.closed += 1


class RerankPlugin:
    """Registers the "reverse" reranker through the hook, as a third-party plugin would; keeps what it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], int]] = []
        self.script: list[Callable[[int], Ranking]] = []  # replaces the next rankings (or raises)
        self.made = 0
        self.closed = 0

    @hookimpl
    def register_rerankers(self, register: Callable[[str, RerankerFactory], None]) -> None:
        register("reverse", lambda *, model: Reversing(model, self))


def raising(exc: Exception) -> Callable[[int], Ranking]:
    def ranking(n: int) -> Ranking:
        raise exc

    return ranking


@pytest.fixture
def plugin() -> RerankPlugin:
    return RerankPlugin()


@pytest.fixture
async def rt(settings: Settings, plugin: RerankPlugin) -> AsyncIterator[Runtime]:
    """The runtime of conftest's `admin`, with the test reranker plugin registered."""
    runtime = await Runtime.open(settings, plugins=(plugin,))
    yield runtime
    await runtime.close()


async def seed(admin: Client) -> None:
    """A shared collection with five acme chunks and three globex chunks (one document each, one chunk each)."""
    await call(admin, "collections_create", collection="shared", tenant_field="tenant_id", chunk_strategy="paragraph")
    for tenant, texts in (("acme", ACME_TEXTS), ("globex", GLOBEX_TEXTS)):
        for i, text in enumerate(texts):
            topic = "refunds" if "refund" in text else "other"
            await call(admin, "documents_upload", collection="shared", text=text, metadata={"tenant_id": tenant, "topic": topic, "n": i})


async def queries_metered(rt: Runtime) -> int:
    async with rt.db.session() as s:
        return int(await s.scalar(select(func.count()).select_from(UsageEvent).where(UsageEvent.operation.in_(("query", "chat")))) or 0)


async def test_the_rerankers_order_and_scores_replace_the_search_order(admin: Client, plugin: RerankPlugin, rt: Runtime) -> None:
    await seed(admin)
    plain = await call(admin, "query", collection="shared", query=QUESTION, top_k=50, filters=ACME)
    order = [r["id"] for r in plain["results"]]
    assert len(order) == 5 and plain["timings"]["rerank_ms"] is None
    assert all(r["retrieval_score"] is None for r in plain["results"])

    reranked = await call(admin, "query", collection="shared", query=QUESTION, top_k=2, filters=ACME, rerank="reverse")

    [(query, documents, top_n)] = plugin.calls
    assert (query, documents, top_n) == (QUESTION, [r["text"] for r in plain["results"]], 2)  # the pool, in search order
    rows = reranked["results"]
    assert [r["id"] for r in rows] == order[::-1][:2]
    assert [r["score"] for r in rows] == [1.0, 0.8]
    search_scores = {r["id"]: r["score"] for r in plain["results"]}
    assert [r["retrieval_score"] for r in rows] == [search_scores[r["id"]] for r in rows]
    assert reranked["timings"]["rerank_ms"] >= 0
    assert await queries_metered(rt) == 2
    await call(admin, "query", collection="shared", query=QUESTION, top_k=2, filters=ACME, rerank="reverse")
    assert (plugin.made, plugin.closed) == (1, 0)  # one reranker, kept open across calls; the runtime closes it
    await rt.close()
    assert plugin.closed == 1


async def test_the_candidate_pool_is_four_times_top_k_between_50_and_200(admin: Client, plugin: RerankPlugin) -> None:
    await call(admin, "collections_create", collection="many", chunk_size=64, chunk_overlap=0, chunk_strategy="paragraph")
    text = "\n\n".join(f"Paragraph number {i:03d} about the refunds." for i in range(260))
    assert (await call(admin, "documents_upload", collection="many", text=text))["document"]["chunk_count"] == 260
    for top_k in (1, 20, 60):
        result = await call(admin, "query", collection="many", query="refunds", top_k=top_k, rerank="reverse")
        assert len(result["results"]) == top_k
    assert [(len(documents), top_n) for _, documents, top_n in plugin.calls] == [(50, 1), (80, 20), (200, 60)]


async def test_the_reranker_only_reads_one_tenants_texts(rt: Runtime, admin: Client, plugin: RerankPlugin) -> None:
    await seed(admin)
    _, pinned = await create_key(rt.db, name="acme-app", scopes=["query:read", "chat:write"], collection="shared", tenant="acme")
    async with mcp_session(rt, pinned) as client:
        own = await call(client, "query", collection="shared", query="globex refunds ninety days", top_k=10, rerank="reverse")
        other = await refused(client, "query", collection="shared", query=QUESTION, filters={"tenant_id": "globex"}, rerank="reverse")
        chat = await call(client, "chat", collection="shared", message="globex refunds ninety days", top_k=3, rerank="reverse")
    filtered = await call(admin, "query", collection="shared", query=QUESTION, filters={"tenant_id": "globex", "topic": "refunds"}, rerank="reverse")
    refused_multi = await refused(admin, "query", collection="shared", query=QUESTION, filters={"tenant_id": {"$in": ["acme", "globex"]}}, rerank="reverse")

    assert other.startswith("permission_denied:") and refused_multi.startswith("tenant_required:")
    assert [sorted(documents) for _, documents, _ in plugin.calls] == [sorted(ACME_TEXTS), sorted(ACME_TEXTS), sorted(GLOBEX_TEXTS[:2])]
    assert {r["metadata"]["tenant_id"] for r in own["results"]} == {"acme"} and len(own["results"]) == 5
    assert {s["metadata"]["tenant_id"] for s in chat["sources"]} == {"acme"} and len(chat["sources"]) == 3
    assert [r["text"] for r in filtered["results"]] == plugin.calls[2][1][::-1]


async def test_min_score_applies_to_the_rerankers_score(admin: Client, plugin: RerankPlugin) -> None:
    await seed(admin)
    result = await call(admin, "query", collection="shared", query=QUESTION, top_k=10, filters=ACME, min_score=0.7, rerank="reverse")
    assert [r["score"] for r in result["results"]] == [1.0, 0.8]
    assert all(r["retrieval_score"] < 0.7 for r in result["results"])  # hash-embedding cosines: the search kept them all
    assert len(plugin.calls[0][1]) == 5


async def test_rows_without_text_follow_the_reranked_rows(rt: Runtime, admin: Client, plugin: RerankPlugin) -> None:
    await call(admin, "collections_create", collection="mixed")
    for text in ACME_TEXTS[:3]:
        await call(admin, "documents_upload", collection="mixed", text=text)
    [vector] = (await rt.embedder("hash", None, 384).embed([QUESTION], purpose="query")).vectors
    await call(admin, "vectors_upsert", collection="mixed", vectors=[{"id": "raw-1", "vector": vector, "metadata": {}}])
    plain = await call(admin, "query", collection="mixed", query=QUESTION, top_k=10)
    assert plain["results"][0]["id"] == "raw-1"  # the raw vector is the query's own: best by search score

    result = await call(admin, "query", collection="mixed", query=QUESTION, top_k=10, rerank="reverse")
    texts = [r["text"] for r in plain["results"] if r["text"]]
    assert plugin.calls[0][1] == texts
    assert [r["text"] for r in result["results"]] == [*texts[::-1], None]
    raw = result["results"][-1]
    assert raw["id"] == "raw-1" and raw["score"] == raw["retrieval_score"] == plain["results"][0]["score"]


async def test_query_multi_reranks_all_collections_candidates_in_one_ranking(admin: Client, plugin: RerankPlugin) -> None:
    for name, texts in (("one", ACME_TEXTS[:3]), ("two", GLOBEX_TEXTS)):
        await call(admin, "collections_create", collection=name)
        for text in texts:
            await call(admin, "documents_upload", collection=name, text=text)
    merged = await call(admin, "query_multi", collections=["one", "two"], query=QUESTION, top_k=50)
    result = await call(admin, "query_multi", collections=["one", "two"], query=QUESTION, top_k=4, rerank="reverse")
    [(_, documents, top_n)] = plugin.calls
    assert (documents, top_n) == ([r["text"] for r in merged["results"]], 4)
    assert [r["id"] for r in result["results"]] == [r["id"] for r in merged["results"]][::-1][:4]
    assert [r["score"] for r in result["results"]] == [1.0, 5 / 6, 4 / 6, 3 / 6]
    assert result["timings"]["rerank_ms"] is not None


async def test_chat_cites_the_reranked_sources(admin: Client, plugin: RerankPlugin) -> None:
    await seed(admin)
    plain = await call(admin, "query", collection="shared", query=QUESTION, top_k=50, filters=ACME)
    result = await call(admin, "chat", collection="shared", message=QUESTION, filters=ACME, top_k=2, rerank="reverse")
    assert [s["id"] for s in result["sources"]] == [r["id"] for r in plain["results"]][::-1][:2]
    assert [s["score"] for s in result["sources"]] == [1.0, 0.8] and result["generation"] == "extractive"


@pytest.mark.parametrize("tool", ["query", "query_multi", "chat"])
async def test_an_unknown_reranker_is_refused_naming_the_installed_ones(rt: Runtime, admin: Client, plugin: RerankPlugin, tool: str) -> None:
    await seed(admin)
    target = {"collections": ["shared"], "query": QUESTION} if tool == "query_multi" else {"collection": "shared"}
    text_arg = {"message": QUESTION} if tool == "chat" else ({} if tool == "query_multi" else {"query": QUESTION})
    text = await refused(admin, tool, **target, **text_arg, filters=ACME, rerank="nope")
    assert text == "invalid_argument: unknown reranker 'nope'; installed: reverse"
    assert plugin.calls == [] and await queries_metered(rt) == 0


@pytest.mark.parametrize(
    ("ranking", "expected"),
    [
        (raising(LimitExceeded("reverse: quota reached; try again later")), "limit_exceeded: reverse: quota reached; try again later"),
        (raising(RuntimeError("socket closed")), "unavailable: reranker 'reverse' failed: RuntimeError: socket closed"),
        (lambda n: [(n, 1.0)], "unavailable: reranker 'reverse' returned an invalid ranking for 5 documents"),
        (lambda n: [(0, 1.0), (0, 0.5)], "unavailable: reranker 'reverse' returned an invalid ranking for 5 documents"),
        (lambda n: [(0, float("nan"))], "unavailable: reranker 'reverse' returned an invalid ranking for 5 documents"),
    ],
)
async def test_a_failing_reranker_fails_the_call_with_its_code_unmetered(
    rt: Runtime, admin: Client, plugin: RerankPlugin, ranking: Callable[[int], Ranking], expected: str
) -> None:
    await seed(admin)
    plugin.script.extend([ranking, ranking])
    assert await refused(admin, "query", collection="shared", query=QUESTION, filters=ACME, rerank="reverse") == expected
    assert await refused(admin, "query_multi", collections=["shared"], query=QUESTION, filters=ACME, rerank="reverse") == expected
    assert await queries_metered(rt) == 0


def test_the_plugins_command_lists_the_rerank_hook() -> None:
    import bigrag_cohere.plugin

    rows = {row["name"]: row for row in describe(plugin_manager("", extra=(bigrag_cohere.plugin, RerankPlugin())))}
    cohere = next(row for row in rows.values() if row["module"] == "bigrag_cohere.plugin")
    assert "register_rerankers" in cohere["hooks"]
    assert any(row["hooks"] == ["register_rerankers"] for row in rows.values() if row["module"] == "RerankPlugin")


async def test_cohere_reranks_a_query_end_to_end(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import bigrag_cohere.plugin

    question = "refund requests billing desk"
    with FakeCohere() as fake:
        monkeypatch.setenv("COHERE_API_KEY", fake.api_key)
        monkeypatch.setenv("COHERE_BASE_URL", fake.url)
        monkeypatch.setenv("COHERE_MAX_ATTEMPTS", "1")
        rt = await Runtime.open(settings, plugins=(bigrag_cohere.plugin,))
        try:
            assert isinstance(rt.registry.reranker("cohere")(model=None), Reranker)
            _, key = await create_key(rt.db, name="admin", scopes=["*:*"])
            async with mcp_session(rt, key) as admin:
                await seed(admin)
                plain = await call(admin, "query", collection="shared", query=question, top_k=50, filters=ACME)
                result = await call(admin, "query", collection="shared", query=question, top_k=3, filters=ACME, rerank="cohere")
                fake.script.append(RATE_LIMITED)
                limited = await refused(admin, "query", collection="shared", query=question, filters=ACME, rerank="cohere")
        finally:
            await rt.close()
    [body, _] = fake.bodies("/v2/rerank")
    assert body == {"model": "rerank-v3.5", "query": question, "documents": [r["text"] for r in plain["results"]], "top_n": 3}
    best = sorted(ACME_TEXTS, key=lambda t: -relevance(question, t))[:3]
    assert [r["text"] for r in result["results"]] == best
    assert [r["score"] for r in result["results"]] == [relevance(question, t) for t in best]
    assert result["results"][0]["text"] == "Acme refund requests go to the billing desk."
    assert limited.startswith("limit_exceeded:") and "limited to 40 API calls / minute" in limited
