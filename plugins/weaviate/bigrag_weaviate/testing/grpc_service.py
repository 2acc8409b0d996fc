"""The fake's gRPC side: the client's own `weaviate.v1.Weaviate` service (Search, BatchObjects, BatchDelete,
TenantsGet) and the standard health check."""

from __future__ import annotations

import struct
import uuid as uuid_lib
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from weaviate.proto.v1 import (
    base_pb2,
    base_search_pb2,
    batch_delete_pb2,
    batch_pb2,
    properties_pb2,
    search_get_pb2,
    tenants_pb2,
    weaviate_pb2_grpc,
)

from bigrag_weaviate.testing.filters import evaluate
from bigrag_weaviate.testing.state import (
    ACTIVE,
    INACTIVE,
    OFFLOADED,
    OFFLOADING,
    ONLOADING,
    FakeError,
    State,
    StoredClass,
    StoredObject,
    cosine_distance,
)

TENANT_STATUS = {
    ACTIVE: tenants_pb2.TENANT_ACTIVITY_STATUS_ACTIVE,
    INACTIVE: tenants_pb2.TENANT_ACTIVITY_STATUS_INACTIVE,
    OFFLOADED: tenants_pb2.TENANT_ACTIVITY_STATUS_OFFLOADED,
    ONLOADING: tenants_pb2.TENANT_ACTIVITY_STATUS_ONLOADING,
    OFFLOADING: tenants_pb2.TENANT_ACTIVITY_STATUS_OFFLOADING,
}


def _floats(data: bytes, code: str) -> list[float]:
    size = struct.calcsize(code)
    return list(struct.unpack(f"<{len(data) // size}{code}", data))


def _vector(msg: Any) -> list[float]:
    if msg.vector_bytes:
        return _floats(msg.vector_bytes, "f")
    if len(msg.vectors):
        return _floats(msg.vectors[0].vector_bytes, "f")
    return list(msg.vector)


def _properties(msg: batch_pb2.BatchObject.Properties) -> dict[str, Any]:
    out: dict[str, Any] = dict(MessageToDict(msg.non_ref_properties))
    for arr in msg.text_array_properties:
        out[arr.prop_name] = list(arr.values)
    for arr in msg.boolean_array_properties:
        out[arr.prop_name] = list(arr.values)
    for arr in msg.int_array_properties:
        out[arr.prop_name] = [float(v) for v in arr.values]
    for num in msg.number_array_properties:
        out[num.prop_name] = _floats(num.values_bytes, "d") if num.values_bytes else list(num.values)
    for name in msg.empty_list_props:
        out[name] = []
    return out


