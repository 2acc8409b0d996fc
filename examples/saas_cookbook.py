"""The multi-tenant SaaS recipe, end to end, through the MCP Python client against a server this script starts.

Pattern A gives each customer its own collection; pattern B shares one collection with a tenant field, its
customers on a free tier whose daily query cap the server's policy declares. Both end with per-tenant usage
and limits, the audit trail of one resource, and offboarding.

    python examples/saas_cookbook.py [--data-dir FOLDER]    # default: a fresh temporary folder

It needs only the `bigrag-mcp` package (no network, no API key of any provider): the operator's first
admin key is minted with the CLI, everything after that is an MCP tool call.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

# The recipe's schema: every document of a customer says what it is and where it came from.
ARTICLE_SCHEMA = {
    "type": "object",
    "properties": {
        "kind": {"enum": ["faq", "policy", "guide"]},
        "source": {"type": "string", "maxLength": 200},
    },
    "required": ["kind"],
}
TENANT_APP_SCOPES = ["query:read", "chat:write", "document:upload", "document:read", "usage:read"]
FREE_QUERIES_PER_DAY = 3
# What the server's policy adds to the built-in one: a free tier, whose keys each customer's queries count against
# (tenant = "*": a counter for each customer of the shared collection).
FREE_TIER = f"""
[roles.free-app]
description = "The application acting for one customer on the free tier."
scopes = {json.dumps(TENANT_APP_SCOPES)}

[[limits]]
name = "free: queries per day"
applies_to = {{ role = "free-app", tenant = "*" }}
metric = "queries"
max = {FREE_QUERIES_PER_DAY}
per = "day"
"""


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def cli(data_dir: Path, *args: str) -> Any:
    """The operator's command line (only for the first key: everything else goes through MCP)."""
    done = subprocess.run(
        [sys.executable, "-m", "bigrag_mcp", "--data-dir", str(data_dir), *args],
        env=server_env(data_dir), capture_output=True, text=True, check=True,
    )
    return json.loads(done.stdout)


def policy_file(data_dir: Path) -> Path:
    """The server's policy: the built-in one plus the free tier, written beside the data."""
    path = data_dir / "policy.toml"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(files("bigrag_mcp.policy").joinpath("default.toml").read_text(encoding="utf-8") + FREE_TIER, encoding="utf-8")
    return path


