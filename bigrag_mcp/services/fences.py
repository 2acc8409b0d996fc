"""Tenant fences: once a tenant is offboarded, no write of it commits until an operator re-admits it."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from sqlalchemy import ColumnElement, and_, bindparam, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.errors import NotFound, PermissionDenied
from bigrag_mcp.limits.fastpath import Prepared, SqliteFastPath
from bigrag_mcp.services.bulk import fetch
from bigrag_mcp.services.ledger import OPERATOR, Activity, Caller
from bigrag_mcp.store.models import NO_TENANT, TenantFence

if TYPE_CHECKING:  # the runtime imports the index gate, which checks fences
    from bigrag_mcp.services.runtime import Runtime


class Fence(BaseModel):
    collection: str
    tenant: str  # the tenant that was offboarded
    whole_collection: bool
    offboarded_at: datetime
    offboarded_by: str | None


class ReadmitResult(BaseModel):
    collection: str
    tenant: str
    readmitted: int


def _fencing(collection: Any, tenant: Any) -> ColumnElement[bool]:
    """The fences that refuse writes of `tenant` to `collection`: its own, or the whole collection's."""
    return and_(TenantFence.collection == collection, or_(TenantFence.tenant == tenant, TenantFence.tenant == NO_TENANT))


@functools.cache
def _fenced() -> Prepared:
    """Whether a fence refuses the write (one plain column; compiled on first use)."""
    return Prepared(select(TenantFence.offboarded_tenant).where(_fencing(bindparam("collection"), bindparam("tenant"))).limit(1))


def _fenced_values(collection: str, tenant: str | None) -> dict[str, str]:
    """The parameters of `_fenced`."""
    return {"collection": collection, "tenant": tenant or NO_TENANT}


async def check_admitted(session: AsyncSession, collection: str, tenant: str | None) -> None:
    """Refuse a write to a fenced tenant (or a fenced collection); call it inside the write's transaction."""
    if not await fetch(session, _fenced(), _fenced_values(collection, tenant)):
        return  # the common case, in one statement; a fence found is read whole for the refusal's text
    found = await session.scalar(select(TenantFence).where(_fencing(collection, tenant or NO_TENANT)))
    if found is not None:
        raise PermissionDenied(
            f"tenant {found.offboarded_tenant!r} of collection {collection!r} was offboarded at "
            f"{found.offboarded_at.isoformat(timespec='seconds')}; its writes are refused until an operator runs "
            f"`bigrag-mcp tenants readmit {collection} {found.offboarded_tenant}`"
        )


def unfenced_at_once(fast: SqliteFastPath, collection: str, tenant: str | None) -> bool:
    """True when the store's fast path answers at once that no fence refuses a write; False when a fence does or the
    store is busy (then `check_admitted` in a session). A check before the work, not the write's."""
    return fast.fetch(_fenced(), _fenced_values(collection, tenant)) == []


async def fence(session: AsyncSession, collection: str, tenant: str, *, whole_collection: bool, caller: Caller) -> None:
    """Fence `tenant` of `collection` (the whole collection for collection-per-tenant) in the caller's transaction."""
    column = NO_TENANT if whole_collection else tenant
    if await session.get(TenantFence, (collection, column)) is None:
        session.add(TenantFence(collection=collection, tenant=column, offboarded_tenant=tenant, offboarded_by=caller.key_id))
        await session.flush()


async def list_fences(rt: Runtime) -> list[Fence]:
    async with rt.db.session() as session:
        rows = await session.scalars(select(TenantFence).order_by(TenantFence.collection, TenantFence.tenant))
        return [
            Fence(
                collection=r.collection,
                tenant=r.offboarded_tenant,
                whole_collection=r.tenant == NO_TENANT,
                offboarded_at=r.offboarded_at,
                offboarded_by=r.offboarded_by,
            )
            for r in rows
        ]


async def readmit(rt: Runtime, collection: str, tenant: str, *, caller: Caller = OPERATOR) -> ReadmitResult:
    """Lift the fence an offboarding put on `tenant` of `collection`, audited."""
    async with rt.db.session() as session:
        removed = await session.execute(
            delete(TenantFence).where(TenantFence.collection == collection, TenantFence.offboarded_tenant == tenant)
        )
        count = int(removed.rowcount or 0)  # type: ignore[attr-defined]
        if not count:
            raise NotFound(f"tenant {tenant!r} of collection {collection!r} is not fenced; `tenants fences` lists the fenced ones")
        await rt.ledger.record(
            session,
            caller,
            Activity(action="tenant.readmitted", collection=collection, tenant=tenant, resource_type="tenant", resource_id=tenant),
        )
    return ReadmitResult(collection=collection, tenant=tenant, readmitted=count)
