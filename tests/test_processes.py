"""Several processes on one Postgres store: the audit chain, the outbox relay's lease and key revocation hold
across processes, not only across engines in one process (those tests run on both stores elsewhere)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from typing import Any

import pytest
from conftest import call, http_session, run_together, server_env
from mcp import MCPError

from bigrag_mcp.services.keys import create_key
from bigrag_mcp.services.outbox import OutboxRelay
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.services.webhooks import create_webhook, enqueue_webhook_event
from bigrag_mcp.settings import Settings
from bigrag_mcp.testing.fake_http import Reply, Request, ScriptedHTTPServer

pytestmark = [pytest.mark.anyio, pytest.mark.postgres_only]

PROCESSES = 3

AUDIT_WORKER = """
import asyncio, sys
from bigrag_mcp.services.audit import append_audit
from bigrag_mcp.store.db import Database

async def main():
    db = Database(sys.argv[1])
    async with db.engine.connect():
        pass  # connected before the start
    print("ready", flush=True)
    sys.stdin.readline()
    async def one(i):
        async with db.session() as session:
            await append_audit(session, actor_key_id=sys.argv[2], action="document.uploaded", resource_type="document",
                               resource_id=f"{sys.argv[2]}-{i}")
    await asyncio.gather(*(one(i) for i in range(20)))
    await db.close()

asyncio.run(main())
"""

RELAY_WORKER = """
import asyncio, sys
from bigrag_mcp.services.outbox import OutboxRelay
from bigrag_mcp.services.webhooks import WebhookSender
from bigrag_mcp.store.db import Database

async def main():
    db = Database(sys.argv[1])
    relay = OutboxRelay(db, {}, WebhookSender(db, allow_private=True))
    await relay.status()  # connected and warmed up before the start
    print("ready", flush=True)
    sys.stdin.readline()
    print((await relay.run_once(limit=500)).claimed, flush=True)
    await relay.close()
    await db.close()

asyncio.run(main())
"""


def cli(settings: Settings, *args: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "bigrag_mcp", *args], env=server_env(settings), capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_audit_chain_stays_one_chain_under_appends_from_several_processes(settings: Settings) -> None:
    url = settings.resolved_database_url
    run_together(AUDIT_WORKER, [(url, f"p{i}") for i in range(PROCESSES)])
    verified = cli(settings, "audit", "verify")
    assert (verified["ok"], verified["rows_checked"], verified["head_id"]) == (True, 20 * PROCESSES, 20 * PROCESSES)


class Receiver(ScriptedHTTPServer):
    """A webhook endpoint that accepts every delivery (and records each request)."""

    def answer(self, request: Request) -> Reply:
        return Reply(200, {})


async def test_relays_in_several_processes_deliver_each_row_exactly_once(settings: Settings, rt: Runtime) -> None:
    with Receiver() as receiver:
        async with rt.db.session() as s:
            await create_webhook(s, f"{receiver.url}/hooks", ["document.uploaded"], allow_private=True)
        async with rt.db.session() as s:
            for i in range(60):
                await enqueue_webhook_event(s, "document.uploaded", {"document_id": f"d{i}"})
        url = settings.resolved_database_url
        claimed = [int(out) for out in run_together(RELAY_WORKER, [(url,)] * PROCESSES)]
        delivered = Counter(r.headers["x-bigrag-delivery"] for r in receiver.requests)
    assert sum(claimed) == 60 and sum(1 for n in claimed if n) >= 2, claimed  # the relays really raced
    assert len(delivered) == 60 and set(delivered.values()) == {1}
    status = await OutboxRelay(rt.db, {}, None).status()
    assert status["totals"] == {"pending": 0, "sent": 60, "parked": 0}, status


async def test_a_key_revoked_through_one_server_is_refused_by_another_on_its_next_call(
    rt: Runtime, admin_key: str, http_server: Any
) -> None:
    first, second = http_server("streamable-http"), http_server("streamable-http")
    _, reader = await create_key(rt.db, name="reader", scopes=["collection:read"])
    async with http_session(first, admin_key) as admin, http_session(second, reader) as client:
        await call(client, "collections_list")
        await call(client, "collections_list")  # the second server has the key cached now
        key_id = next(k["id"] for k in (await call(admin, "api_keys_list"))["keys"] if k["name"] == "reader")
        await call(admin, "api_keys_revoke", key_id=key_id)
        with pytest.raises(MCPError):
            await client.call_tool("collections_list", {})
