"""Registers the "stripe", "openmeter" and "lago" billing exporters with bigrag-mcp."""

from __future__ import annotations

from collections.abc import Callable

from bigrag_billing.base import HttpExporter
from bigrag_billing.lago import LagoExporter
from bigrag_billing.openmeter import OpenMeterExporter
from bigrag_billing.stripe import StripeExporter
from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.types import BillingExporterFactory


@hookimpl
def register_billing_exporters(register: Callable[[str, BillingExporterFactory], None]) -> None:
    exporters: tuple[type[HttpExporter], ...] = (StripeExporter, OpenMeterExporter, LagoExporter)
    for exporter in exporters:
        register(exporter.name, exporter.from_config)
