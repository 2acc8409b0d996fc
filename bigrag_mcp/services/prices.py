"""Embedding prices per provider and model: the built-in table, optionally overridden by a TOML file."""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from bigrag_mcp.errors import InvalidArgument

ANY_MODEL = "*"


@dataclass(frozen=True)
class PriceTable:
    """USD per million embedding tokens keyed by (provider, model); model "*" covers a provider's other models."""

    embedding: Mapping[tuple[str, str], float]

    def price(self, provider: str | None, model: str | None) -> float | None:
        """The price per million tokens, or None when the model is not priced (its cost is unknown, not zero)."""
        if provider is None:
            return None
        if model is not None and (provider, model) in self.embedding:
            return self.embedding[(provider, model)]
        return self.embedding.get((provider, ANY_MODEL))


def _parse(text: str, source: str) -> dict[tuple[str, str], float]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"price file {source} is not valid TOML: {exc}") from exc
    unknown = set(data) - {"embedding"}
    if unknown:
        raise InvalidArgument(f"price file {source} has unknown sections {sorted(unknown)}; only [embedding] is known")
    prices: dict[tuple[str, str], float] = {}
    for provider, models in data.get("embedding", {}).items():
        if not isinstance(models, dict):
            raise InvalidArgument(f"price file {source}: [embedding.{provider}] must be a table of models")
        for model, entry in models.items():
            prices[(provider, model)] = _price_of(entry, f"{source}: [embedding.{provider}.{model!r}]")
    return prices


def _price_of(entry: Any, where: str) -> float:
    value = entry.get("usd_per_million_tokens") if isinstance(entry, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidArgument(f"{where} needs usd_per_million_tokens, a number >= 0")
    return float(value)


def load_prices(override: Path | None = None) -> PriceTable:
    """The built-in table, with the entries of `override` (e.g. settings.price_file) replacing or adding models."""
    builtin = resources.files("bigrag_mcp").joinpath("prices.toml").read_text(encoding="utf-8")
    prices = _parse(builtin, "prices.toml (built-in)")
    if override is not None:
        try:
            text = override.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidArgument(f"cannot read price file {override}: {exc.strerror}") from exc
        prices.update(_parse(text, str(override)))
    return PriceTable(embedding=prices)