def server_env(data_dir: Path, key: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIGRAG_")}
    env.update(
        BIGRAG_DATA_DIR=str(data_dir),
        BIGRAG_POLICY_FILE=str(policy_file(data_dir)),
        BIGRAG_EMBEDDING_PROVIDER=os.environ.get("BIGRAG_EMBEDDING_PROVIDER", "hash"),
    )
    if key is not None:
        env["BIGRAG_API_KEY"] = key
    return env


def session(data_dir: Path, key: str) -> Client:
    """An MCP client session over stdio with one API key (the server process is this key's)."""
    args = ["-m", "bigrag_mcp", "serve", "--transport", "stdio"]
    return Client(StdioServerParameters(command=sys.executable, args=args, env=server_env(data_dir, key)))


async def ok(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args)
    if result.is_error:
        raise SystemExit(f"{tool} failed: {result.content[0].text}")  # type: ignore[union-attr]
    return result.structured_content or {}


async def refused(client: Client, tool: str, **args: Any) -> str:
    result = await client.call_tool(tool, args)
    if not result.is_error:
        raise SystemExit(f"{tool} should have been refused: {result.structured_content}")
    text: str = result.content[0].text  # type: ignore[union-attr]
    print(f"   refused as it should be: {text}")
    return text


async def pattern_a(data_dir: Path, admin: Client) -> None:
    step("Pattern A: a collection per customer, with the recipe's metadata schema")
    for tenant in ("acme", "globex"):
        await ok(admin, "collections_create", collection=f"tenant_{tenant}", metadata_schema=ARTICLE_SCHEMA)
    made = await ok(admin, "api_keys_create", name="acme app", scopes=TENANT_APP_SCOPES, collection="tenant_acme")
    print(f"   minted {made['key']['id']} pinned to tenant_acme")
    async with session(data_dir, made["secret"]) as acme:
        await ok(acme, "documents_upload", collection="tenant_acme", filename="refunds.md",
                 text="Refunds are paid within 5 business days.", metadata={"kind": "policy", "source": "handbook"})
        await refused(acme, "documents_upload", collection="tenant_acme", text="No kind given.", metadata={})
        hits = (await ok(acme, "query", collection="tenant_acme", query="how long do refunds take", top_k=1))["results"]
        print(f"   acme asks about refunds: {hits[0]['text']!r}")
        await refused(acme, "query", collection="tenant_globex", query="refunds")
        await refused(acme, "collections_delete", collection="tenant_acme")


async def pattern_b(data_dir: Path, admin: Client) -> dict[str, str]:
    step("Pattern B: one shared collection with a tenant field, its customers on the free tier")
    await ok(admin, "collections_create", collection="support", tenant_field="tenant_id")
    keys = {}
    for tenant, fact in (("acme", "Acme ships within 2 days."), ("globex", "Globex ships within 3 weeks.")):
        made = await ok(admin, "api_keys_create", name=f"{tenant} support", role="free-app", collection="support", tenant=tenant)
        keys[tenant] = made["secret"]
        async with session(data_dir, made["secret"]) as app:  # the tenant pin fills in tenant_id on upload
            await ok(app, "documents_upload", collection="support", text=fact, filename="shipping.md")
    async with session(data_dir, keys["acme"]) as acme:
        hits = (await ok(acme, "query", collection="support", query="how fast is shipping"))["results"]
        print(f"   acme's key sees only acme: {[h['text'] for h in hits]}")
        await refused(acme, "query", collection="support", query="shipping", filters={"tenant_id": "globex"})
    # The operator's own key must name exactly one tenant: a multi-value $in is refused, not widened.
    await refused(admin, "query", collection="support", query="shipping", filters={"tenant_id": {"$in": ["acme", "globex"]}})
    hits = (await ok(admin, "query", collection="support", query="shipping", filters={"tenant_id": "globex"}))["results"]
    print(f"   the operator asks for globex: {[h['text'] for h in hits]}")
    return keys


async def free_tier_limit(data_dir: Path, keys: dict[str, str]) -> None:
    step(f"The free tier's limit: {FREE_QUERIES_PER_DAY} queries per day for each customer")
    async with session(data_dir, keys["acme"]) as acme:
        for _ in range(FREE_QUERIES_PER_DAY + 1):  # acme asked once in pattern B: the last of these is one too many
            result = await acme.call_tool("query", {"collection": "support", "query": "shipping"})
            if result.is_error:
                break
        refusal = result.structured_content or {}
        if not result.is_error or refusal.get("code") != "limit_exceeded":
            raise SystemExit(f"acme's query {FREE_QUERIES_PER_DAY + 1} should have hit the cap: {result.content}")
        print(f"   refused as it should be: {result.content[0].text}")  # type: ignore[union-attr]
        print(f"   retry_after_s={refusal['retry_after_s']} (the day's counter resets at {refusal['resets_at']})")
        for limit in (await ok(acme, "usage_get", window_days=1))["limits"]:
            print(f"   acme's usage_get.limits: {limit['name']!r} {limit['metric']} used {limit['used']} of {limit['max']}, {limit['remaining']} left")
    async with session(data_dir, keys["globex"]) as globex:  # another customer: its own counter
        await ok(globex, "query", collection="support", query="shipping")
        counted = [(lim["used"], lim["max"]) for lim in (await ok(globex, "usage_get", window_days=1))["limits"]]
        print(f"   globex still queries, on its own counter: used/max {counted}")


async def usage_and_audit(data_dir: Path, admin: Client, keys: dict[str, str]) -> None:
    step("Per-tenant usage, and the audit trail of one resource")
    async with session(data_dir, keys["acme"]) as acme:
        own = await ok(acme, "usage_get", window_days=30)
        print(f"   acme's own usage: {[(r['collection'], r['tenant'], r['queries']) for r in own['by_tenant']]}")
    everyone = await ok(admin, "usage_get", window_days=30)
    print(f"   the operator sees every tenant: {sorted({(r['collection'], r['tenant']) for r in everyone['by_tenant']})}")
    trail = await ok(admin, "audit_list", resource_type="collection", resource_id="support")
    print(f"   audit of collection 'support': {[row['action'] for row in trail['rows']]}")


async def offboarding(admin: Client) -> None:
    step("Offboarding a customer, both patterns")
    shared = await ok(admin, "tenants_offboard", collection="support", tenant="globex")
    own = await ok(admin, "tenants_offboard", collection="tenant_globex", tenant="globex")
    print(f"   shared collection: {shared['documents_removed']} documents removed, {shared['keys_revoked']} keys revoked")
    print(f"   own collection: dropped={own['collection_dropped']}, {own['keys_revoked']} keys revoked")
    hits = (await ok(admin, "query", collection="support", query="shipping", filters={"tenant_id": "globex"}))["results"]
    assert hits == [], "globex's data must be gone"
    print("   globex's data is gone from the shared collection")


async def main(data_dir: Path) -> None:
    step(f"Bootstrap: the operator mints the first admin key with the CLI (data folder {data_dir})")
    admin_key = cli(data_dir, "keys", "create", "--admin", "--name", "cookbook operator")["secret"]
    async with session(data_dir, admin_key) as admin:
        await pattern_a(data_dir, admin)
        keys = await pattern_b(data_dir, admin)
        await free_tier_limit(data_dir, keys)
        await usage_and_audit(data_dir, admin, keys)
        await offboarding(admin)
    step("Done: both patterns, isolation, a limit, usage, audit and offboarding through MCP")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="a data folder to use (default: a fresh temporary folder)")
    folder = parser.parse_args().data_dir
    if folder is not None:
        anyio.run(main, folder)
    else:
        with tempfile.TemporaryDirectory(prefix="bigrag-cookbook-") as scratch:
            anyio.run(main, Path(scratch))
