"""Write slots: at most N writes at a time per API key and per tenant, so one tenant cannot crowd out the rest."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bigrag_mcp.errors import LimitExceeded
from bigrag_mcp.services.ledger import Caller


class WriteSlots:
    """Counts this process's writes in flight; one beyond `limit` for the same key or tenant is refused at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._busy: Counter[tuple[str, str]] = Counter()

    @asynccontextmanager
    async def hold(self, caller: Caller, collection: str, tenant: str | None) -> AsyncIterator[None]:
        """A slot for the caller's key and for the tenant (the whole collection when it has no tenant field).

        The operator's own commands (no key: `ingest`, `quickstart`) are trusted and not bounded.
        """
        if caller.key_id is None:
            yield
            return
        holders = [("key", caller.key_id), ("tenant", f"{collection}/{tenant or ''}")]
        for kind, name in holders:
            if self._busy[(kind, name)] >= self.limit:
                who = f"tenant {tenant!r} of collection {collection!r}" if tenant else f"collection {collection!r}"
                raise LimitExceeded(
                    f"{'this API key' if kind == 'key' else who} already has {self.limit} writes in progress "
                    f"(BIGRAG_WRITE_CONCURRENCY); retry when one has finished"
                )
        self._busy.update(holders)
        try:
            yield
        finally:
            self._busy.subtract(holders)
            for holder in holders:
                if self._busy[holder] <= 0:
                    del self._busy[holder]
