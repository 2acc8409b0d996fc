"""The same data plane over a `bigrag-mcp serve` subprocess: stdio, streamable HTTP and SSE, each with a key."""

from __future__ import annotations

import subprocess
import sys

import anyio
import httpx
import pytest
from conftest import call, http_session, refused, server_env
from mcp import Client, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.shared.exceptions import MCPError

from bigrag_mcp.services.keys import create_key
from bigrag_mcp.settings import Settings

pytestmark = pytest.mark.anyio
TEXT = "Apples grow on trees in the orchard.\n\nSubmarines dive deep below the ocean surface."


async def exercise(client: Client, name: str) -> None:
    """Create, upload, query with a filter, delete — each checked by content."""
    await call(client, "collections_create", name=name, chunk_size=64, chunk_overlap=0)
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


def test_stdio_server_refuses_to_start_without_a_valid_key(settings: Settings) -> None:
    for extra in ({}, {"BIGRAG_API_KEY": "brg_not-a-real-key"}):
        done = subprocess.run(
            [sys.executable, "-m", "bigrag_mcp", "serve", "--transport", "stdio"],
            env=server_env(settings, **extra), input=b"", capture_output=True, timeout=60, check=False,
        )
        assert done.returncode == 2
        assert b"BIGRAG_API_KEY" in done.stderr and b"keys create --admin" in done.stderr


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
        meta = await plain.get(f"{url}/.well-known/oauth-protected-resource/mcp")
        assert meta.status_code == 200 and meta.json()["resource"].startswith(url)


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
        await call(admin, "collections_create", name="shared", tenant_field="tenant_id")
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
