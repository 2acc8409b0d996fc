"""`WeaviateBackend`: the VectorBackend protocol on Weaviate's native multi-tenancy (see README.md)."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import weaviate
from weaviate.classes.config import Configure, VectorDistances
from weaviate.classes.data import DataObject
from weaviate.classes.init import AdditionalConfig, Auth, Timeout
from weaviate.classes.query import Filter, HybridFusion, MetadataQuery
from weaviate.classes.tenants import TenantActivityStatus
from weaviate.client import WeaviateAsyncClient
from weaviate.collections import CollectionAsync
from weaviate.collections.classes.filters import _Filters
from weaviate.exceptions import (
    UnexpectedStatusCodeError,
    WeaviateBaseError,
    WeaviateInsertManyAllFailedError,
    WeaviateInvalidInputError,
)

from bigrag_mcp.errors import InvalidArgument, Unavailable
from bigrag_mcp.filters import Compare, FilterNode, Not, matches
from bigrag_mcp.retry import RetryPolicy
from bigrag_mcp.types import Hit, Partition, SearchRequest, VectorRecord
from bigrag_weaviate import records
from bigrag_weaviate.errors import TENANT_NOT_ACTIVE, TENANT_NOT_FOUND, mentions, message_of, retrying
from bigrag_weaviate.naming import belongs_to, class_name, dimension_of, object_uuid, tenant_name
from bigrag_weaviate.settings import WeaviateSettings
from bigrag_weaviate.translate import Translator

T = TypeVar("T")
VECTOR = "default"
WRITE_CHUNK = 256
DELETE_CHUNK = 1000
HYBRID_ALPHA = 0.5
MAX_ACTIVATION_STEP = 8.0


@dataclass(frozen=True)
class _Row:
    record_id: str
    score: float
    metadata: dict[str, Any]


def _wanted(node: FilterNode | None) -> set[str]:
    """The typed metadata properties a filter compares against."""
    if node is None:
        return set()
    if isinstance(node, Compare):
        if node.op == "$exists":
            return set()
        values = node.value if isinstance(node.value, tuple) else (node.value,)
        wanted = {records.meta_property(node.field, k) for v in values if (k := records.kind_of(v))}
        return {w for w in wanted if w is not None}
    items = (node.item,) if isinstance(node, Not) else node.items
    return set().union(*(_wanted(n) for n in items))


def _check_records(items: Sequence[VectorRecord]) -> int:
    """The common dimension of the records; InvalidArgument for an empty, ragged or non-finite vector."""
    dims = {len(r.vector) for r in items}
    if len(dims) != 1 or 0 in dims:
        raise InvalidArgument("every vector in one upsert must have the same, non-zero number of components")
    for r in items:
        if not r.id:
            raise InvalidArgument("a record id must be a non-empty string")
        if not all(math.isfinite(x) for x in r.vector):
            raise InvalidArgument(f"vector of record {r.id!r} contains NaN or infinity")
    return dims.pop()


class WeaviateBackend:
    """Vectors in Weaviate: one class per dimension, one Weaviate tenant per (collection, tenant) partition."""

    name = "weaviate"
    persistent = True
    search_modes = frozenset({"semantic", "keyword", "hybrid"})

    def __init__(
        self,
        settings: WeaviateSettings | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings or WeaviateSettings()
        self._policy = RetryPolicy(
            attempts=self.settings.retries + 1, base_delay=self.settings.backoff_seconds, sleep=sleep
        )
        self._sleep = sleep
        self._client: WeaviateAsyncClient | None = None
        self._supports_not = False
        self._lock = asyncio.Lock()
        self._classes: set[str] | None = None
        self._properties: dict[str, set[str]] = {}
        self._schema_lock = asyncio.Lock()
        self._dimensions: dict[str, int] = {}

    # --- plumbing ---------------------------------------------------------------------------------
    async def _retry(self, doing: str, attempt: Callable[[], Awaitable[T]]) -> T:
        key = self.settings.api_key.get_secret_value() if self.settings.api_key else None
        return await retrying(doing, attempt, self._policy, secrets=[key])

    async def client(self) -> WeaviateAsyncClient:
        """The connected weaviate client, for operations tooling and tests."""
        return await self._connected()

    async def _connected(self) -> WeaviateAsyncClient:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                self._client = await self._retry("connecting", self._connect)
        return self._client

    async def _connect(self) -> WeaviateAsyncClient:
        s = self.settings
        timeout = s.timeout_seconds
        client = weaviate.use_async_with_custom(
            http_host=s.http_host,
            http_port=s.http_port,
            http_secure=s.http_secure,
            grpc_host=s.grpc_host or s.http_host,
            grpc_port=s.grpc_port,
            grpc_secure=s.http_secure if s.grpc_secure is None else s.grpc_secure,
            auth_credentials=Auth.api_key(s.api_key.get_secret_value()) if s.api_key else None,
            additional_config=AdditionalConfig(timeout=Timeout(init=timeout, query=timeout, insert=timeout)),
            skip_init_checks=True,
        )
        try:
            await client.connect()
            meta = await client.get_meta()
        except BaseException:
            await client.close()
            raise
        major, minor = (int(x) for x in str(meta["version"]).split(".")[:2])
        self._supports_not = (major, minor) >= (1, 33)
        return client

    async def _collection(self, cls: str, tname: str | None = None) -> CollectionAsync:
        col = (await self._connected()).collections.use(cls)
        return col.with_tenant(tname) if tname else col

    async def _class_names(self, *, refresh: bool = False) -> set[str]:
        if self._classes is None or refresh:

            async def listing() -> set[str]:
                found = await (await self._connected()).collections.list_all(simple=True)
                return {n for n in found if dimension_of(self.settings.class_prefix, n) is not None}

            self._classes = await self._retry("listing collections", listing)
        return self._classes

    async def _known_properties(self, cls: str, *, refresh: bool = False) -> set[str]:
        if cls not in self._properties or refresh:

            async def read() -> set[str]:
                config = await (await self._collection(cls)).config.get(simple=True)
                return {p.name for p in config.properties}

            self._properties[cls] = await self._retry(f"reading the schema of {cls}", read)
        return self._properties[cls]

    async def _ensure_class(self, dimension: int) -> str:
        cls = class_name(self.settings.class_prefix, dimension)
        if cls in await self._class_names():
            return cls
        async with self._schema_lock:
            if cls not in await self._class_names(refresh=True):
                await self._create_class(cls)
        return cls

    async def _create_class(self, cls: str) -> None:
        async def create() -> None:
            try:
                await (await self._connected()).collections.create(
                    cls,
                    properties=records.base_properties(),
                    vector_config=Configure.Vectors.self_provided(
                        name=VECTOR,
                        vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE),
                    ),
                    multi_tenancy_config=Configure.multi_tenancy(
                        enabled=True, auto_tenant_creation=True, auto_tenant_activation=False
                    ),
                )
            except UnexpectedStatusCodeError as exc:
                if not mentions(exc, "already exists"):  # another replica won the race
                    raise

        await self._retry(f"creating {cls}", create)
        (await self._class_names()).add(cls)

    async def _ensure_properties(self, cls: str, names: Iterable[str]) -> None:
        if not set(names) - await self._known_properties(cls):
            return
        async with self._schema_lock:
            for name in sorted(set(names) - await self._known_properties(cls, refresh=True)):
                await self._add_property(cls, name)

    async def _add_property(self, cls: str, name: str) -> None:
        """Add a property; another replica having added it first (either way Weaviate reports it) is success."""

        async def add() -> None:
            try:
                await (await self._collection(cls)).config.add_property(records.new_property(name))
                return
            except WeaviateInvalidInputError as exc:  # the client read the schema itself and found it
                if not mentions(exc, "already exists"):
                    raise
            except UnexpectedStatusCodeError as exc:  # the server refused it: added between our read and our write
                if exc.status_code != 422 or not mentions(exc, "already in use"):
                    raise
            config = await (await self._collection(cls)).config.get(simple=True)
            if name not in {p.name for p in config.properties}:
                raise InvalidArgument(
                    f"the Weaviate class {cls} has a property whose name equals {name!r} ignoring case, written by "
                    "another application; remove it or use another WEAVIATE_CLASS_PREFIX"
                )

        await self._retry(f"adding property {name} to {cls}", add)
        self._properties[cls].add(name)

    def _describe(self, where: Partition) -> str:
        tenant = "" if where.tenant is None else f" tenant {where.tenant!r}"
        return f"the Weaviate tenant of collection {where.collection!r}{tenant}"

    async def _activate(self, cls: str, tname: str, where: Partition) -> None:
        """Activate an INACTIVE or OFFLOADED tenant and wait, with bounded backoff, until it serves."""
        if self.settings.inactive_tenant == "unavailable":
            raise Unavailable(
                f"{self._describe(where)} is inactive; "
                "an operator must activate it (or set WEAVIATE_INACTIVE_TENANT=activate)"
            )
        tenants = (await self._collection(cls)).tenants
        try:
            await tenants.activate(tname)
        except UnexpectedStatusCodeError as exc:
            if exc.status_code == 422 and mentions(exc, "currently being frozen"):
                raise Unavailable(
                    f"{self._describe(where)} is being offloaded to cold storage; retry in a minute, "
                    "once offloaded it is activated on demand"
                ) from None
            raise
        timeout = self.settings.activation_timeout_seconds
        waited, delay = 0.0, self.settings.activation_backoff_seconds
        while (found := (await tenants.get_by_names([tname])).get(tname)) is not None:
            if found.activity_status != TenantActivityStatus.ONLOADING:
                return  # ACTIVE, or a state the repeated call reports itself
            if waited >= timeout:
                raise Unavailable(
                    f"{self._describe(where)} is still being activated (onloading from cold storage) after "
                    f"{waited:g} s; retry in a minute"
                )
            step = min(delay, MAX_ACTIVATION_STEP, timeout - waited)
            await self._sleep(step)
            waited, delay = waited + step, delay * 2

    async def _in_tenant(
        self, doing: str, cls: str, where: Partition, op: Callable[[CollectionAsync], Awaitable[T]]
    ) -> T | None:
        """Run `op` on the partition's tenant; None when the tenant does not exist; activate on demand."""
        tname = tenant_name(where.collection, where.tenant)

        async def attempt() -> T | None:
            handle = await self._collection(cls, tname)
            try:
                return await op(handle)
            except WeaviateBaseError as exc:
                if mentions(exc, TENANT_NOT_FOUND):
                    return None
                if not mentions(exc, TENANT_NOT_ACTIVE):
                    raise
            await self._activate(cls, tname, where)
            return await op(handle)

        return await self._retry(doing, attempt)

    # --- writes -----------------------------------------------------------------------------------
    async def upsert(self, where: Partition, records_: Sequence[VectorRecord]) -> None:
        items = list({r.id: r for r in records_}.values())
        if not items:
            return
        dimension = _check_records(items)
        await self._check_partition_dimension(where, dimension)
        cls = await self._ensure_class(dimension)
        objects = [
            DataObject(
                properties=records.to_properties(where, r, self.settings.indexes),
                vector={VECTOR: [float(x) for x in r.vector]},
                uuid=object_uuid(where.collection, where.tenant, r.id),
            )
            for r in items
        ]
        await self._ensure_properties(cls, {k for o in objects for k in o.properties})
        for start in range(0, len(objects), WRITE_CHUNK):
            await self._write(cls, where, objects[start : start + WRITE_CHUNK])

    async def _write(self, cls: str, where: Partition, objects: list[DataObject[Any, Any]]) -> None:
        tname = tenant_name(where.collection, where.tenant)

        async def insert(batch: list[DataObject[Any, Any]]) -> dict[int, str]:
            async def attempt() -> dict[int, str]:
                handle = await self._collection(cls, tname)
                try:
                    result = await handle.data.insert_many(batch)
                except WeaviateInsertManyAllFailedError as exc:
                    return {i: message_of(exc) for i in range(len(batch))}
                return {i: err.message for i, err in result.errors.items()}

            return await self._retry(f"writing to {where.collection!r}", attempt)

        errors = await insert(objects)
        if any(TENANT_NOT_ACTIVE in e for e in errors.values()):
            await self._retry("activating a tenant", lambda: self._activate(cls, tname, where))
            again = sorted(errors)
            retried = await insert([objects[i] for i in again])
            errors = {again[i]: e for i, e in retried.items()}
        if errors:
            first = sorted(errors.items())[:3]
            detail = "; ".join(f"{objects[i].properties[records.RECORD_ID]!r}: {e}" for i, e in first)
            raise Unavailable(
                f"Weaviate did not store {len(errors)} of {len(objects)} records ({detail}); "
                "the other records were written — retry the call, upserts are idempotent"
            )

    async def delete(self, where: Partition, ids: Sequence[str]) -> int:
        uuids = sorted({object_uuid(where.collection, where.tenant, i) for i in ids})
        if not uuids:
            return 0
        done: set[str] = set()
        removed = 0
        for refresh in (False, True):
            for cls in sorted(await self._class_names(refresh=refresh) - done):
                done.add(cls)
                size = min(DELETE_CHUNK, self.settings.query_maximum_results)  # the server deletes no more at once
                for start in range(0, len(uuids), size):
                    chunk = uuids[start : start + size]

                    async def op(h: CollectionAsync, chunk: list[str] = chunk) -> int:
                        return int((await h.data.delete_many(where=Filter.by_id().contains_any(chunk))).successful)

                    removed += await self._in_tenant(f"deleting from {where.collection!r}", cls, where, op) or 0
            if removed >= len(uuids):
                break
        return removed

    async def drop(self, collection: str, tenant: str | None = None) -> None:
        self._dimensions = {
            n: d for n, d in self._dimensions.items()
            if not (belongs_to(n, collection) and (tenant is None or n == tenant_name(collection, tenant)))
        }
        wanted = None if tenant is None else [tenant_name(collection, tenant)]
        for cls in sorted(await self._class_names(refresh=True)):
            doomed = [n for n in await self._tenant_names(cls, wanted) if belongs_to(n, collection)]
            for start in range(0, len(doomed), 100):
                await self._remove_tenants(cls, doomed[start : start + 100], collection)

    async def _tenant_names(self, cls: str, names: list[str] | None) -> list[str]:
        """The tenants of a class (only those of `names` that exist, when given)."""

        async def read() -> list[str]:
            tenants = (await self._collection(cls)).tenants
            return list(await (tenants.get() if names is None else tenants.get_by_names(names)))

        return await self._retry(f"reading the tenants of {cls}", read)

    async def _remove_tenants(self, cls: str, names: list[str], collection: str) -> None:
        async def remove() -> None:
            await (await self._collection(cls)).tenants.remove(names)

        await self._retry(f"removing tenants of {collection!r}", remove)

    # --- search -----------------------------------------------------------------------------------
    async def search(self, where: Partition, request: SearchRequest) -> list[Hit]:
        if request.top_k <= 0:
            raise InvalidArgument("top_k must be a positive number")
        if request.mode not in self.search_modes:
            raise InvalidArgument(f"search mode {request.mode!r} is not one of {sorted(self.search_modes)}")
        if request.mode != "keyword" and not request.vector:
            raise InvalidArgument(f"{request.mode} search needs a query vector")
        if request.mode != "semantic" and not (request.text or "").strip():
            raise InvalidArgument(f"{request.mode} search needs a query text")
        rows: list[_Row] = []
        if request.mode == "keyword":
            done: set[str] = set()
            for refresh in (False, True):
                for cls in sorted(await self._class_names(refresh=refresh) - done):
                    done.add(cls)
                    rows += await self._search_class(cls, where, request) or []
                if rows:
                    break
        else:
            dimension = len(request.vector or ())
            cls = class_name(self.settings.class_prefix, dimension)
            found = None
            if cls in await self._class_names() or cls in await self._class_names(refresh=True):
                found = await self._search_class(cls, where, request)
            if found is None and (held := await self._held_dimension(where, dimension)) is not None:
                raise InvalidArgument(f"the query vector has {dimension} components; this collection holds {held}")
            rows = found or []
        rows.sort(key=lambda r: (-r.score, r.record_id))
        return [Hit(r.record_id, r.score) for r in rows[: request.top_k]]

    async def _held_dimension(self, where: Partition, other_than: int) -> int | None:
        """The dimension of another shape class that already holds this partition, if any."""
        tname = tenant_name(where.collection, where.tenant)
        for cls in sorted(await self._class_names()):
            held = dimension_of(self.settings.class_prefix, cls)
            if held == other_than:
                continue
            if await self._tenant_names(cls, [tname]):
                return held
        return None

    async def _check_partition_dimension(self, where: Partition, dimension: int) -> None:
        """InvalidArgument when the partition already holds vectors of another dimension (checked once a process)."""
        tname = tenant_name(where.collection, where.tenant)
        if self._dimensions.get(tname) == dimension:
            return
        held = await self._held_dimension(where, dimension)
        if held is not None:
            raise InvalidArgument(f"vectors have {dimension} components; this collection holds {held}-component vectors")
        self._dimensions[tname] = dimension

    async def _search_class(self, cls: str, where: Partition, request: SearchRequest) -> list[_Row] | None:
        known = await self._known_properties(cls)
        if _wanted(request.filter) - known:
            known = await self._known_properties(cls, refresh=True)
        translation = Translator(known, supports_not=self._supports_not, indexed=self.settings.indexes)(request.filter)
        if translation.native is False:
            return []
        native = None if translation.native is True else translation.native
        cap = self.settings.most_candidates  # the server refuses a window beyond QUERY_MAXIMUM_RESULTS
        top_k = min(request.top_k, cap)
        limit = top_k if translation.exact else min(top_k * self.settings.overfetch, cap)
        while True:

            async def query(handle: CollectionAsync, limit: int = limit) -> list[_Row]:
                return await self._query(handle, request, native, limit)

            fetched = await self._in_tenant(f"searching {where.collection!r}", cls, where, query)
            if fetched is None:
                return None
            rows = [r for r in fetched if request.min_score is None or r.score >= request.min_score]
            if not translation.exact:
                rows = [r for r in rows if matches(request.filter, r.metadata)]
            if translation.exact or len(rows) >= top_k or len(fetched) < limit or limit >= cap:
                return rows
            limit = min(limit * max(2, self.settings.overfetch), cap)

    async def _query(
        self, handle: CollectionAsync, request: SearchRequest, native: _Filters | None, limit: int
    ) -> list[_Row]:
        common: dict[str, Any] = {
            "limit": limit,
            "filters": native,
            "return_properties": [records.RECORD_ID, records.META],
            "return_metadata": MetadataQuery(distance=request.mode == "semantic", score=request.mode != "semantic"),
        }
        vector = [float(x) for x in request.vector or ()]
        if request.mode == "semantic":
            distance = None if request.min_score is None else 1.0 - request.min_score
            result = await handle.query.near_vector(near_vector=vector, target_vector=VECTOR, distance=distance, **common)
        elif request.mode == "keyword":
            result = await handle.query.bm25(query=request.text or "", query_properties=[records.TEXT], **common)
        else:
            result = await handle.query.hybrid(
                query=request.text or "",
                vector=vector,
                target_vector=VECTOR,
                alpha=HYBRID_ALPHA,
                fusion_type=HybridFusion.RANKED,
                query_properties=[records.TEXT],
                **common,
            )
        return [
            _Row(
                str(o.properties[records.RECORD_ID]),
                1.0 - (o.metadata.distance or 0.0) if request.mode == "semantic" else float(o.metadata.score or 0.0),
                json.loads(str(o.properties.get(records.META) or "{}")),
            )
            for o in result.objects
        ]

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()
