"""The same data plane over a `bigrag-mcp serve` subprocess: stdio, streamable HTTP and SSE, each with a key."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest
from conftest import call, http_session, refused, server_env
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError
from sqlalchemy import update

from bigrag_mcp.services.keys import create_key, list_keys, revoke_key
from bigrag_mcp.settings import Settings
from bigrag_mcp.store.models import ApiKey

pytestmark = pytest.mark.anyio
TEXT = "Apples grow on trees in the orchard.\n\nSubmarines dive deep below the ocean surface."


async def exercise(client: Client, name: str) -> None:
    """Create, upload, query with a filter, delete — each checked by content."""
    await call(client, "collections_create", collection=name, chunk_size=64, chunk_overlap=0)
    doc = (await call(client, "documents_upload", collection=name, text=TEXT, filename="f.txt", metadata={"lang": "en"}))["document"]
    rows = (await call(client, "query", collection=name, query="deep ocean submarines", top_k=1, filters={"lang": "en"}))["results"]
    assert rows[0]["text"] == "Submarines dive deep below the ocean surface." and rows[0]["document_id"] == doc["id"]
    assert (await call(client, "query", collection=name, query="apples", filters={"lang": "fr"}))["results"] == []
    assert (await call(client, "documents_delete", collection=name, document_id=doc["id"]))["deleted"] == [doc["id"]]
    assert (await call(client, "query", collection=name, query="apples"))["results"] == []


async def test_stdio_subprocess(settings: Settings, rt, admin_key: str) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "bigrag_mcp", "serve", "--transport", "stdio"], env=server_env(settings, BIGRAG_API_KEY=admin_key)
    )
    async with Client(params) as client:
        await exercise(client, "over_stdio")


async def test_stdio_server_refusals_say_why_and_name_the_data_folder(settings: Settings, rt) -> None:
    def start(**extra: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "bigrag_mcp", "serve", "--transport", "stdio"],
            env=server_env(settings, **extra), input=b"", capture_output=True, timeout=60, check=False,
        )
        assert done.returncode == 2 and b"Traceback" not in done.stderr
        return done.stderr.decode()

    revoked_id, revoked = await create_key(rt.db, name="old", scopes=["query:read"])
    await revoke_key(rt.db, revoked_id.id)
    gone, expired = await create_key(rt.db, name="gone", scopes=["query:read"], expires_at=datetime.now(UTC) + timedelta(days=1))
    async with rt.db.session() as session:  # a day passes
        await session.execute(update(ApiKey).where(ApiKey.id == gone.id).values(expires_at=datetime.now(UTC) - timedelta(hours=1)))
    await rt.db.engine.dispose()
    folder = str(settings.data_dir.resolve())
    assert "needs an API key in BIGRAG_API_KEY" in start() and folder in start()
    assert "unknown in this data folder" in start(BIGRAG_API_KEY="brg_not-a-real-key")
    assert f"revoked (key {revoked_id.id}" in start(BIGRAG_API_KEY=revoked)
    assert f"expired (key {gone.id}" in start(BIGRAG_API_KEY=expired)
    missing = start(BIGRAG_DATA_DIR=folder + "-typo", BIGRAG_API_KEY=revoked)
    assert "does not exist" in missing and folder + "-typo" in missing
    assert not (settings.data_dir.parent / "data-typo").exists()  # serve never creates a data folder


def test_a_server_with_a_bad_policy_refuses_to_start_and_names_the_line(settings: Settings, tmp_path) -> None:
    policy = tmp_path / "bad.toml"
    policy.write_text('[operations.query]\nscope = "query:read"\ntenant_rule = "sometimes"\n', encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "bigrag_mcp", "serve", "--transport", "streamable-http", "--port", "1"],
        env=server_env(settings, BIGRAG_POLICY_FILE=str(policy)), capture_output=True, timeout=60, check=False,
    )
    assert done.returncode == 2 and b"line 3" in done.stderr and b"Traceback" not in done.stderr


async def test_streamable_http_with_bearer_keys(rt, admin_key: str, http_server) -> None:
    url = http_server("streamable-http")
    async with http_session(url, admin_key) as client:
        await exercise(client, "over_http")
    async with httpx.AsyncClient() as plain:
        for headers in ({}, {"Authorization": "Bearer brg_wrong"}):
            answer = await plain.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers)
            assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Bearer")
        # keys are not OAuth tokens: no metadata pointing at an authorization server that would answer 404
        assert (await plain.get(f"{url}/.well-known/oauth-protected-resource/mcp")).status_code == 404
    server = http_server.procs[-1]
    server.terminate()
    logged = server.communicate(timeout=30)[1].decode()
    assert "POST /mcp" not in logged and "Started server process" not in logged  # uvicorn too logs at WARNING


async def test_health_readiness_access_log_and_advertised_issuer(rt, admin_key: str, http_server) -> None:
    url = http_server("streamable-http", BIGRAG_LOG_LEVEL="INFO", BIGRAG_LOG_FORMAT="json")
    _, reader = await create_key(rt.db, name="reader", scopes=["collection:read"])
    async with httpx.AsyncClient() as plain:
        assert (await plain.get(f"{url}/healthz")).json() == {"status": "ok"}
        assert (await plain.get(f"{url}/readyz")).json() == {"status": "ready"}
        bad = await plain.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers={"Authorization": f"Bearer {reader}x"})
        assert bad.status_code == 401
    async with http_session(url, reader) as client:
        await call(client, "collections_list")
        assert (await refused(client, "collections_create", collection="nope")).startswith("permission_denied")
    server = http_server.procs[-1]
    server.terminate()
    logged = [json.loads(line) for line in server.communicate(timeout=30)[1].decode().splitlines() if line.startswith("{")]
    calls = [(e["tool"], e["outcome"], e["key_id"]) for e in logged if "tool" in e]
    reader_id = (await list_keys(rt.db))[-1].id
    assert calls == [("collections_list", "ok", reader_id), ("collections_create", "permission_denied", reader_id)]
    assert all(e["time"].endswith("Z") and e["ms"] >= 0 for e in logged if "tool" in e)
    assert any(e.get("outcome") == "unauthenticated" and "unknown" in e["message"] for e in logged)
    everything = json.dumps(logged)
    assert reader not in everything and admin_key not in everything and "validate_token_resource" not in everything

    issuer = "https://login.example.com/realms/bigrag"
    url = http_server("streamable-http", BIGRAG_AUTH_ISSUER_URL=issuer)
    async with httpx.AsyncClient() as plain:
        meta = await plain.get(f"{url}/.well-known/oauth-protected-resource/mcp")
        assert meta.status_code == 200 and meta.json()["authorization_servers"] == [issuer]


async def test_sse_with_bearer_key(rt, admin_key: str, http_server) -> None:
    url = http_server("sse")
    async with Client(sse_client(f"{url}/sse", headers={"Authorization": f"Bearer {admin_key}"})) as client:
        await exercise(client, "over_sse")


async def test_revoked_key_fails_inside_an_open_http_session(rt, admin_key: str, http_server) -> None:
    url = http_server("streamable-http")
    _, reader = await create_key(rt.db, name="reader", scopes=["collection:read"])
    async with http_session(url, admin_key) as admin, http_session(url, reader) as client:
        assert (await call(client, "collections_list"))["collections"] == []
        key_id = next(k["id"] for k in (await call(admin, "api_keys_list"))["keys"] if k["name"] == "reader")
        await call(admin, "api_keys_revoke", key_id=key_id)
        with pytest.raises(MCPError):
            await client.call_tool("collections_list", {})
        assert (await call(admin, "collections_list"))["collections"] == []
    async with httpx.AsyncClient() as plain:
        answer = await plain.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers={"Authorization": f"Bearer {reader}"})
        assert answer.status_code == 401


async def test_two_tenant_keys_work_concurrently_over_http_and_one_is_revoked_mid_session(rt, admin_key: str, http_server) -> None:
    url = http_server("streamable-http")
    scopes = ["query:read", "document:upload", "document:read", "usage:read"]
    keys = {}
    async with http_session(url, admin_key) as admin:
        await call(admin, "collections_create", collection="shared", tenant_field="tenant_id")
        for tenant in ("acme", "globex"):
            made = await call(admin, "api_keys_create", name=tenant, scopes=scopes, collection="shared", tenant=tenant)
            keys[tenant] = (made["key"]["id"], made["secret"])

        async def work(tenant: str, client: Client) -> None:
            for i in range(4):
                await call(client, "documents_upload", collection="shared", text=f"{tenant} secret number {i}", metadata={"n": i})
                rows = (await call(client, "query", collection="shared", query="secret number", top_k=50))["results"]
                assert rows and {r["metadata"]["tenant_id"] for r in rows} == {tenant}
            listed = (await call(client, "documents_list", collection="shared"))["documents"]
            assert len(listed) == 4 and {d["tenant"] for d in listed} == {tenant}
            usage = await call(client, "usage_get")
            assert {(r["collection"], r["tenant"]) for r in usage["by_tenant"]} == {("shared", tenant)}

        async with http_session(url, keys["acme"][1]) as acme, http_session(url, keys["globex"][1]) as globex:
            assert {t.name for t in (await acme.list_tools()).tools} == {"query", "documents_upload", "documents_get", "documents_list", "usage_get"}
            assert "tenant 'acme'" in (acme.instructions or "") and "tenant 'globex'" in (globex.instructions or "")
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(work, "acme", acme)
                tasks.start_soon(work, "globex", globex)
            await call(admin, "api_keys_revoke", key_id=keys["globex"][0])
            with pytest.raises(MCPError):
                await globex.call_tool("query", {"collection": "shared", "query": "secret"})
            rows = (await call(acme, "query", collection="shared", query="secret number", top_k=50))["results"]
            assert len(rows) == 4 and all(r["text"].startswith("acme") for r in rows)
            assert (await refused(acme, "query", collection="shared", query="x", filters={"tenant_id": "globex"})).startswith("permission_denied")


async def test_stdio_servers_exit_when_their_client_goes_away(settings: Settings, admin_key: str) -> None:
    """Several servers whose input closes at once (while their outbox relay is mid-pass) all end, none hangs."""
    started = [
        await anyio.open_process(
            [sys.executable, "-m", "bigrag_mcp", "serve", "--transport", "stdio"], env=server_env(settings, BIGRAG_API_KEY=admin_key)
        )
        for _ in range(6)
    ]
    with anyio.fail_after(120):
        for process in started:
            assert process.stdin is not None
            await process.stdin.aclose()
        codes = [await process.wait() for process in started]
    assert codes == [0] * 6
