"""The `[[limits]]` declaration of a policy file, validated by pydantic (the loader names the line of a fault)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Metric = Literal[
    "requests", "queries", "chats", "documents", "chunks", "storage_bytes", "embedding_tokens", "chat_tokens", "cost_usd"
]
Per = Literal["minute", "hour", "day", "month", "total"]
Mode = Literal["hard", "soft"]
EACH = "*"
DIMENSIONS = ("key_id", "role", "collection", "tenant")
MICRO_USD = 1_000_000  # cost_usd counters count micro-dollars, so every counter is an exact integer
# Quantities that exist until deleted: a `total` counter of these goes down when data is deleted.
STANDING = frozenset({"documents", "chunks", "storage_bytes"})


class AppliesTo(BaseModel):
    """Whom a limit counts: a value matches only that one; "*" keeps a counter for each value; absent = all together."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str | None = None
    role: str | None = None
    collection: str | None = None
    tenant: str | None = None

    @field_validator("key_id", "role", "collection", "tenant")
    @classmethod
    def _named(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or len(value) > 256):
            raise ValueError('must be "*" or a non-empty name of at most 256 characters')
        return value


class Limit(BaseModel):
    """One quota, rate limit or spend cap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100, description="Shown in errors, usage and webhooks; unique.")
    applies_to: AppliesTo = Field(default_factory=AppliesTo)
    metric: Metric
    max: float = Field(gt=0, description="The cap per window; a whole number except for cost_usd.")
    per: Per
    mode: Mode = "hard"
    warn_at: list[float] | None = Field(
        default=None, description="Fractions of max whose crossing sends quota.warning (default: [1.0] for soft limits)."
    )

    @field_validator("max")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("max must be a finite number")
        return value

    @field_validator("warn_at")
    @classmethod
    def _fractions(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not all(0 < f <= 1 for f in value):
            raise ValueError("warn_at holds fractions of max, each above 0 and at most 1")
        return None if value is None else sorted(set(value))

    @model_validator(mode="after")
    def _whole(self) -> Limit:
        if self.metric != "cost_usd" and self.max != int(self.max):
            raise ValueError(f"max of a {self.metric} limit must be a whole number")
        return self

    @property
    def cap(self) -> int:
        """The cap in counter units (micro-dollars for cost_usd)."""
        return round(self.max * MICRO_USD) if self.metric == "cost_usd" else int(self.max)

    @property
    def thresholds(self) -> list[float]:
        """The fractions of max that send a warning when crossed."""
        if self.warn_at is not None:
            return self.warn_at
        return [1.0] if self.mode == "soft" else []


def show(metric: str, units: int) -> float | int:
    """A counter value as people read it: dollars for cost_usd, the count otherwise."""
    return units / MICRO_USD if metric == "cost_usd" else int(units)
