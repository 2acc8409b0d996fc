"""One place that turns what a service did into usage rows, audit rows, billing events and webhooks."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.services.runtime import Caller
from bigrag_mcp.store.models import Collection


@dataclass(frozen=True)
class Activity:
    """What happened, in the caller's transaction: an action name and the figures it moved."""

    action: str  # e.g. "collection.created", "document.uploaded", "query"
    collection: str | None
    tenant: str | None = None
    resource_type: str = "collection"
    resource_id: str | None = None
    documents: int = 0
    chunks: int = 0
    storage_bytes: int = 0
    embedding_tokens: int | None = None
    provider: str | None = None
    model: str | None = None
    latency_ms: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, action: str, collection: Collection, **figures: Any) -> Activity:
        return cls(action=action, collection=collection.name, resource_id=figures.pop("resource_id", collection.name), **figures)

    def but(self, **changes: Any) -> Activity:
        return replace(self, **changes)


async def record(session: AsyncSession, caller: Caller, activity: Activity) -> None:
    """Write the activity's traces inside the caller's transaction, so they commit or roll back with the work."""
