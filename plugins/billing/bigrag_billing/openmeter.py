"""OpenMeter: one CloudEvents 1.0 event per POST /api/v1/events; OpenMeter deduplicates on source + id."""

from __future__ import annotations

import json
from datetime import UTC

from bigrag_billing.base import ExporterConfig, HttpExporter, event_properties
from bigrag_mcp.services.outbox import aware, post_delivery
from bigrag_mcp.types import BillingEvent, DeliveryResult


class OpenMeterConfig(ExporterConfig):
    key_required = False  # a self-hosted OpenMeter may run without authentication
    base_url: str = "https://openmeter.cloud"
    source: str = "bigrag-mcp"


class OpenMeterExporter(HttpExporter):
    name = "openmeter"
    config_type = OpenMeterConfig

    async def deliver(self, event: BillingEvent, name: str, customer: str) -> DeliveryResult:
        assert isinstance(self.config, OpenMeterConfig)
        cloud_event = {
            "specversion": "1.0",
            "type": name,
            "id": event.id,
            "source": self.config.source,
            "subject": customer,
            "time": aware(event.timestamp).astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "data": event_properties(event),
        }
        return await post_delivery(
            self.client,
            "/api/v1/events",
            content=json.dumps(cloud_event).encode(),
            headers={"Content-Type": "application/cloudevents+json"},
        )
