"""Three `serve --transport streamable-http` replicas on one Postgres store, driven through the SDK's HTTP client.

Each write goes through one replica and is checked through another on its very next call; the replicas' outbox
relays compete for the same rows; the audit chain the three appended to verifies afterwards.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import ALL, call, http_session, refused, server_env
from mcp import Client
from mcp.shared.exceptions import MCPError
from sqlalchemy import func, select

from bigrag_mcp.services.audit import verify_chain
from bigrag_mcp.services.keys import create_key
from bigrag_mcp.settings import Settings
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import OutboxEvent
from bigrag_mcp.testing.fake_http import Reply, Request, ScriptedHTTPServer
from bigrag_mcp.testing.replicas import serve_replicas

pytestmark = pytest.mark.anyio
SHARED = "shared"
POLL_SECONDS = 0.05  # between looks at a condition that another process brings about; bounded by `within`


class Receiver(ScriptedHTTPServer):
    """Webhook endpoint and OpenMeter events API in one: accepts everything, keeps each request."""

    def answer(self, request: Request) -> Reply:
        return Reply(200, {"ok": True})

    def idempotency_keys(self) -> list[str]:
        """One key per delivery received: the webhook delivery id, or the billing event's id."""
        return [r.headers["x-bigrag-delivery"] if r.path == "/hook" else r.body["id"] for r in list(self.requests)]


async def eventually(condition: Any, *, within: float = 60.0) -> None:
    """Wait until `condition()` (async) is true, polling; fail after `within` seconds."""
    with anyio.fail_after(within):
        while not await condition():
            await anyio.sleep(POLL_SECONDS)


async def found(client: Client, tenant: str, text: str) -> list[str]:
    """Document ids of `tenant` that a keyword query for `text` returns (a fresh call, nothing cached here)."""
    answer = await call(client, "query", collection=SHARED, query=text, top_k=50, search_mode="keyword",
                        filters={"tenant_id": tenant})
    return sorted({row["document_id"] for row in answer["results"]})


@dataclass
class Deployment:
    """Three replicas' base URLs, an admin key, the store (to read the outbox), and the receiver their relays
    deliver billing events and webhooks to."""

    urls: list[str]
    admin_key: str
    store: Database
    receiver: Receiver


async def legacy_sessions_live_in_one_replica(issuer: str, other: str, key: str) -> None:
    """A client on the 2025-11-25 handshake gets a session id that only the replica that issued it knows."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json, text/event-stream"}
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "legacy", "version": "1"}}
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:
        started = await http.post(f"{issuer}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello})
        session = {"mcp-session-id": started.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        await http.post(f"{issuer}/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        assert (await http.post(f"{issuer}/mcp", json=listing, headers=session)).status_code == 200
        elsewhere = await http.post(f"{other}/mcp", json=listing, headers=session)
        assert elsewhere.status_code == 404 and "Session not found" in elsewhere.text


@pytest.fixture
async def deployment(
    request: pytest.FixtureRequest, settings: Settings, postgres_store: str, tmp_path: Path
) -> AsyncIterator[Deployment]:
    """Three replicas of the vector backend named by the test's parameter, started together on an empty Postgres
    database (so they migrate it at once); their stderr is kept in the test's temporary folder."""
    store = Database(postgres_store)
    with Receiver() as receiver:
        env = server_env(
            settings,
            BIGRAG_DATABASE_URL=postgres_store,
            BIGRAG_VECTOR_BACKEND=request.param,
            BIGRAG_LOAD_PLUGINS="billing,pgvector",
            BIGRAG_BILLING_EXPORTERS=json.dumps({"openmeter": {"base_url": receiver.url}}),
            BIGRAG_WEBHOOK_ALLOW_PRIVATE="true",
            BIGRAG_RELAY_INTERVAL_S="0.1",  # every relay looks often, so they race for the same rows
            BIGRAG_COMPUTE_THREADS="1",
        )
        async with serve_replicas(env, 3, log_dir=tmp_path) as urls:
            _, admin_key = await create_key(store, name="admin", scopes=ALL)
            yield Deployment(urls, admin_key, store, receiver)
    await store.close()