def _value(value: Any) -> properties_pb2.Value:
    if isinstance(value, bool):
        return properties_pb2.Value(bool_value=value)
    if isinstance(value, (int, float)):
        return properties_pb2.Value(number_value=float(value))
    if isinstance(value, str):
        return properties_pb2.Value(text_value=value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return properties_pb2.Value(list_value=properties_pb2.ListValue(text_values=properties_pb2.TextValues(values=value)))
    if isinstance(value, list) and all(isinstance(v, bool) for v in value):
        return properties_pb2.Value(list_value=properties_pb2.ListValue(bool_values=properties_pb2.BoolValues(values=value)))
    if isinstance(value, list):
        packed = struct.pack(f"<{len(value)}d", *value)
        return properties_pb2.Value(list_value=properties_pb2.ListValue(number_values=properties_pb2.NumberValues(values=packed)))
    return properties_pb2.Value(null_value=0)


def _fused(vector: dict[str, float], keyword: dict[str, float], alpha: float, ranked: bool) -> dict[str, float]:
    """Weaviate's fusions: rankedFusion adds alpha-weighted 1/(60 + rank); relativeScoreFusion min-max normalises."""

    def ranks(scores: dict[str, float]) -> dict[str, float]:
        order = sorted(scores, key=lambda k: -scores[k])
        return {k: 1.0 / (60 + i) for i, k in enumerate(order)}

    def norm(scores: dict[str, float]) -> dict[str, float]:
        if not scores:
            return {}
        lo, hi = min(scores.values()), max(scores.values())
        return {k: 1.0 if hi == lo else (v - lo) / (hi - lo) for k, v in scores.items()}

    nv, nk = (ranks(vector), ranks(keyword)) if ranked else (norm(vector), norm(keyword))
    return {k: alpha * nv.get(k, 0.0) + (1 - alpha) * nk.get(k, 0.0) for k in set(nv) | set(nk)}


class FakeWeaviateService(weaviate_pb2_grpc.WeaviateServicer):
    def __init__(self, state: State) -> None:
        self.state = state

    def _guard(self, name: str, context: grpc.ServicerContext) -> None:
        fault = self.state.take_fault(f"grpc {name}")
        if fault is not None:
            context.abort(grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == fault.status)), fault.message)

    def _selected(self, cls: StoredClass, objects: list[StoredObject], filters: base_pb2.Filters | None) -> list[StoredObject]:
        if filters is None:
            return objects
        return [o for o in objects if evaluate(filters, o, cls, supports_not=self.state.supports_not)]

    def Search(self, request: search_get_pb2.SearchRequest, context: grpc.ServicerContext) -> search_get_pb2.SearchReply:
        self._guard("Search", context)
        try:
            with self.state.lock:
                cls = self.state.get_class(request.collection)
                self._check_window(request)
                shard = self.state.shard(cls, request.tenant)
                pool = self._selected(cls, list(shard.objects.values()), request.filters if request.HasField("filters") else None)
                ranked = self._rank(request, pool)
        except FakeError as exc:
            context.abort(grpc.StatusCode.UNKNOWN, exc.message)
        by_id = {o.uuid: o for o in pool}
        wanted = list(request.properties.non_ref_properties)
        results = []
        for uid, distance, score in ranked[: request.limit or 10]:
            obj = by_id[uid]
            props = {k: v for k, v in obj.properties.items() if request.properties.return_all_nonref_properties or k in wanted}
            results.append(
                search_get_pb2.SearchResult(
                    properties=search_get_pb2.PropertiesResult(
                        non_ref_props=properties_pb2.Properties(fields={k: _value(v) for k, v in props.items()})
                    ),
                    metadata=search_get_pb2.MetadataResult(
                        id=uid,
                        id_as_bytes=uuid_lib.UUID(uid).bytes,
                        distance=distance or 0.0,
                        distance_present=distance is not None,
                        score=score or 0.0,
                        score_present=score is not None,
                    ),
                )
            )
        return search_get_pb2.SearchReply(results=results)

    def _check_window(self, request: search_get_pb2.SearchRequest) -> None:
        """adapters/repos/db/search.go getTotalLimit: offset + limit may not exceed QUERY_MAXIMUM_RESULTS."""
        most = self.state.query_maximum_results
        if request.offset + request.limit > most:
            raise FakeError(
                422,
                "query maximum results exceeded: the total limit calculated from the provided offset "
                f"'{request.offset}' and limit '{request.limit}' exceeds the configured value for "
                f"QUERY_MAXIMUM_RESULTS '{most}'. If you've supplied a negative offset or limit, this may be an "
                "underflow error",
            )

    def _rank(self, request: search_get_pb2.SearchRequest, pool: list[StoredObject]) -> list[tuple[str, float | None, float | None]]:
        if request.HasField("near_vector"):
            query = _vector(request.near_vector)
            dists = sorted((cosine_distance(query, o.vector), o.uuid) for o in pool)
            return [(uid, d, None) for d, uid in dists]
        if request.HasField("bm25_search"):
            props = list(request.bm25_search.properties) or ["text"]
            scores = self.state.bm25(pool, request.bm25_search.query, props)
            return [(uid, None, s) for uid, s in sorted(scores.items(), key=lambda kv: -kv[1])]
        if request.HasField("hybrid_search"):
            hybrid: base_search_pb2.Hybrid = request.hybrid_search
            query = _vector(hybrid.near_vector) if hybrid.HasField("near_vector") else _vector(hybrid)
            vector = {o.uuid: 1.0 - cosine_distance(query, o.vector) for o in pool} if query else {}
            keyword = self.state.bm25(pool, hybrid.query, list(hybrid.properties) or ["text"])
            alpha = hybrid.alpha_param if hybrid.use_alpha_param else hybrid.alpha
            ranked = hybrid.fusion_type != base_search_pb2.Hybrid.FUSION_TYPE_RELATIVE_SCORE
            fused = _fused(vector, keyword, alpha, ranked)
            return [(uid, None, s) for uid, s in sorted(fused.items(), key=lambda kv: -kv[1])]
        return [(o.uuid, None, None) for o in pool]

    def BatchObjects(self, request: batch_pb2.BatchObjectsRequest, context: grpc.ServicerContext) -> batch_pb2.BatchObjectsReply:
        self._guard("BatchObjects", context)
        errors = []
        with self.state.lock:
            for index, obj in enumerate(request.objects):
                try:
                    cls = self.state.get_class(obj.collection)
                except FakeError as exc:
                    errors.append(batch_pb2.BatchObjectsReply.BatchError(index=index, error=exc.message))
                    continue
                stored = StoredObject(uuid=obj.uuid, properties=_properties(obj.properties), vector=_vector(obj))
                if (error := self.state.put_object(cls, obj.tenant, stored)) is not None:
                    errors.append(batch_pb2.BatchObjectsReply.BatchError(index=index, error=error))
        return batch_pb2.BatchObjectsReply(errors=errors)

    def BatchDelete(self, request: batch_delete_pb2.BatchDeleteRequest, context: grpc.ServicerContext) -> batch_delete_pb2.BatchDeleteReply:
        self._guard("BatchDelete", context)
        try:
            with self.state.lock:
                cls = self.state.get_class(request.collection)
                shard = self.state.shard(cls, request.tenant)
                found = self._selected(cls, list(shard.objects.values()), request.filters)
                doomed = found[: self.state.query_maximum_results]  # adapters/repos/db/batch.go: at most the limit
                if not request.dry_run:
                    for obj in doomed:
                        del shard.objects[obj.uuid]
        except FakeError as exc:
            context.abort(grpc.StatusCode.UNKNOWN, exc.message)
        return batch_delete_pb2.BatchDeleteReply(matches=len(found), successful=len(doomed))

    def TenantsGet(self, request: tenants_pb2.TenantsGetRequest, context: grpc.ServicerContext) -> tenants_pb2.TenantsGetReply:
        self._guard("TenantsGet", context)
        try:
            with self.state.lock:
                tenants = self.state.get_class(request.collection).tenants
                names = list(request.names.values) if request.HasField("names") else list(tenants)
                found = [
                    tenants_pb2.Tenant(name=n, activity_status=TENANT_STATUS[self.state.status(tenants[n])])
                    for n in names
                    if n in tenants
                ]
        except FakeError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, exc.message)
        return tenants_pb2.TenantsGetReply(tenants=found)
