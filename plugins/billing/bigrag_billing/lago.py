"""Lago: POST /api/v1/events with the event id as `transaction_id`, its idempotency key."""

from __future__ import annotations

import httpx

from bigrag_billing.base import ExporterConfig, HttpExporter, event_properties, unix_seconds
from bigrag_mcp.services.outbox import post_delivery
from bigrag_mcp.types import BillingEvent, DeliveryResult


class LagoConfig(ExporterConfig):
    base_url: str = "https://api.getlago.com"


def duplicate_transaction(response: httpx.Response) -> DeliveryResult | None:
    """Lago answers a transaction_id it already holds with 422 and `value_already_exist` on that field."""
    if response.status_code != 422:
        return None
    try:
        problems = response.json()["error_details"]["transaction_id"]
    except (ValueError, KeyError, TypeError):
        return None
    if "value_already_exist" in problems:
        return DeliveryResult("duplicate", "Lago already holds this transaction_id")
    return None


class LagoExporter(HttpExporter):
    name = "lago"
    config_type = LagoConfig

    async def deliver(self, event: BillingEvent, name: str, customer: str) -> DeliveryResult:
        body = {
            "event": {
                "transaction_id": event.id,
                "external_subscription_id": customer,
                "code": name,
                "timestamp": unix_seconds(event.timestamp),
                "properties": event_properties(event),
            }
        }
        return await post_delivery(self.client, "/api/v1/events", json=body, recognise=duplicate_transaction)
