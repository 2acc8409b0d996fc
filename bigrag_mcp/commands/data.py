"""Operator data commands: collections, query, plugins (ingest has its own module)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bigrag_mcp.cli import UsageError, confirm, json_arg, settings_for, with_runtime
from bigrag_mcp.plugins import describe, plugin_manager
from bigrag_mcp.services import collections, search
from bigrag_mcp.services.runtime import Runtime


async def collections_cmd(rt: Runtime, a: argparse.Namespace) -> Any:
    if a.action == "list":
        return await collections.list_all(rt)
    if not a.collection:
        raise UsageError(f"collections {a.action} needs the collection's name")
    if a.action == "get":
        return await collections.get(rt, a.collection)
    if a.action == "delete":
        confirm(f"Delete collection {a.collection!r} with all its documents and vectors?", a)
        return await collections.delete(rt, a.collection)
    return await collections.create(
        rt,
        name=a.collection,
        embedding_provider=a.embedding_provider,
        embedding_model=a.embedding_model,
        dimension=a.dimension,
        tenant_field=a.tenant_field,
        metadata_schema=a.metadata_schema,
        chunk_size=a.chunk_size,
        chunk_overlap=a.chunk_overlap,
        chunk_strategy=a.chunk_strategy,
        language=a.language,
    )


async def query_cmd(rt: Runtime, a: argparse.Namespace) -> Any:
    return await search.search(
        rt, a.collection, a.text, top_k=a.top_k, filters=a.filters, search_mode=a.mode, rerank=a.rerank
    )


def plugins_cmd(a: argparse.Namespace) -> int:
    print(json.dumps(describe(plugin_manager(settings_for(a).load_plugins)), indent=2))
    return 0


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("collections", help="list, create, get or delete collections")
    p.add_argument("action", choices=("list", "create", "get", "delete"), help="what to do")
    p.add_argument("collection", nargs="?", help="the collection's name (required by create, get and delete)")
    p.add_argument("--embedding-provider", help="e.g. local, hash, openai, cohere (default: BIGRAG_EMBEDDING_PROVIDER)")
    p.add_argument("--embedding-model", help="the provider's model (default: the provider's own)")
    p.add_argument("--dimension", type=int, help="vector dimension (default: the model's)")
    p.add_argument("--tenant-field", help="metadata field naming the tenant: makes a shared collection")
    p.add_argument("--metadata-schema", type=json_arg, help="JSON Schema every document's metadata must satisfy")
    p.add_argument("--chunk-size", type=int, default=collections.DEFAULT_CHUNK_SIZE, help="characters per chunk (64-10,000)")
    p.add_argument("--chunk-overlap", type=int, default=collections.DEFAULT_CHUNK_OVERLAP, help="characters shared by neighbouring chunks (at most half the size)")
    p.add_argument("--chunk-strategy", choices=("paragraph", "recursive"), default="recursive", help="how text is split")
    p.add_argument("--language", default="english", help="keyword search language: a Snowball stemmer name")
    p.add_argument("--yes", action="store_true", help="delete without asking")
    p.set_defaults(handler=with_runtime(collections_cmd))

    p = sub.add_parser("query", help="search a collection")
    p.add_argument("collection", help="the collection to search")
    p.add_argument("text", help="the query")
    p.add_argument("--top-k", type=int, default=5, help="how many results (1-200)")
    p.add_argument("--filters", type=json_arg, help='metadata filter as JSON, e.g. {"tenant_id": "acme"}')
    p.add_argument("--mode", choices=("semantic", "keyword", "hybrid"), default="semantic", help="search mode")
    p.add_argument("--rerank", help="a registered reranker, e.g. cohere")
    p.set_defaults(handler=with_runtime(query_cmd))

    p = sub.add_parser("plugins", help="print the loaded plugins and the hooks they implement (JSON)")
    p.set_defaults(handler=plugins_cmd)
