"""Webhook subscriptions, their outbox deliveries, and the HMAC signature receivers verify.

Signature scheme: `X-BigRAG-Signature` is the lowercase hex HMAC-SHA256, keyed with the webhook secret, of
`f"{timestamp}.".encode() + raw_body`, where `timestamp` is the Unix-seconds value sent in `X-BigRAG-Timestamp`.
Receivers call `verify_signature` (or recompute it) and reject stale timestamps to stop replays.
`X-BigRAG-Delivery` is the outbox row id: the same on every retry of one delivery, so receivers can deduplicate.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bigrag_mcp.errors import InvalidArgument, NotFound
from bigrag_mcp.limits.fastpath import Prepared
from bigrag_mcp.services.bulk import fetch
from bigrag_mcp.services.outbox import Clock, aware, post_delivery
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import OutboxEvent, Webhook, utcnow
from bigrag_mcp.types import DeliveryResult

if TYPE_CHECKING:  # httpx is imported when a sender is made: commands that only enqueue events do not load it
    import httpx

EVENT_TYPES = frozenset(
    {"collection.created", "collection.deleted", "document.uploaded", "document.deleted", "tenant.offboarded",
     "quota.warning"}
)
SUBSCRIPTIONS = EVENT_TYPES | {"collection.*", "document.*", "quota.*"}
SECRET_PREFIX = "whsec_"
MAX_URL_CHARS = 2048


@dataclass(frozen=True)
class WebhookInfo:
    """A subscription as callers see it; `secret` is set only in the answer to create."""

    id: str
    url: str
    events: list[str]
    created_by: str | None
    created_at: datetime
    secret: str | None = None

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "id": self.id,
            "url": self.url,
            "events": self.events,
            "created_by": self.created_by,
            "created_at": aware(self.created_at).isoformat(),
        }
        if self.secret is not None:
            shown["secret"] = self.secret
        return shown


def _info(hook: Webhook, *, secret: str | None = None) -> WebhookInfo:
    return WebhookInfo(hook.id, hook.url, list(hook.events), hook.created_by, aware(hook.created_at), secret)


def _internal(address: str) -> bool:
    """Loopback, private, link-local (cloud metadata), reserved or otherwise not a public internet address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global


def _checked_url(url: str, *, allow_private: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > MAX_URL_CHARS:
        raise InvalidArgument(f"webhook url must be an http or https URL with a host, at most {MAX_URL_CHARS} chars")
    if not allow_private:
        host = parts.hostname
        try:
            internal = host == "localhost" or host.endswith(".localhost") or _internal(host)
        except ValueError:  # a host name: checked again where it resolves, at delivery time
            internal = False
        if internal:
            raise InvalidArgument(
                f"webhook url points at an internal address ({host}); use a public address, or set "
                "BIGRAG_WEBHOOK_ALLOW_PRIVATE=true for receivers inside your network"
            )
    return url


async def private_destination(url: str) -> str | None:
    """Why a delivery to `url` must not go out (its host resolves to an internal address), or None."""
    host = urlsplit(url).hostname or ""
    port = urlsplit(url).port or (443 if url.startswith("https") else 80)
    try:
        found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host}: {exc}"
    internal = sorted({str(info[4][0]) for info in found if _internal(str(info[4][0]))})
    return f"{host} resolves to internal address {internal[0]}" if internal else None


def _checked_events(events: Sequence[str]) -> list[str]:
    chosen = list(dict.fromkeys(events))
    unknown = [e for e in chosen if e not in SUBSCRIPTIONS]
    if not chosen or unknown:
        raise InvalidArgument(
            f"webhook events must be a non-empty list from {', '.join(sorted(SUBSCRIPTIONS))}; "
            f"unknown: {', '.join(unknown) or 'none given'}"
        )
    return chosen


def _checked_secret(secret: str | None) -> str:
    if secret is None:
        return SECRET_PREFIX + secrets.token_urlsafe(32)
    if not 16 <= len(secret) <= 128:
        raise InvalidArgument("a webhook secret must be 16 to 128 characters (leave it out to have one generated)")
    return secret


async def create_webhook(
    session: AsyncSession,
    url: str,
    events: Sequence[str],
    *,
    secret: str | None = None,
    created_by: str | None = None,
    allow_private: bool = False,
) -> WebhookInfo:
    """Add a subscription; the answer carries the signing secret, which is never shown again.

    Internal destinations (loopback, private, link-local) are refused unless `allow_private`.
    """
    hook = Webhook(
        id=f"wh_{uuid.uuid4().hex[:24]}",
        url=_checked_url(url, allow_private=allow_private),
        events=_checked_events(events),
        secret=_checked_secret(secret),
        created_by=created_by,
        created_at=utcnow(),
    )
    session.add(hook)
    await session.flush()
    return _info(hook, secret=hook.secret)


