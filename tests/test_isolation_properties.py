"""Property: whatever key and calls hypothesis makes up, no call returns, changes or deletes data the key may not reach.

Each example builds a fresh world (a shared collection with three tenants, two plain collections), mints one
random key, runs random tool calls through the SDK's in-memory client, and after every call compares what came
back and what the store holds against an oracle of the key's reach.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import mcp_session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bigrag_mcp.services import collections, documents, vectors
from bigrag_mcp.services.keys import create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings
from bigrag_mcp.store.models import Chunk, Collection, Document

TENANTS = ("t1", "t2", "t3")
SHARED, SOLO_A, SOLO_B = "shared", "solo_a", "solo_b"
SCOPES = ["query:read", "document:read", "document:upload", "document:delete", "vector:write", "vector:delete", "collection:read", "usage:read"]
TOOL_SCOPE = {
    "query": "query:read",
    "documents_list": "document:read",
    "documents_get": "document:read",
    "documents_delete": "document:delete",
    "documents_upload": "document:upload",
    "vectors_upsert": "vector:write",
    "vectors_delete": "vector:delete",
    "collections_get": "collection:read",
    "collections_list": "collection:read",
}
DIM = 4


@dataclass(frozen=True)
class KeySpec:
    scopes: tuple[str, ...]
    collection: str | None
    tenant: str | None

    def reaches(self, collection: str, tenant: str | None) -> bool:
        """The oracle: may this key touch (collection, tenant)?"""
        if self.collection is not None and collection != self.collection:
            return False
        if self.tenant is not None:
            return collection == SHARED and tenant == self.tenant
        return True


keys = st.builds(
    KeySpec,
    scopes=st.lists(st.sampled_from(SCOPES), unique=True, max_size=len(SCOPES)).map(tuple),
    collection=st.sampled_from([None, SHARED, SOLO_A]),
    tenant=st.sampled_from([None, "t1", "t2"]),
).filter(lambda k: k.tenant is None or k.collection in (None, SHARED))

collections_arg = st.sampled_from([SHARED, SOLO_A, SOLO_B, "missing"])
tenant_arg = st.sampled_from([None, *TENANTS])
filters_arg = st.one_of(
    st.none(),
    st.builds(lambda t: {"tenant_id": t}, st.sampled_from(TENANTS)),
    st.builds(lambda t: {"tenant_id": {"$in": [t]}}, st.sampled_from(TENANTS)),
    st.just({"tenant_id": {"$in": ["t1", "t2"]}}),
    st.just({"tenant_id": {"$ne": "t1"}}),
    st.builds(lambda t: {"$or": [{"tenant_id": t}, {"n": 1}]}, st.sampled_from(TENANTS)),
    st.just({"n": {"$gte": 0}}),
)
calls = st.one_of(
    st.builds(lambda c, f: ("query", {"collection": c, "query": "secret record", "top_k": 50, **({"filters": f} if f else {})}), collections_arg, filters_arg),
    st.builds(lambda c, t: ("documents_list", {"collection": c, **({"tenant": t} if t else {})}), collections_arg, tenant_arg),
    st.builds(lambda c, t, d: ("documents_get", {"collection": c, "document_id": d, **({"tenant": t} if t else {})}), collections_arg, tenant_arg, st.integers(0, 8)),
    st.builds(lambda c, t, d: ("documents_delete", {"collection": c, "document_id": d, **({"tenant": t} if t else {})}), collections_arg, tenant_arg, st.integers(0, 8)),
    st.builds(lambda c, t: ("documents_upload", {"collection": c, "text": "new secret record", **({"metadata": {"tenant_id": t}} if t else {})}), collections_arg, tenant_arg),
    st.builds(lambda c, t: ("vectors_upsert", {"collection": c, "vectors": [{"id": "raw", "vector": [0.0, 1.0, 0.0, 0.0], "text": "overwritten", "metadata": {"tenant_id": t} if t else {}}]}), collections_arg, tenant_arg),
    st.builds(lambda c, t: ("vectors_delete", {"collection": c, "ids": ["raw"], **({"tenant": t} if t else {})}), collections_arg, tenant_arg),
    st.builds(lambda c: ("collections_get", {"collection": c}), collections_arg),
    st.just(("collections_list", {})),
)


async def build_world(rt: Runtime) -> list[str]:
    """Three tenants in the shared collection, two plain collections; returns the document ids (index = call arg)."""
    ids = []
    for name, tenant_field in ((SHARED, "tenant_id"), (SOLO_A, None), (SOLO_B, None)):
        await collections.create(rt, name=name, tenant_field=tenant_field, embedding_provider="hash", dimension=DIM)
    for tenant in TENANTS:
        doc = await documents.upload(rt, SHARED, text=f"secret record of {tenant}", metadata={"tenant_id": tenant, "n": 1})
        ids.append(doc.document.id)
        await vectors.upsert(rt, SHARED, [{"id": "raw", "vector": [1.0, 0, 0, 0], "text": f"raw of {tenant}", "metadata": {"tenant_id": tenant}}])
    for name in (SOLO_A, SOLO_B):
        doc = await documents.upload(rt, name, text=f"secret record of {name}", metadata={"n": 1})
        ids.append(doc.document.id)
        await vectors.upsert(rt, name, [{"id": "raw", "vector": [1.0, 0, 0, 0], "text": f"raw of {name}", "metadata": {}}])
    return ids


async def snapshot(rt: Runtime) -> dict[tuple[str, str | None], str]:
    """A digest of every (collection, tenant) partition's documents and chunks."""
    state: dict[tuple[str, str | None], list[str]] = {}
    async with rt.db.session() as s:
        for name, tenant, rid, text in await s.execute(
            select(Collection.name, Chunk.tenant, Chunk.record_id, Chunk.text).join(Collection, Chunk.collection_id == Collection.id)
        ):
            state.setdefault((name, tenant or None), []).append(f"c|{rid}|{text}")
        for name, tenant, did in await s.execute(
            select(Collection.name, Document.tenant, Document.id).join(Collection, Document.collection_id == Collection.id)
        ):
            state.setdefault((name, tenant or None), []).append(f"d|{did}")
    return {k: hashlib.sha256("\n".join(sorted(v)).encode()).hexdigest() for k, v in state.items()}


