"""Offboarding: remove every trace of one tenant — its data, its index partition and its keys — in one go."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import delete, func, or_, select

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.services.collections import revoke_keys
from bigrag_mcp.services.fences import fence
from bigrag_mcp.services.ledger import OPERATOR, Activity, Caller
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.store.models import ApiKey, Chunk, Collection, Document


class OffboardResult(BaseModel):
    collection: str
    tenant: str
    pattern: str  # "collection_per_tenant" | "shared_collection"
    collection_dropped: bool
    documents_removed: int
    vectors_removed: int
    storage_bytes_removed: int
    keys_revoked: int
    already_offboarded: bool


async def offboard(rt: Runtime, collection_name: str, tenant: str, *, caller: Caller = OPERATOR) -> OffboardResult:
    """Pattern A drops the tenant's own collection; pattern B deletes the tenant's rows from the shared one.

    Keys pinned to what was removed are revoked in the same transaction, and the tenant is fenced: no write of it
    commits afterwards, not even one already in flight, until an operator re-admits it. Running it again removes nothing.
    """
    if not isinstance(tenant, str) or not tenant.strip():
        raise InvalidArgument("tenant must be a non-empty string")
    async with rt.db.session() as session:
        collection = await session.scalar(select(Collection).where(Collection.name == collection_name))
        shared = collection is not None and collection.tenant_field is not None
        scope = [Document.collection_id == collection.id] if collection is not None else []
        if shared:
            scope.append(Document.tenant == tenant)
        documents = stored = vectors = 0
        if collection is not None:
            # fence first, and take the partition's generation row: a write in flight then either committed
            # before this (and is deleted below) or checks the fence after us and is refused
            await fence(session, collection_name, tenant, whole_collection=not shared, caller=caller)
            if shared:
                await rt.index.record(session, collection, tenant, None)
            documents, stored = (await session.execute(
                select(func.count(), func.coalesce(func.sum(Document.size_bytes), 0)).where(*scope)
            )).one()
            chunk_scope = [Chunk.collection_id == collection.id] + ([Chunk.tenant == tenant] if shared else [])
            vectors = int(await session.scalar(select(func.count()).select_from(Chunk).where(*chunk_scope)) or 0)
            if shared:
                await session.execute(delete(Chunk).where(*chunk_scope))
                await session.execute(delete(Document).where(*scope))
            else:
                await session.delete(collection)
            await rt.index.drop_joined(session, collection, tenant if shared else None)
        pinned = (
            (ApiKey.tenant == tenant) & or_(ApiKey.collection == collection_name, ApiKey.collection.is_(None))
            if shared
            else ApiKey.collection == collection_name
        )
        revoked = await revoke_keys(session, pinned)
        nothing = collection is None or (shared and documents == 0 and vectors == 0)
        if not (nothing and revoked == 0):
            await rt.ledger.record(
                session,
                caller,
                Activity(
                    action="tenant.offboarded",
                    collection=collection_name,
                    collection_uid=collection.uid if collection is not None else None,
                    tenant=tenant,
                    resource_type="tenant",
                    resource_id=tenant,
                    documents=-int(documents),
                    chunks=-vectors,
                    storage_bytes=-int(stored),
                    details={"keys_revoked": revoked, "collection_dropped": not shared and collection is not None},
                ),
            )
        await rt.limits.forget(session, collection_name, tenant if shared else None)
    if collection is not None:
        await rt.index.drop(collection, tenant if shared else None)
    return OffboardResult(
        collection=collection_name,
        tenant=tenant,
        pattern="shared_collection" if shared else "collection_per_tenant",
        collection_dropped=collection is not None and not shared,
        documents_removed=int(documents),
        vectors_removed=vectors,
        storage_bytes_removed=int(stored),
        keys_revoked=revoked,
        already_offboarded=nothing and revoked == 0,
    )
