"""Work a server does beside answering calls: relaying the outbox (billing events and webhooks)."""

from __future__ import annotations

import logging

import anyio

from bigrag_mcp.services.outbox import OutboxRelay, build_exporters
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.services.webhooks import WebhookSender

log = logging.getLogger(__name__)
RELAY_INTERVAL_SECONDS = 5.0


def relay_for(rt: Runtime) -> OutboxRelay:
    """The relay with every configured billing exporter and the webhook sender."""
    exporters = build_exporters(rt.settings.billing_exporters, rt.registry.billing_exporters)
    return OutboxRelay(rt.db, exporters, WebhookSender(rt.db, allow_private=rt.settings.webhook_allow_private))


async def background_work(rt: Runtime) -> None:
    relay = relay_for(rt)
    stop = anyio.Event()
    try:
        await relay.run_forever(stop, RELAY_INTERVAL_SECONDS)
    finally:
        stop.set()
        with anyio.CancelScope(shield=True):
            await relay.close()
