"""Work a server does beside answering calls: relaying the outbox (billing events and webhooks)."""

from __future__ import annotations

import logging

import anyio

from bigrag_mcp.services.outbox import OutboxRelay, build_exporters
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.services.webhooks import WebhookSender

log = logging.getLogger(__name__)
STOP_GRACE_SECONDS = 10.0  # how long a stopping server lets the relay finish the pass it is in


def relay_for(rt: Runtime) -> OutboxRelay:
    """The relay with every configured billing exporter and the webhook sender."""
    exporters = build_exporters(rt.settings.billing_exporters, rt.registry.billing_exporters)
    return OutboxRelay(rt.db, exporters, WebhookSender(rt.db, allow_private=rt.settings.webhook_allow_private))


async def background_work(rt: Runtime, stop: anyio.Event) -> None:
    """Relay the outbox until `stop` is set. The pass in flight then finishes, so no store call is cut off halfway
    (a statement cancelled inside the SQLite driver's thread can leave a connection that never closes)."""
    relay = relay_for(rt)
    try:
        await relay.run_forever(stop, rt.settings.relay_interval_s)
    finally:
        with anyio.CancelScope(shield=True):
            await relay.close()
