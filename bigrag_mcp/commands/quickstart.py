"""`bigrag-mcp quickstart`: provision two tenants both ways, ingest the samples, ask through a real MCP session."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from bigrag_mcp.default_plugins.local_embedder import local_model_available
from bigrag_mcp.errors import Conflict
from bigrag_mcp.policy import load_policy
from bigrag_mcp.services import collections, documents
from bigrag_mcp.services.keys import create_key, list_keys, revoke_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings

SHARED = "support"
QUESTION = "How long do refunds take?"
MIME = {".md": "text/markdown", ".txt": "text/plain"}
ADMIN_KEY = "quickstart admin"
TENANT_KEY = "quickstart tenant app"


def sample_docs(explicit: Path | None) -> Path:
    for candidate in (explicit, Path("examples/sample-docs"), Path(__file__).resolve().parents[2] / "examples" / "sample-docs"):
        if candidate is not None and candidate.is_dir():
            return candidate
    raise SystemExit("error: the sample documents were not found; run from the repository or pass --docs FOLDER")


def tenants_in(docs: Path) -> list[str]:
    """One tenant per subfolder of the documents folder (hidden folders skipped), in name order."""
    found = sorted(p.name for p in docs.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise SystemExit(f"error: {docs} has no subfolders; put each tenant's .md and .txt files in a folder of its own")
    return found


async def replace_own_keys(rt: Runtime) -> None:
    """Revoke the keys an earlier quickstart run minted in this folder, so re-runs do not pile up admin keys."""
    for key in await list_keys(rt.db):
        if key.name in (ADMIN_KEY, TENANT_KEY) and key.created_by is None and key.revoked_at is None:
            await revoke_key(rt.db, key.id)


def say(text: str = "") -> None:
    print(text, flush=True)


async def provision(settings: Settings, docs: Path, tenants: list[str]) -> tuple[str, str]:
    """Collections for both tenancy patterns, the samples in them, and an admin and a tenant key."""
    rt = await Runtime.open(settings)
    try:
        wanted = [(SHARED, "tenant_id")] + [(f"tenant_{t}", None) for t in tenants]
        for name, tenant_field in wanted:
            try:
                await collections.create(rt, name=name, tenant_field=tenant_field, chunk_size=400, chunk_overlap=40)
                say(f"  created collection {name!r}" + (f" shared by tenants (tenant_field={tenant_field!r})" if tenant_field else ""))
            except Conflict:
                say(f"  collection {name!r} already exists: reusing it")
        for tenant in tenants:
            for path in sorted(p for p in (docs / tenant).iterdir() if p.suffix in (".md", ".txt") and not p.name.startswith(".")):
                text = path.read_text(encoding="utf-8")
                for target, meta in ((SHARED, {"tenant_id": tenant}), (f"tenant_{tenant}", {})):
                    result = await documents.upload(
                        rt, target, text=text, filename=path.name, mime_type=MIME[path.suffix], metadata=dict(meta, source=path.name)
                    )
                    state = "already there" if result.deduplicated else f"{result.document.chunk_count} chunks"
                    say(f"  {target:<14} ← {tenant}/{path.name} ({state})")
        await replace_own_keys(rt)
        _, admin = await create_key(rt.db, name=ADMIN_KEY, scopes=["*:*"])
        _, tenant_key = await create_key(
            rt.db,
            name=TENANT_KEY,
            scopes=load_policy(settings.policy_file).role_scopes("tenant-app"),
            collection=SHARED,
            tenant=tenants[0],
        )
        return admin, tenant_key
    finally:
        await rt.close()


def show_rows(result: Any) -> None:
    for row in (result.structured_content or {}).get("results", []):
        snippet = " ".join((row.get("text") or "").split())[:110]
        say(f"    [{row['score']:.3f}] {row.get('document_filename')} #{row.get('chunk_index')} "
            f"(tenant {row['metadata'].get('tenant_id')}): {snippet}")


async def ask(settings: Settings, tenant_key: str, tenants: list[str]) -> None:
    me, other = tenants[0], (tenants[1:] or ["someone-else"])[0]
    env = dict(os.environ, BIGRAG_API_KEY=tenant_key, BIGRAG_DATA_DIR=str(settings.data_dir))
    env.update({k: v for k, v in (("BIGRAG_EMBEDDING_PROVIDER", settings.embedding_provider),) if v})
    params = StdioServerParameters(command=sys.executable, args=["-m", "bigrag_mcp", "serve", "--transport", "stdio"], env=env)
    async with Client(params) as client:
        tools = sorted(t.name for t in (await client.list_tools()).tools)
        say(f"  the {me} key sees {len(tools)} tools: {', '.join(tools)}")
        say(f"\n  query {QUESTION!r} in {SHARED!r} (the key's tenant pin fills in the tenant filter):")
        result = await client.call_tool("query", {"collection": SHARED, "query": QUESTION, "top_k": 3})
        show_rows(result)
        say("\n  chat (answer with citations):")
        chat = await client.call_tool("chat", {"collection": SHARED, "message": QUESTION, "top_k": 3})
        if chat.is_error:
            say(f"    {chat.content[0].text}")  # type: ignore[union-attr]
        else:
            say("    " + (chat.structured_content or {}).get("answer", "").replace("\n", "\n    "))
        say(f"\n  isolation — the {me} key asks for {other}'s data:")
        for name, args in (
            ("query", {"collection": SHARED, "query": QUESTION, "filters": {"tenant_id": other}}),
            ("query", {"collection": f"tenant_{other}", "query": QUESTION}),
            ("collections_list", {}),
        ):
            refused = await client.call_tool(name, args)
            text = refused.content[0].text if refused.is_error else "allowed (unexpected!)"  # type: ignore[union-attr]
            say(f"    {name}({', '.join(f'{k}={v!r}' for k, v in args.items() if k != 'query')}) → {text}")


async def quickstart(data_dir: Path, docs: Path | None) -> int:
    reason = local_model_available()
    provider = "local" if reason is None else "hash"
    if reason is not None:
        say(f"local embedding model unavailable ({reason}); using the offline 'hash' embedder")
    else:
        say("using the offline local MiniLM embedding model")
    settings = Settings(data_dir=data_dir, embedding_provider=provider)
    say(f"data folder: {data_dir.resolve()}")
    folder = sample_docs(docs)
    tenants = tenants_in(folder)
    admin, tenant_key = await provision(settings, folder, tenants)
    say("\nkeys (shown once; stored hashed; a re-run revokes these and mints new ones):")
    say(f"  admin (all scopes):                          {admin}")
    say(f"  {tenants[0]} app (role tenant-app, pinned to {SHARED}/{tenants[0]}): {tenant_key}")
    say(f"\nan MCP client session over stdio with the {tenants[0]} key:")
    await ask(settings, tenant_key, tenants)
    say(
        f"\nnext: BIGRAG_DATA_DIR={data_dir} BIGRAG_API_KEY=<a key> bigrag-mcp serve --transport stdio "
        "(or --transport streamable-http with Authorization: Bearer <key>)"
    )
    return 0


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("quickstart", help="provision sample tenants and ask a question over MCP, offline")
    p.add_argument("--docs", type=Path, help="folder with one subfolder of .md/.txt files per tenant (default: examples/sample-docs)")
    p.set_defaults(handler=lambda a: anyio.run(quickstart, a.global_data_dir or Path("bigrag-quickstart"), a.docs))