@pytest.mark.parametrize("deployment", ["memory", "pgvector"], indirect=True)
async def test_three_replicas_share_one_store(deployment: Deployment) -> None:
    (url_a, url_b, url_c), admin_key, store, receiver = deployment.urls, deployment.admin_key, deployment.store, deployment.receiver
    await legacy_sessions_live_in_one_replica(url_a, url_b, admin_key)
    async with AsyncExitStack() as stack:
        a, b, c = [await stack.enter_async_context(http_session(url, admin_key, timeout=60)) for url in (url_a, url_b, url_c)]
        await call(a, "webhooks_create", url=f"{receiver.url}/hook", events=["document.*", "tenant.offboarded"])
        assert (await refused(c, "query", collection=SHARED, query="x", filters={"tenant_id": "acme"})).startswith("not_found")
        await call(b, "collections_create", collection=SHARED, tenant_field="tenant_id")
        assert await found(c, "acme", "orchard") == []  # C holds the (empty) partition now, so it must follow writes

        # a document uploaded through A is found through C (and B) on their next call
        doc = (await call(a, "documents_upload", collection=SHARED, text="Apples ripen in the orchard.",
                          metadata={"tenant_id": "acme"}))["document"]["id"]
        assert await found(c, "acme", "orchard") == [doc]
        assert await found(b, "acme", "orchard") == [doc]

        # writes through all three at once: every one is seen everywhere, and the relays get a burst of rows
        burst: dict[str, list[str]] = {}

        async def upload_many(client: Client, name: str) -> None:
            for i in range(4):
                up = await call(client, "documents_upload", collection=SHARED, text=f"Pears number {name}{i} in the orchard.",
                                metadata={"tenant_id": "acme"})
                burst.setdefault(name, []).append(up["document"]["id"])

        async with anyio.create_task_group() as tasks:
            for name, client in (("a", a), ("b", b), ("c", c)):
                tasks.start_soon(upload_many, client, name)
        everything = sorted([doc, *(d for docs in burst.values() for d in docs)])
        for client in (a, b, c):
            assert await found(client, "acme", "orchard") == everything

        # a delete through B is gone through C and A on their next call
        assert (await call(b, "documents_delete", collection=SHARED, document_id=doc, tenant="acme"))["deleted"] == [doc]
        assert doc not in await found(c, "acme", "orchard")
        assert doc not in await found(a, "acme", "orchard")

        # offboarding through A: C no longer finds the tenant, its key dies on C, and B refuses its writes
        made = await call(b, "api_keys_create", name="globex app", scopes=["query:read", "document:upload"],
                          collection=SHARED, tenant="globex")
        globex = await stack.enter_async_context(http_session(url_c, made["secret"], timeout=60))
        kept = (await call(globex, "documents_upload", collection=SHARED, text="Plums in the orchard."))["document"]["id"]
        assert await found(a, "globex", "orchard") == [kept]
        assert await found(c, "globex", "orchard") == [kept]
        offboarded = await call(a, "tenants_offboard", collection=SHARED, tenant="globex")
        assert (offboarded["documents_removed"], offboarded["keys_revoked"]) == (1, 1)
        assert await found(c, "globex", "orchard") == []
        with pytest.raises(MCPError):
            await globex.call_tool("query", {"collection": SHARED, "query": "orchard"})
        assert (await refused(b, "documents_upload", collection=SHARED, text="back again",
                              metadata={"tenant_id": "globex"})).startswith("permission_denied")
        assert len(await found(c, "acme", "orchard")) == len(everything) - 1  # the other tenant is untouched

        # a key revoked through B fails on A and C on their next call, inside sessions already open
        reader = await call(b, "api_keys_create", name="reader", scopes=["query:read"], collection=SHARED, tenant="acme")
        on_a = await stack.enter_async_context(http_session(url_a, reader["secret"], timeout=60))
        on_c = await stack.enter_async_context(http_session(url_c, reader["secret"], timeout=60))
        for session in (on_a, on_c):
            assert await found(session, "acme", "orchard")
        await call(b, "api_keys_revoke", key_id=reader["key"]["id"])
        for session in (on_a, on_c):
            with pytest.raises(MCPError):
                await session.call_tool("query", {"collection": SHARED, "query": "orchard"})

    # the three relays shared the outbox: every row delivered, none twice
    async def outbox_drained() -> bool:
        async with store.session() as session:
            return not await session.scalar(select(func.count()).where(OutboxEvent.status != "sent"))

    await eventually(outbox_drained)
    async with store.session() as session:
        rows = (await session.execute(select(OutboxEvent.kind, OutboxEvent.id, OutboxEvent.payload))).all()
    expected = sorted(row_id if kind == "webhook" else payload["id"] for kind, row_id, payload in rows)
    delivered = Counter(receiver.idempotency_keys())
    assert sorted(delivered) == expected and set(delivered.values()) == {1}
    # 14 uploads (document.uploaded), 1 delete, 1 offboarding; billing: 2 per upload, 1 per query (14; keyword
    # queries embed nothing, so they bill no tokens)
    assert Counter(kind for kind, _, _ in rows) == {"webhook": 16, "billing": 2 * 14 + 14}

    # three processes appended to one audit chain, and it verifies (what `bigrag-mcp audit verify` runs)
    verified = await verify_chain(store)
    assert verified.ok and verified.rows_checked > 20, verified
