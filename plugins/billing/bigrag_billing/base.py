"""What the HTTP exporters share: configuration, the tenant->customer mapping, and the httpx client."""

from __future__ import annotations

import os
import string
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.types import BillingEvent, DeliveryResult

TEMPLATE_FIELDS = frozenset({"tenant", "collection"})


class ExporterConfig(BaseModel):
    """One exporter's settings, as given under its name in BIGRAG_BILLING_EXPORTERS."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    key_required: ClassVar[bool] = True

    base_url: str
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(default=None, description="Read the API key from this environment variable.")
    events: dict[str, str] = Field(default_factory=dict, description="bigrag event -> service event; empty = same.")
    customers: dict[str, str] = Field(default_factory=dict, description="tenant (or collection) -> customer id.")
    customer_template: str | None = Field(
        default="{tenant}", description="Fallback customer id; {tenant} {collection}."
    )
    timeout: float = Field(default=10.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("customer_template")
    @classmethod
    def _known_fields(cls, value: str | None) -> str | None:
        if value is not None:
            used = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
            if used - TEMPLATE_FIELDS:
                raise ValueError(f"customer_template may use only {{tenant}} and {{collection}}, not {sorted(used)}")
        return value

    def api_secret(self) -> str | None:
        """The API key from `api_key` or `api_key_env`; refuses a missing one where the service needs it."""
        secret = self.api_key.get_secret_value() if self.api_key else None
        if secret is None and self.api_key_env:
            secret = os.environ.get(self.api_key_env) or None
        if secret is None and self.key_required:
            raise InvalidArgument("this billing exporter needs api_key, or api_key_env naming a set variable")
        return secret

    def event_name(self, event: str) -> str | None:
        return self.events.get(event) if self.events else event

    def customer(self, event: BillingEvent) -> str | None:
        """The customer billed for `event`: `customers[tenant]`, then `customers[collection]`, then the template."""
        for key in (event.tenant, event.collection):
            if key is not None and key in self.customers:
                return self.customers[key]
        if self.customer_template is None:
            return None
        known = {"tenant": event.tenant, "collection": event.collection}
        try:
            return self.customer_template.format(**{k: v for k, v in known.items() if v is not None}) or None
        except KeyError:
            return None


def event_properties(event: BillingEvent) -> dict[str, Any]:
    """The event's properties with its value and, when set, its collection and tenant."""
    extra = {"value": event.value, "collection": event.collection, "tenant": event.tenant}
    return {**event.properties, **{k: v for k, v in extra.items() if v is not None}}


def unix_seconds(moment: datetime) -> int:
    return int(moment.replace(tzinfo=moment.tzinfo or UTC).timestamp())


class HttpExporter:
    """Resolves the event name and customer, then hands the event to `deliver`; subclasses speak one service."""

    name: str
    config_type: ClassVar[type[ExporterConfig]]

    def __init__(self, config: ExporterConfig) -> None:
        self.config = config
        headers = {"User-Agent": "bigrag-billing"}
        secret = config.api_secret()
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        self.client = httpx.AsyncClient(base_url=config.base_url, timeout=config.timeout, headers=headers)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        try:
            parsed = cls.config_type.model_validate(dict(config))
        except ValidationError as exc:  # never echo the input: it may hold the API key
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors(include_input=False)
            )
            raise InvalidArgument(f"{cls.name} billing exporter config: {problems}") from None
        return cls(parsed)

    async def send(self, event: BillingEvent) -> DeliveryResult:
        name = self.config.event_name(event.event)
        if name is None:
            return DeliveryResult("failed", f"no {self.name} event name for {event.event!r}; add it to 'events'")
        customer = self.config.customer(event)
        if customer is None:
            return DeliveryResult(
                "failed",
                f"no customer for tenant={event.tenant!r} collection={event.collection!r}; "
                "add it to 'customers' or set 'customer_template'",
            )
        return await self.deliver(event, name, customer)

    async def deliver(self, event: BillingEvent, name: str, customer: str) -> DeliveryResult:
        raise NotImplementedError

    async def close(self) -> None:
        await self.client.aclose()
