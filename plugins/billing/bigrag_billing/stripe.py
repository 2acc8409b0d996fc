"""Stripe meter events: POST /v1/billing/meter_events, form-encoded, the event id as `identifier`."""

from __future__ import annotations

from datetime import timedelta

import httpx

from bigrag_billing.base import ExporterConfig, HttpExporter, unix_seconds
from bigrag_mcp.services.outbox import aware, post_delivery
from bigrag_mcp.store.models import utcnow
from bigrag_mcp.types import BillingEvent, DeliveryResult

BACKDATING_LIMIT = timedelta(days=35)


class StripeConfig(ExporterConfig):
    base_url: str = "https://api.stripe.com"


def decimal_string(value: float) -> str:
    """A meter value as Stripe wants it: a string, without a trailing `.0` for whole numbers."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def duplicate_identifier(response: httpx.Response) -> DeliveryResult | None:
    """Stripe refuses an identifier it has seen with 400 "An event already exists with identifier ..."."""
    if response.status_code != 400:
        return None
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return None
    if "already exists with identifier" in message:
        return DeliveryResult("duplicate", message)
    return None


class StripeExporter(HttpExporter):
    name = "stripe"
    config_type = StripeConfig

    async def deliver(self, event: BillingEvent, name: str, customer: str) -> DeliveryResult:
        if utcnow() - aware(event.timestamp) > BACKDATING_LIMIT:
            return DeliveryResult("failed", "Stripe accepts meter events from the past 35 days only")
        form = {
            "event_name": name,
            "payload[stripe_customer_id]": customer,
            "payload[value]": decimal_string(event.value),
            "identifier": event.id,
            "timestamp": str(unix_seconds(event.timestamp)),
        }
        return await post_delivery(self.client, "/v1/billing/meter_events", data=form, recognise=duplicate_identifier)
