"""Limits: declared in the policy, checked before the work in the store, settled with the usage, shown to callers."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import call, http_session, mcp_session, refused, run_together, server_env
from sqlalchemy import func, select, text

from bigrag_mcp.errors import LimitExceeded, Unavailable
from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.limits.counters import bump_statement
from bigrag_mcp.limits.engine import Counter, Scope, counted_against, counter_key, up_front
from bigrag_mcp.limits.window import window_of
from bigrag_mcp.policy import PolicyError, Principal, evaluate, load_policy, parse_policy, target_collection
from bigrag_mcp.policy.engine import CollectionFacts
from bigrag_mcp.services import collections, documents
from bigrag_mcp.services.keys import create_key
from bigrag_mcp.services.ledger import Activity, Caller
from bigrag_mcp.services.offboarding import offboard
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.services.webhooks import WebhookSender, create_webhook, verify_signature
from bigrag_mcp.settings import Settings
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import AuditEntry, Document, LimitCounter, OutboxEvent, UsageEvent
from bigrag_mcp.testing.relay import FakeClock
from bigrag_mcp.types import EmbeddingProviderFactory, Embeddings, Purpose

pytestmark = [pytest.mark.anyio, pytest.mark.both_stores]
POLICIES = Path(__file__).resolve().parent.parent / "policies"
DEFAULT = files("bigrag_mcp.policy").joinpath("default.toml").read_text(encoding="utf-8")
TENANT_APP = ["query:read", "chat:write", "document:upload", "usage:read"]
MIDNIGHT = datetime(2026, 11, 28, tzinfo=UTC)


def limit(name: str, metric: str, max_: float, per: str = "day", **more: Any) -> str:
    """One [[limits]] table in TOML."""
    extra = "".join(f"{key} = {json.dumps(value) if not isinstance(value, str) or not value.startswith('{') else value}\n"
                    for key, value in more.items())
    return f'\n[[limits]]\nname = "{name}"\nmetric = "{metric}"\nmax = {max_}\nper = "{per}"\n{extra}'


@pytest.fixture
def clock() -> FakeClock:
    moment = FakeClock()
    moment.now = MIDNIGHT - timedelta(seconds=30)
    return moment


@asynccontextmanager
async def limited(settings: Settings, tmp_path: Path, limits: str, clock: FakeClock, plugins: tuple[Any, ...] = ()) -> AsyncIterator[Runtime]:
    """A runtime whose policy is the built-in one plus `limits`, on the fake clock."""
    path = tmp_path / "policy.toml"
    path.write_text(DEFAULT + limits, encoding="utf-8")
    rt = await Runtime.open(settings.model_copy(update={"policy_file": path}), plugins=plugins)
    rt.limits.clock = clock
    try:
        yield rt
    finally:
        await rt.close()


async def tenant_key(rt: Runtime, tenant: str, collection: str = "support") -> str:
    _, secret = await create_key(rt.db, name=tenant, scopes=TENANT_APP, collection=collection, tenant=tenant, role="tenant-app")
    return secret


async def count(rt: Runtime, model: Any, *where: Any) -> int:
    async with rt.db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def support(rt: Runtime, *tenants: str) -> None:
    await collections.create(rt, name="support", tenant_field="tenant_id", dimension=16)
    for tenant in tenants:
        await documents.upload(rt, "support", text=f"{tenant} refunds take five days", metadata={"tenant_id": tenant})


# --- declaring ------------------------------------------------------------------------------------------


def test_shipped_saas_example_has_a_free_and_a_pro_tier() -> None:
    policy = load_policy(POLICIES / "saas-example.toml")
    roles = {limit.applies_to.role for limit in policy.limits}
    assert roles == {"free-app", "pro-app"}
    assert {limit.metric for limit in policy.limits} >= {"requests", "queries", "storage_bytes", "cost_usd"}
    assert all(limit.applies_to.tenant == "*" or limit.applies_to.key_id == "*" for limit in policy.limits)


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (limit("a", "queries", 10, per="week"), r"line 1\d\d: limits\.0\.per: Input should be 'minute'"),
        (limit("a", "tokens", 10), r"line 1\d\d: limits\.0\.metric: Input should be 'requests'"),
        (limit("a", "queries", 10) + limit("b", "queries", 2.5), r"line 1\d\d: limits\.1: max of a queries limit must be a whole number"),
        (limit("a", "queries", 10, warn_at=[0.5, 1.5]), r"limits\.0\.warn_at: Value error|limits\.0\.warn_at: warn_at holds fractions"),
        (limit("a", "queries", 10, applies_to='{ role = "ghost" }'), r"line 1\d\d: limits\.0\.applies_to\.role: unknown role 'ghost'"),
        (limit("a", "queries", 10, applies_to='{ team = "x" }'), r"line 1\d\d: limits\.0\.applies_to\.team: Extra inputs"),
        (limit("a", "queries", 10) + limit("a", "chats", 10), r"limits: two limits are named 'a'"),
        (limit("a", "queries", 0), r"limits\.0\.max: Input should be greater than 0"),
    ],
)
def test_a_bad_limit_is_refused_with_its_line(limits: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy(DEFAULT + limits, "policy.toml")


def test_the_line_named_is_the_faulty_limits_own() -> None:
    text = DEFAULT + limit("good", "queries", 10) + limit("bad", "queries", 10, per="fortnight")
    bad_line = text.splitlines().index('per = "fortnight"') + 1
    header_line = len(text[: text.rindex("[[limits]]")].splitlines()) + 1
    with pytest.raises(PolicyError) as raised:
        parse_policy(text, "p.toml")
    assert f"line {bad_line}: limits.1.per" in str(raised.value) and header_line < bad_line


def _counts() -> list[Any]:
    cases = []
    for case_file in sorted((POLICIES / "tests").glob("*.toml")):
        data = tomllib.loads(case_file.read_text(encoding="utf-8"))
        for case in data.get("counts", []):
            cases.append(pytest.param(data, case_file, case, id=f"{case_file.stem}: {case['name']}"))
    return cases


@pytest.mark.parametrize(("data", "case_file", "case"), _counts())
def test_count_case(data: Mapping[str, Any], case_file: Path, case: Mapping[str, Any]) -> None:
    """Policy case files: the limits a call counts against, with the subject each counter keeps apart."""
    policy = load_policy((case_file.parent / data["policy"]).resolve() if "policy" in data else None)
    spec = data["keys"][case["key"]]
    principal = Principal(case["key"], frozenset(spec["scopes"]), spec.get("collection"), spec.get("tenant"), role=spec.get("role"))
    target = target_collection(policy, principal, case["tool"], case["args"])
    known = data.get("collections", {})
    facts = None if target is None else CollectionFacts(target, target in known, known.get(target, {}).get("tenant_field"))
    decision = evaluate(policy, principal, case["tool"], case["args"], facts)
    assert decision.allowed, decision.reason
    scope = Scope(principal.key_id, principal.role, decision.collection, decision.tenant or principal.tenant)
    found = counted_against(policy.limits, scope, up_front(case["tool"], decision.args))
    parts = ("key_id", "role", "collection", "tenant")
    assert [{"limit": c.limit.name, **{k: v for k, v in zip(parts, c.subject) if v is not None}} for c in found] == [
        {"role": spec.get("role"), **e} for e in case["expect"]  # the role is named by every tier's limits
    ]


def test_windows_are_calendar_utc() -> None:
    now = datetime(2026, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)
    assert window_of("minute", now).resets_at == datetime(2027, 1, 1, tzinfo=UTC)
    assert window_of("hour", now).key == "2026-12-31T23:00:00+00:00"
    assert window_of("day", now).retry_after_s(now) == 1
    assert window_of("month", now).resets_at == datetime(2027, 1, 1, tzinfo=UTC)
    assert window_of("month", datetime(2026, 2, 10, tzinfo=UTC)).resets_at == datetime(2026, 3, 1, tzinfo=UTC)
    total = window_of("total", now)
    assert total.key == "total" and total.resets_at is None and total.retry_after_s(now) is None


# --- enforcing ----------------------------------------------------------------------------------------


PER_TENANT = limit("tenant queries", "queries", 3, applies_to='{ role = "tenant-app", collection = "*", tenant = "*" }')


async def test_per_tenant_counters_refuse_with_the_reset_and_roll_over(settings: Settings, tmp_path: Path, clock: FakeClock) -> None:
    async with limited(settings, tmp_path, PER_TENANT, clock) as rt:
        await support(rt, "acme", "globex")
        acme, globex = await tenant_key(rt, "acme"), await tenant_key(rt, "globex")
        async with mcp_session(rt, acme) as client:
            for _ in range(3):
                await call(client, "query", collection="support", query="refunds")
            metered = await count(rt, UsageEvent)
            result = await client.call_tool("query", {"collection": "support", "query": "refunds"})
            assert result.is_error
            assert result.content[0].text == (  # type: ignore[union-attr]
                "limit_exceeded: tenant queries: queries 3/3 per day; resets at 2026-11-28T00:00:00Z"
            )
            assert result.structured_content is not None and result.structured_content["retry_after_s"] == 30
            assert result.structured_content["resets_at"] == "2026-11-28T00:00:00Z"
            assert await count(rt, UsageEvent) == metered  # nothing metered for the refused call
            usage = await call(client, "usage_get")
            assert [(lim["name"], lim["tenant"], lim["used"], lim["remaining"]) for lim in usage["limits"]] == [
                ("tenant queries", "acme", 3, 0)
            ]
            assert usage["limits"][0]["resets_at"].startswith("2026-11-28T00:00:00")
            async with mcp_session(rt, globex) as other:  # the other tenant of the shared collection has its own
                for _ in range(3):
                    await call(other, "query", collection="support", query="refunds")
                assert (await refused(other, "query", collection="support", query="refunds")).startswith("limit_exceeded: tenant queries")
            clock.advance(31)  # a new UTC day: the counter starts again
            await call(client, "query", collection="support", query="refunds")
            assert (await call(client, "usage_get"))["limits"][0]["used"] == 1


async def test_chats_count_once_and_settle_after_the_answer(settings: Settings, tmp_path: Path, clock: FakeClock) -> None:
    limits = limit("chats", "chats", 2, applies_to='{ tenant = "*" }') + limit(
        "chat tokens", "chat_tokens", 1000, applies_to='{ tenant = "*" }'
    )
    async with limited(settings, tmp_path, limits, clock) as rt:
        await support(rt, "acme")
        async with mcp_session(rt, await tenant_key(rt, "acme")) as client:
            for _ in range(2):
                answer = await call(client, "chat", collection="support", message="how long do refunds take?")
                assert answer["generation"] == "extractive"
            text = await refused(client, "chat", collection="support", message="how long do refunds take?")
            assert text.startswith("limit_exceeded: chats: chats 2/2 per day")
        used = {s.name: s.used for s in await rt.limits.status(None)}
        assert used == {"chats": 2, "chat tokens": 0}  # the extractive answer spent no model tokens: probes went back


async def test_a_refused_upload_writes_nothing(settings: Settings, tmp_path: Path, clock: FakeClock) -> None:
    limits = limit("docs", "documents", 2, per="total", applies_to='{ tenant = "*" }')
    async with limited(settings, tmp_path, limits, clock) as rt:
        await support(rt)
        async with mcp_session(rt, await tenant_key(rt, "acme")) as client:
            first = await call(client, "documents_upload", collection="support", text="first")
            assert (await call(client, "documents_upload", collection="support", text="first"))["deduplicated"]
            await call(client, "documents_upload", collection="support", text="second")  # the duplicate was free
            before = (await count(rt, Document), await count(rt, UsageEvent), await count(rt, AuditEntry))
            text = await refused(client, "documents_upload", collection="support", text="third")
            assert text == "limit_exceeded: docs: documents 2/2 per total; a standing cap: it frees up only when usage goes down"
            assert (await count(rt, Document), await count(rt, UsageEvent), await count(rt, AuditEntry)) == before
        async with mcp_session(rt, (await create_key(rt.db, name="ops", scopes=["*:*"]))[1]) as admin:
            await call(admin, "documents_delete", collection="support", document_id=first["document"]["id"], tenant="acme")
        async with mcp_session(rt, await tenant_key(rt, "acme")) as client:  # the delete gave the standing cap back
            await call(client, "documents_upload", collection="support", text="third")


class Tokens:
    """An embedder that reports 10 tokens a text, one text a batch, and can fail at a given batch."""

    name = "tokens"
    model = "tokens-1"
    dimension = 4
    max_batch = 1

    def __init__(self, plugin: TokensPlugin) -> None:
        self.plugin = plugin

    async def embed(self, texts: Sequence[str], *, purpose: Purpose) -> Embeddings:
        self.plugin.batches += 1
        if self.plugin.fail_at == self.plugin.batches:
            self.plugin.seen_while_failing = await self.plugin.used()
            raise Unavailable("the provider went away mid-upload")
        return Embeddings([[1.0, float(len(t)), 0.5, 1.0] for t in texts], tokens=10 * len(texts))


class TokensPlugin:
    def __init__(self) -> None:
        self.batches = 0
        self.fail_at = 0
        self.seen_while_failing: dict[str, float] = {}
        self.used: Callable[[], Any] = lambda: None

    @hookimpl
    def register_embedding_providers(self, register: Callable[[str, EmbeddingProviderFactory], None]) -> None:
        register("tokens", lambda *, model, dimension: Tokens(self))


async def test_uploads_reserve_then_settle_and_a_failure_releases(settings: Settings, tmp_path: Path, clock: FakeClock) -> None:
    plugin = TokensPlugin()
    prices = tmp_path / "prices.toml"
    prices.write_text('[embedding.tokens."tokens-1"]\nusd_per_million_tokens = 100.0\n', encoding="utf-8")
    settings = settings.model_copy(update={"price_file": prices})
    limits = (limit("tokens", "embedding_tokens", 100, applies_to='{ collection = "docs" }')
              + limit("chunks", "chunks", 50, applies_to='{ collection = "docs" }')
              + limit("spend", "cost_usd", 0.5, per="month", applies_to='{ collection = "docs" }'))
    async with limited(settings, tmp_path, limits, clock, plugins=(plugin,)) as rt:

        async def used() -> dict[str, float]:
            return {s.name: s.used for s in await rt.limits.status(None)}

        plugin.used = used
        await collections.create(rt, name="docs", embedding_provider="tokens", chunk_size=64, chunk_overlap=0)
        three = "\n\n".join(f"Paragraph {i} says one thing only." for i in range(3))
        async with mcp_session(rt, (await create_key(rt.db, name="ops", scopes=["*:*"]))[1]) as admin:
            await call(admin, "documents_upload", collection="docs", text=three)
            assert await used() == {"tokens": 30, "chunks": 3, "spend": 0.003}  # settled to the reported figures

            plugin.fail_at = plugin.batches + 2  # the second batch of the next upload fails
            text = await refused(admin, "documents_upload", collection="docs", text=three.replace("one", "another"))
            assert text.startswith("unavailable: the provider went away")
            reserved = plugin.seen_while_failing
            assert reserved["chunks"] == 6 and reserved["tokens"] > 30  # held while the upload was under way
            assert await used() == {"tokens": 30, "chunks": 3, "spend": 0.003}  # and released when it failed
            assert await count(rt, Document) == 1

            batches = plugin.batches
            big = "\n\n".join(f"Paragraph {i} is a long paragraph about many different things." for i in range(12))
            text = await refused(admin, "documents_upload", collection="docs", text=big)
            assert text.startswith("limit_exceeded: tokens: embedding_tokens 30/100 per day")
            assert plugin.batches == batches  # refused before anything was embedded
            assert await used() == {"tokens": 30, "chunks": 3, "spend": 0.003}


async def test_soft_limits_warn_once_per_threshold_with_a_signed_webhook(settings: Settings, tmp_path: Path, clock: FakeClock) -> None:
    limits = limit("soft queries", "queries", 4, mode="soft", warn_at=[0.5, 1.0], applies_to='{ tenant = "*" }')
    async with limited(settings, tmp_path, limits, clock) as rt:
        await support(rt, "acme")
        async with rt.db.session() as session:
            hook = await create_webhook(session, "http://127.0.0.1:9/hooks", ["quota.*"], allow_private=True)
        async with mcp_session(rt, await tenant_key(rt, "acme")) as client:
            for _ in range(7):
                await call(client, "query", collection="support", query="refunds")  # soft: never refused
        async with rt.db.session() as session:
            rows = list(await session.scalars(select(OutboxEvent).where(OutboxEvent.kind == "webhook")))
            audits = list(await session.scalars(select(AuditEntry).where(AuditEntry.action == "quota.warning")))
        assert sorted(r.payload["data"]["threshold"] for r in rows) == [0.5, 1.0]
        assert {r.payload["type"] for r in rows} == {"quota.warning"}
        assert [(a.resource_id, a.tenant) for a in audits] == [("soft queries", "acme")] * 2
        posted: list[httpx.Request] = []

        def receive(request: httpx.Request) -> httpx.Response:
            posted.append(request)
            return httpx.Response(204)

        async with httpx.AsyncClient(transport=httpx.MockTransport(receive)) as http:
            sender = WebhookSender(rt.db, client=http, allow_private=True)
            assert (await sender.send(rows[0].id, rows[0].target, rows[0].payload)).status == "sent"
        request = posted[0]
        assert verify_signature(hook.secret or "", request.headers["X-BigRAG-Timestamp"], request.content,
                                request.headers["X-BigRAG-Signature"])
        assert json.loads(request.content)["data"]["limit"] == "soft queries"
        clock.advance(60)  # next day: the thresholds can warn again
        async with mcp_session(rt, await tenant_key(rt, "acme")) as client:
            for _ in range(2):
                await call(client, "query", collection="support", query="refunds")
        assert await count(rt, OutboxEvent, OutboxEvent.kind == "webhook") == 3


async def test_offboarding_removes_the_tenants_counters(settings: Settings, tmp_path: Path, clock: FakeClock) -> None:
    async with limited(settings, tmp_path, PER_TENANT, clock) as rt:
        await support(rt, "acme", "globex")
        for tenant in ("acme", "globex"):
            async with mcp_session(rt, await tenant_key(rt, tenant)) as client:
                await call(client, "query", collection="support", query="refunds")
        assert await count(rt, LimitCounter) == 2
        await offboard(rt, "support", "acme")
        async with rt.db.session() as session:
            assert list(await session.scalars(select(LimitCounter.tenant))) == ["globex"]


async def test_limits_survive_a_restart(settings: Settings, tmp_path: Path, clock: FakeClock) -> None:
    limits = limit("per key", "requests", 2, per="minute", applies_to='{ key_id = "*" }')
    async with limited(settings, tmp_path, limits, clock) as rt:
        await support(rt)
        key = await tenant_key(rt, "acme")
        async with mcp_session(rt, key) as client:
            await call(client, "documents_upload", collection="support", text="x")
            await refused(client, "query", collection="support", query="x", filters={"tenant_id": "globex"})  # policy: not counted
    async with limited(settings, tmp_path, limits, clock) as rt, mcp_session(rt, key) as client:
        await call(client, "query", collection="support", query="x")
        text = await refused(client, "query", collection="support", query="x")
        assert text == "limit_exceeded: per key: requests 2/2 per minute; resets at 2026-11-28T00:00:00Z"


async def test_hard_caps_are_exact_under_concurrency_in_one_process(settings: Settings, tmp_path: Path, clock: FakeClock) -> None:
    async with limited(settings, tmp_path, limit("cap", "queries", 7), clock) as rt:
        caller = Caller(Principal("key_a", frozenset({"query:read"})), "r")
        admitted: list[int] = []

        async def one() -> None:
            try:
                await rt.limits.admit(caller, "query", {"query": "x", "search_mode": "keyword"}, "c", None)
                admitted.append(1)
            except LimitExceeded:
                pass

        async with anyio.create_task_group() as tasks:
            for _ in range(20):
                tasks.start_soon(one)
        assert len(admitted) == 7
        assert [s.used for s in await rt.limits.status(None)] == [7]


@pytest.mark.sqlite_only  # the fast path is SQLite's (a Postgres store admits on the async path)
async def test_the_fast_path_never_waits_for_a_lock(settings: Settings, tmp_path: Path, clock: FakeClock) -> None:
    """While another connection holds the write lock the fast path does nothing and says so; admission then
    waits for the lock on the async path instead, off the event loop."""
    async with limited(settings, tmp_path, limit("cap", "queries", 5), clock) as rt:
        assert rt.limits.fast is not None
        caller = Caller(Principal("key_a", frozenset({"query:read"})), "r")
        args = {"query": "x", "search_mode": "keyword"}
        await rt.limits.admit(caller, "query", args, None, None)
        rule = rt.limits.rules[0]
        subject = (None, None, None, None)
        bump = Counter(rule, subject, counter_key(rule, subject)).bump(window_of("day", clock()), 1)
        statement, rows = bump_statement("sqlite", enforce=True), [bump.row()]
        blocker = sqlite3.connect(settings.data_dir / "bigrag.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            assert rt.limits.fast.bump(statement, rows, {bump.counter_key}) is None
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert rt.limits.fast.bump(statement, rows, {bump.counter_key}) == {bump.counter_key: 2}
        assert [s.used for s in await rt.limits.status(None)] == [2]


async def test_a_settlement_that_rolls_back_leaves_the_reservation_to_release(settings: Settings, tmp_path: Path, clock: FakeClock) -> None:
    async with limited(settings, tmp_path, limit("cap", "queries", 5, applies_to='{ collection = "*" }'), clock) as rt:
        caller = Caller(Principal("key_a", frozenset({"query:read"})), "r")
        hold = await rt.limits.admit(caller, "query", {"query": "x", "search_mode": "keyword"}, "c", None)
        assert hold is not None and hold.held
        with pytest.raises(RuntimeError):
            async with rt.db.session() as session:
                await rt.limits.settle(session, replace(caller, hold=hold), Activity("query", "c"))
                assert not hold.held  # taken by the settlement...
                raise RuntimeError("the work's transaction fails after its usage was recorded")
        assert hold.held  # ...and handed back when it rolled back
        await rt.limits.release(hold)
        assert [s.used for s in await rt.limits.status(None)] == [0]


WORKER = """
import asyncio, sys
from bigrag_mcp.errors import LimitExceeded
from bigrag_mcp.limits.engine import Limits
from bigrag_mcp.limits.fastpath import SqliteFastPath
from bigrag_mcp.limits.model import Limit
from bigrag_mcp.policy import Principal
from bigrag_mcp.services.ledger import Activity, Caller
from bigrag_mcp.services.prices import PriceTable
from bigrag_mcp.store.db import Database