async def list_webhooks(session: AsyncSession) -> list[WebhookInfo]:
    """Every subscription, oldest first, without secrets."""
    hooks = (await session.scalars(select(Webhook).order_by(Webhook.created_at, Webhook.id))).all()
    return [_info(hook) for hook in hooks]


async def delete_webhook(session: AsyncSession, webhook_id: str) -> WebhookInfo:
    """Remove a subscription; deliveries still queued for it are parked by the sender, not sent."""
    hook = await session.get(Webhook, webhook_id)
    if hook is None:
        raise NotFound(f"no webhook with id {webhook_id!r}; webhooks_list shows the ids")
    await session.delete(hook)
    return _info(hook)


def subscribed(patterns: Sequence[str], event_type: str) -> bool:
    """Whether a subscription list covers `event_type` (exact name or `family.*`)."""
    family = event_type.split(".", 1)[0] + ".*"
    return event_type in patterns or family in patterns


async def enqueue_webhook_event(session: AsyncSession, event_type: str, data: Mapping[str, Any]) -> list[str]:
    """Queue one delivery per matching subscription in the caller's transaction; returns the delivery ids."""
    return await enqueue_webhook_events(session, [(event_type, data)])


@functools.cache
def _any_webhook() -> Prepared:
    """Whether any webhook is subscribed (compiled on first use)."""
    return Prepared(select(Webhook.id).limit(1))


async def enqueue_webhook_events(session: AsyncSession, events: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Queue deliveries for several events, reading the subscriptions once; returns the delivery ids."""
    for event_type, _ in events:
        if event_type not in EVENT_TYPES:
            raise InvalidArgument(f"unknown webhook event {event_type!r}; known: {', '.join(sorted(EVENT_TYPES))}")
    if not events or not await fetch(session, _any_webhook(), {}):  # most stores have none: one plain read
        return []
    hooks = (await session.scalars(select(Webhook).order_by(Webhook.id))).all()
    now = utcnow()
    delivery_ids = []
    for event_type, data in events:
        body = {"id": f"evt_{uuid.uuid4().hex}", "type": event_type, "created_at": now.isoformat(), "data": dict(data)}
        for hook in hooks:
            if subscribed(hook.events, event_type):
                delivery_id = f"dlv_{uuid.uuid4().hex}"
                session.add(
                    OutboxEvent(
                        id=delivery_id,
                        kind="webhook",
                        target=hook.id,
                        payload=body,
                        status="pending",
                        attempts=0,
                        next_attempt_at=now,
                        created_at=now,
                    )
                )
                delivery_ids.append(delivery_id)
    return delivery_ids


def raw_body(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent (and signed) for a stored delivery payload."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str,
    timestamp: str | int,
    body: bytes,
    signature: str,
    *,
    tolerance: float = 300.0,
    now: datetime | None = None,
) -> bool:
    """True when `signature` is ours for this body and timestamp, and the timestamp is within `tolerance` seconds."""
    try:
        stamp = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((now or utcnow()).timestamp() - stamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, stamp, body), signature.strip().lower())


class WebhookSender:
    """Posts stored deliveries to their webhook's URL, signed; a deleted webhook fails its deliveries.

    Unless `allow_private`, a URL whose host resolves to an internal address is refused at send time too, so a
    public name later pointed at an internal address (DNS rebinding) reaches nothing inside the network.
    """

    def __init__(
        self,
        db: Database,
        *,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
        clock: Clock = utcnow,
        allow_private: bool = False,
    ) -> None:
        self.db = db
        self.allow_private = allow_private
        self._own_client = client is None
        if client is None:
            import httpx

            client = httpx.AsyncClient(timeout=timeout, headers={"User-Agent": "bigrag-mcp-webhooks"})
        self.client = client
        self.clock = clock

    async def send(self, delivery_id: str, target: str, payload: Mapping[str, Any]) -> DeliveryResult:
        async with self.db.session() as s:
            hook = await s.get(Webhook, target)
            url, secret = (hook.url, hook.secret) if hook is not None else ("", "")
        if hook is None:
            return DeliveryResult("failed", f"webhook {target} was deleted")
        if not self.allow_private:
            refused = await private_destination(url)
            if refused is not None:
                return DeliveryResult("failed", f"delivery refused: {refused} (BIGRAG_WEBHOOK_ALLOW_PRIVATE=true allows it)")
        body = raw_body(payload)
        timestamp = int(self.clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            "X-BigRAG-Signature": sign(secret, timestamp, body),
            "X-BigRAG-Timestamp": str(timestamp),
            "X-BigRAG-Event": str(payload.get("type", "")),
            "X-BigRAG-Delivery": delivery_id,
        }
        return await post_delivery(self.client, url, content=body, headers=headers)

    async def close(self) -> None:
        if self._own_client:
            await self.client.aclose()
