"""Registers the "stripe", "openmeter" and "lago" billing exporters with bigrag-mcp (each exporter's module, and the
HTTP client, load when an exporter is made, not with the plugin)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.types import BillingExporterFactory

if TYPE_CHECKING:
    from bigrag_billing.base import HttpExporter

EXPORTERS = {"stripe": "StripeExporter", "openmeter": "OpenMeterExporter", "lago": "LagoExporter"}  # name -> class


def exporter_class(name: str) -> type[HttpExporter]:
    """The class of exporter `name`, from the module of the same name."""
    exporter: type[HttpExporter] = getattr(importlib.import_module(f"bigrag_billing.{name}"), EXPORTERS[name])
    return exporter


def _factory(name: str) -> BillingExporterFactory:
    def make(config: Mapping[str, Any]) -> HttpExporter:
        return exporter_class(name).from_config(config)

    return make


@hookimpl
def register_billing_exporters(register: Callable[[str, BillingExporterFactory], None]) -> None:
    for name in EXPORTERS:
        register(name, _factory(name))