async def main():
    db = Database(sys.argv[1])
    rule = Limit(name="cap", metric="queries", max=40, per="day")
    limits = Limits(db, [rule], lambda: PriceTable({}), fast=SqliteFastPath.for_url(db.url))
    caller = Caller(Principal(sys.argv[2], frozenset()), "r")
    print("ready", flush=True)
    sys.stdin.readline()  # the parent starts both processes' calls together
    async def one():
        try:
            await limits.admit(caller, "query", {"query": "x", "search_mode": "keyword"}, None, None)
            return 1
        except LimitExceeded:
            return 0
    print(sum(await asyncio.gather(*(one() for _ in range(30)))), flush=True)
    limits.close()
    await db.close()

asyncio.run(main())
"""


def test_hard_caps_are_exact_across_two_processes_on_one_store(settings: Settings) -> None:
    url = settings.resolved_database_url

    async def migrate() -> None:
        database = Database(url)
        await database.migrate()
        await database.close()

    anyio.run(migrate)  # a no-op on Postgres: its database is a copy of a migrated one
    admitted = [int(out) for out in run_together(WORKER, [(url, "key_0"), (url, "key_1")])]
    assert sum(admitted) == 40 and all(n > 0 for n in admitted)

    async def stored() -> list[Any]:
        database = Database(url)
        async with database.engine.connect() as conn:
            used = (await conn.execute(text("SELECT used FROM limit_counters"))).all()
        await database.close()
        return [tuple(row) for row in used]

    assert anyio.run(stored) == [(40,)]


@pytest.mark.sqlite_only  # a server process and its HTTP path; the counters it uses run on Postgres above (CI time)
async def test_a_per_key_request_rate_over_http_is_refused_before_any_work(
    settings: Settings, tmp_path: Path, clock: FakeClock, http_server: Any
) -> None:
    # the server runs on the real clock: a day (not a minute) keeps the three calls in one window
    limits = limit("rate", "requests", 2, per="day", applies_to='{ role = "tenant-app", key_id = "*" }')
    async with limited(settings, tmp_path, limits, clock) as rt:
        await support(rt, "acme")
        key = await tenant_key(rt, "acme")
    url = http_server("streamable-http", BIGRAG_POLICY_FILE=str(tmp_path / "policy.toml"))
    async with http_session(url, key) as client:
        assert "Limits apply to this key: rate (2 requests per day)" in (client.instructions or "")
        await call(client, "query", collection="support", query="refunds")
        await call(client, "usage_get")
        result = await client.call_tool("query", {"collection": "support", "query": "refunds"})
        assert result.is_error and result.content[0].text.startswith("limit_exceeded: rate: requests 2/2 per day")  # type: ignore[union-attr]
        assert result.structured_content is not None and 1 <= result.structured_content["retry_after_s"] <= 86_400


# --- seeing them ----------------------------------------------------------------------------------------


async def test_instructions_of_a_limited_key_mention_its_limits(settings: Settings, tmp_path: Path, clock: FakeClock) -> None:
    async with limited(settings, tmp_path, PER_TENANT, clock) as rt:
        await support(rt)
        async with mcp_session(rt, await tenant_key(rt, "acme")) as client:
            text = client.instructions or ""
        assert "Limits apply to this key: tenant queries (3 queries per day)" in text
        assert text.count("Limits apply") == 1
        async with mcp_session(rt, (await create_key(rt.db, name="ops", scopes=["*:*"]))[1]) as admin:
            assert "Limits apply" not in (admin.instructions or "")


@pytest.mark.sqlite_only  # CLI processes reading the counters tested on Postgres above (CI time)
def test_cli_limits_and_policy_explain(settings: Settings, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(DEFAULT + PER_TENANT, encoding="utf-8")
    settings = settings.model_copy(update={"policy_file": policy})

    async def provision() -> str:
        rt = await Runtime.open(settings)
        try:
            await support(rt)
            info, _ = await create_key(rt.db, name="acme", scopes=TENANT_APP, collection="support", tenant="acme", role="tenant-app")
            return info.id
        finally:
            await rt.close()

    key_id = anyio.run(provision)
    env = server_env(settings, BIGRAG_POLICY_FILE=str(policy))

    def run(*args: str) -> Any:
        done = subprocess.run([sys.executable, "-m", "bigrag_mcp", *args], env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    explained = run("policy", "explain", "--key-id", key_id, "--tool", "query", "--args", '{"query": "x"}')
    assert explained["outcome"] == "allowed"
    assert [(c["name"], c["tenant"], c["used"], c["max"], c["would_admit"]) for c in explained["limits"]] == [
        ("tenant queries", "acme", 0, 3, True)
    ]
    shown = run("limits", "--key-id", key_id)
    assert [(s["name"], s["tenant"], s["used"], s["remaining"]) for s in shown] == [("tenant queries", "acme", 0, 3)]
