"""Raw vectors: upsert and delete records the caller embedded; ids are scoped to the tenant."""

from __future__ import annotations

import math
import re
from typing import Any

from sqlalchemy import select

from bigrag_mcp.errors import InvalidArgument, LimitExceeded, TenantRequired
from bigrag_mcp.schemas import DeleteResult, UpsertResult
from bigrag_mcp.services.collections import load, tenant_of_row
from bigrag_mcp.services.documents import check_metadata, check_tenant_argument, tenant_from_metadata
from bigrag_mcp.services.index import vector_bytes
from bigrag_mcp.services.ledger import OPERATOR, Activity, Caller
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.store.models import NO_TENANT, Chunk
from bigrag_mcp.types import VectorRecord

VECTOR_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")
MAX_UPSERT = 1000
MAX_DELETE = 10_000


def check_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not VECTOR_ID.match(value):
        raise InvalidArgument(f"{where} must be 1–200 characters of letters, digits, '_', '-', '.', ':' ('#' is reserved for document chunks)")
    return value


async def upsert(rt: Runtime, collection_name: str, vectors: list[dict[str, Any]], *, caller: Caller = OPERATOR) -> UpsertResult:
    """Insert or replace records {id, vector, text?, metadata}; all of one call belong to one tenant."""
    if not vectors:
        raise InvalidArgument("vectors must hold at least one record")
    if len(vectors) > MAX_UPSERT:
        raise LimitExceeded(f"upsert at most {MAX_UPSERT} vectors a call")
    collection = await load(rt, collection_name)
    records: list[VectorRecord] = []
    tenants: set[str | None] = set()
    for i, raw in enumerate(vectors):
        where = f"vectors[{i}]"
        if not isinstance(raw, dict):
            raise InvalidArgument(f"{where} must be an object with id, vector, text and metadata")
        unknown = set(raw) - {"id", "vector", "text", "metadata"}
        if unknown:
            raise InvalidArgument(f"{where} has unknown fields {sorted(unknown)}")
        record_id = check_id(raw.get("id"), f"{where}.id")
        vector = raw.get("vector")
        if (
            not isinstance(vector, list)
            or len(vector) != collection.dimension
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in vector)
        ):
            raise InvalidArgument(f"{where}.vector must be a list of {collection.dimension} finite numbers")
        if not any(vector):
            raise InvalidArgument(f"{where}.vector is all zeros: it has no direction to search by")
        text = raw.get("text")
        if text is not None and not isinstance(text, str):
            raise InvalidArgument(f"{where}.text must be a string")
        metadata = check_metadata(collection, raw.get("metadata"), f"{where}.metadata")
        tenants.add(tenant_from_metadata(collection, metadata, f"{where}.metadata"))
        records.append(VectorRecord(record_id, [float(x) for x in vector], text, metadata))
    if len({r.id for r in records}) != len(records):
        raise InvalidArgument("vectors holds the same id more than once")
    if len(tenants) > 1:
        raise TenantRequired("all vectors of one call must belong to the same tenant; send one call per tenant")
    tenant = tenants.pop()
    async with rt.writes.hold(caller, collection.name, tenant), rt.index.writing(collection, tenant) as write:
        existing = {
            c.record_id: c
            for c in await write.session.scalars(
                select(Chunk).where(
                    Chunk.collection_id == collection.id,
                    Chunk.tenant == (tenant or NO_TENANT),
                    Chunk.record_id.in_([r.id for r in records]),
                )
            )
        }
        for rec in records:
            row = existing.get(rec.id)
            if row is None:
                write.session.add(
                    Chunk(
                        collection_id=collection.id,
                        tenant=tenant or NO_TENANT,
                        record_id=rec.id,
                        text=rec.text,
                        metadata_=dict(rec.metadata),
                        vector=vector_bytes(rec.vector),
                    )
                )
            else:
                row.text, row.metadata_, row.vector = rec.text, dict(rec.metadata), vector_bytes(rec.vector)
        await write.session.flush()
        await write.upsert(records)
        await rt.ledger.record(
            write.session,
            caller,
            Activity.of(
                "vectors.upserted",
                collection,
                tenant=tenant,
                resource_type="vector",
                chunks=len(records) - len(existing),
                details={"count": len(records)},
            ),
        )
    return UpsertResult(upserted=len(records), ids=[r.id for r in records])


async def delete(
    rt: Runtime, collection_name: str, ids: list[str], *, tenant: str | None = None, caller: Caller = OPERATOR
) -> DeleteResult:
    """Delete raw vectors by id (document chunks go with documents_delete)."""
    if not ids:
        raise InvalidArgument("ids must name at least one vector")
    if len(ids) > MAX_DELETE:
        raise LimitExceeded(f"delete at most {MAX_DELETE} ids a call")
    wanted = [check_id(v, f"ids[{i}]") for i, v in enumerate(ids)]
    collection = await load(rt, collection_name)
    tenant_value = check_tenant_argument(collection, tenant)
    async with rt.index.writing(collection, tenant_of_row(tenant_value)) as write:
        rows = list(
            await write.session.scalars(
                select(Chunk).where(
                    Chunk.collection_id == collection.id,
                    Chunk.tenant == tenant_value,
                    Chunk.document_id.is_(None),
                    Chunk.record_id.in_(set(wanted)),
                )
            )
        )
        for row in rows:
            await write.session.delete(row)
        await write.session.flush()
        if rows:
            await write.delete([r.record_id for r in rows])
            await rt.ledger.record(
                write.session,
                caller,
                Activity.of(
                    "vectors.deleted", collection, tenant=tenant_of_row(tenant_value), resource_type="vector", chunks=-len(rows)
                ),
            )
    found = {r.record_id for r in rows}
    unique = list(dict.fromkeys(wanted))
    return DeleteResult(deleted=[i for i in unique if i in found], not_found=[i for i in unique if i not in found])
