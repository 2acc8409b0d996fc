"""Usage through the MCP tools: counts match the calls made, tokens come from the provider's reply, tenants apart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
from conftest import call, mcp_session

from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.services.keys import create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings
from bigrag_mcp.types import EmbeddingProviderFactory, Embeddings, Purpose

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]
TOKENS_PER_TEXT = 7


class MeteredEmbedder:
    """Reports TOKENS_PER_TEXT tokens per input, as a hosted provider's reply would; one batch of 2 at a time."""

    name = "metered"
    model = "metered-1"
    dimension = 4
    max_batch = 2

    def __init__(self, calls: list[int]) -> None:
        self.calls = calls

    async def embed(self, texts: Sequence[str], *, purpose: Purpose) -> Embeddings:
        self.calls.append(len(texts))
        return Embeddings([[1.0, float(len(t)), 0.0, 1.0] for t in texts], tokens=TOKENS_PER_TEXT * len(texts))


class MeteredPlugin:
    def __init__(self) -> None:
        self.calls: list[int] = []

    @hookimpl
    def register_embedding_providers(self, register: Callable[[str, EmbeddingProviderFactory], None]) -> None:
        register("metered", lambda *, model, dimension: MeteredEmbedder(self.calls))


@pytest.fixture
async def metered_rt(settings: Settings, tmp_path: Any) -> AsyncIterator[tuple[Runtime, MeteredPlugin]]:
    plugin = MeteredPlugin()
    price_file = tmp_path / "prices.toml"
    price_file.write_text('[embedding.metered."metered-1"]\nusd_per_million_tokens = 1000.0\n', encoding="utf-8")
    rt = await Runtime.open(settings.model_copy(update={"price_file": price_file}), plugins=(plugin,))
    yield rt, plugin
    await rt.close()


async def test_usage_counts_calls_and_takes_tokens_from_the_provider(metered_rt: tuple[Runtime, MeteredPlugin]) -> None:
    rt, plugin = metered_rt
    _, admin_key = await create_key(rt.db, name="admin", scopes=["*:*"])
    async with mcp_session(rt, admin_key) as admin:
        await call(admin, "collections_create", collection="shared", tenant_field="tenant_id", embedding_provider="metered", chunk_size=64, chunk_overlap=0)
        await call(admin, "collections_create", collection="plain", embedding_provider="hash", dimension=8)
        text = "\n\n".join(f"Paragraph {i} is about item {i} only." for i in range(5))  # five chunks
        up = await call(admin, "documents_upload", collection="shared", text=text, metadata={"tenant_id": "acme"})
        assert up["document"]["chunk_count"] == 5 and up["embedding_tokens"] == 5 * TOKENS_PER_TEXT
        await call(admin, "documents_upload", collection="shared", text="globex item", metadata={"tenant_id": "globex"})
        for _ in range(3):
            await call(admin, "query", collection="shared", query="item", filters={"tenant_id": "acme"})
        await call(admin, "query", collection="shared", query="item", filters={"tenant_id": "globex"})
        await call(admin, "documents_upload", collection="plain", text="no tokens reported here")
        report = await call(admin, "usage_get", window_days=1)
        acme = await call(admin, "usage_get", collection="shared", tenant="acme")

    assert plugin.calls[:3] == [2, 2, 1]  # the core batched by the provider's max_batch
    rows = {(r["collection"], r["tenant"]): r for r in report["by_tenant"]}
    assert rows[("shared", "acme")]["queries"] == 3 and rows[("shared", "globex")]["queries"] == 1
    assert rows[("shared", "acme")]["embedding_tokens"] == (5 + 3) * TOKENS_PER_TEXT
    assert rows[("shared", "acme")]["documents"] == 1 and rows[("shared", "acme")]["chunks"] == 5
    shared = next(r for r in report["by_collection"] if r["collection"] == "shared")
    assert shared["embedding_tokens"] == (5 + 3 + 1 + 1) * TOKENS_PER_TEXT and shared["embedding_tokens_estimated"] == 0
    assert shared["embedding_cost_usd_estimate"] == pytest.approx(10 * TOKENS_PER_TEXT * 1000.0 / 1e6)
    plain = next(r for r in report["by_collection"] if r["collection"] == "plain")
    assert plain["embedding_tokens"] > 0 and plain["embedding_tokens_estimated"] == plain["embedding_tokens"]
    assert report["queries_total"] == 4 and report["documents_total"] == 3
    assert acme["queries_total"] == 3 and {(r["collection"], r["tenant"]) for r in acme["by_tenant"]} == {("shared", "acme")}
    assert sum(day["queries"] for day in acme["timeline"]) == 3