def returned_partitions(tool: str, args: dict[str, Any], out: dict[str, Any]) -> set[tuple[str, str | None]]:
    """Every (collection, tenant) a successful result shows data of."""
    if tool == "query":
        return {(r["collection"], r["metadata"].get("tenant_id")) for r in out["results"]}
    if tool == "documents_list":
        return {(d["collection"], d["tenant"]) for d in out["documents"]}
    if tool == "documents_get":
        return {(out["collection"], out["tenant"])}
    if tool == "collections_list":
        return {(c["name"], None) for c in out["collections"]}
    return set()


async def scenario(tmp: Path, database_url: str | None, spec: KeySpec, plan: list[tuple[str, dict[str, Any]]]) -> None:
    rt = await Runtime.open(Settings(data_dir=tmp, database_url=database_url, embedding_provider="hash", load_plugins="",  # type: ignore[call-arg]
                                     _env_file=None))
    try:
        doc_ids = await build_world(rt)
        _, secret = await create_key(rt.db, name="random", scopes=list(spec.scopes), collection=spec.collection, tenant=spec.tenant)
        async with mcp_session(rt, secret) as client:
            listed = {t.name for t in (await client.list_tools()).tools}
            pinned = spec.collection is not None or spec.tenant is not None
            granted = {t for t, s in TOOL_SCOPE.items() if s in spec.scopes and not (pinned and t == "collections_list")}
            assert listed & set(TOOL_SCOPE) == granted
            for tool, raw in plan:
                args = dict(raw)
                if "document_id" in args:
                    args["document_id"] = doc_ids[args["document_id"] % len(doc_ids)]
                before = await snapshot(rt)
                result = await client.call_tool(tool, args)
                after = await snapshot(rt)
                if TOOL_SCOPE[tool] not in spec.scopes:
                    assert result.is_error and result.content[0].text.startswith("permission_denied")  # type: ignore[union-attr]
                if not result.is_error:
                    out = result.structured_content or {}
                    for collection, tenant in returned_partitions(tool, args, out):
                        if tool == "collections_list":
                            assert spec.collection is None and spec.tenant is None
                        else:
                            assert spec.reaches(collection, tenant), (tool, args, collection, tenant)
                changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
                for collection, tenant in changed:
                    assert not result.is_error, (tool, args, "a refused call changed", collection, tenant)
                    assert spec.reaches(collection, tenant), (tool, args, "changed", collection, tenant)
    finally:
        await rt.close()


EXAMPLES = {"sqlite": 50, "postgres": 10}  # Postgres re-checks the same property on fewer worlds (CI time)


@pytest.mark.both_stores
def test_no_call_reaches_outside_the_key(
    tmp_path_factory: Any, store_kind: str, new_store: Callable[[], AbstractContextManager[str | None]]
) -> None:
    @settings(max_examples=EXAMPLES[store_kind], deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(spec=keys, plan=st.lists(calls, min_size=1, max_size=4))
    def check(spec: KeySpec, plan: list[tuple[str, dict[str, Any]]]) -> None:
        with new_store() as database_url:
            anyio.run(scenario, tmp_path_factory.mktemp("world"), database_url, spec, plan)

    check()
