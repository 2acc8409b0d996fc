"""The filter language as Weaviate `Filter` trees, exactly where Weaviate can express it.

`translate` returns a native filter (or True for "no restriction", False for "nothing matches") and whether it
is exact. When it is not exact the native filter is a superset, and the backend checks `filters.matches` on
each candidate after the query (over-fetching). Native forms:
- `$eq`/`$in`: `contains_any` on the typed array property of each value's type (any element matches);
- numeric ranges: `greater_than` ... on `meta_f__n` (Weaviate matches an array when any element does);
- `$exists`: `contains_any` on `bigrag_fields`;
- `$ne`, `$nin`, `$not`, `$exists: false`: `Filter.not_` (Weaviate 1.33+), so missing fields pass them;
- a comparison on a property no record has written yet is decided without asking Weaviate.
Post-query: string ranges (narrowed to records that have the field), every negation on servers before 1.33, and
every comparison on a field that has no property (not declared filterable, or a name too long for Weaviate).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from weaviate.classes.query import Filter
from weaviate.collections.classes.filters import _Filters

from bigrag_mcp.filters import And, Compare, FilterNode, Not
from bigrag_weaviate.records import FIELDS, kind_of, meta_property, typed_value

Native = _Filters | bool
RANGES: dict[str, Callable[[Any, Any], _Filters]] = {
    "$gt": lambda p, v: p.greater_than(v),
    "$gte": lambda p, v: p.greater_or_equal(v),
    "$lt": lambda p, v: p.less_than(v),
    "$lte": lambda p, v: p.less_or_equal(v),
}


@dataclass(frozen=True)
class Translation:
    native: Native
    exact: bool


class Translator:
    """Translate against the properties a class has and what the server supports."""

    def __init__(self, known: Iterable[str], *, supports_not: bool, indexed: Callable[[str], bool]) -> None:
        self.known = set(known)
        self.supports_not = supports_not
        self.indexed = indexed

    def has_properties(self, field: str) -> bool:
        """Whether the field's values are written to typed properties (else only to `bigrag_meta`)."""
        return self.indexed(field) and meta_property(field, "t") is not None

    def __call__(self, node: FilterNode | None) -> Translation:
        if node is None:
            return Translation(True, True)
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, Not):
            return self.negate(self(node.item))
        parts = [self(n) for n in node.items]
        exact = all(p.exact for p in parts)
        natives = [p.native for p in parts]
        if isinstance(node, And):
            if any(n is False for n in natives):
                return Translation(False, exact)
            rest = [n for n in natives if not isinstance(n, bool)]
            return Translation(Filter.all_of(rest) if rest else True, exact)
        if any(n is True for n in natives):
            return Translation(True, exact)
        rest = [n for n in natives if not isinstance(n, bool)]
        return Translation(Filter.any_of(rest) if rest else False, exact)

    def negate(self, inner: Translation) -> Translation:
        if not inner.exact:
            return Translation(True, False)
        if isinstance(inner.native, bool):
            return Translation(not inner.native, True)
        if self.supports_not:
            return Translation(Filter.not_(inner.native), True)
        return Translation(True, False)

    def any_of(self, field: str, values: Iterable[Any]) -> Translation:
        """Records where any element of `field` equals any of `values` (same type)."""
        if not self.has_properties(field):
            return Translation(True, False)
        by_kind: dict[str, list[Any]] = {}
        for value in values:
            kind = kind_of(value)
            if kind is not None:
                by_kind.setdefault(kind, []).append(typed_value(value))
        found = [
            Filter.by_property(prop).contains_any(vals)
            for kind, vals in sorted(by_kind.items())
            if (prop := meta_property(field, kind)) in self.known
        ]
        return Translation(Filter.any_of(found) if found else False, True)

    def present(self, field: str) -> Translation:
        return Translation(Filter.by_property(FIELDS).contains_any([field]), True)

    def compare(self, node: Compare) -> Translation:
        if node.op == "$exists":
            found = self.present(node.field)
            return found if node.value else self.negate(found)
        if node.op in ("$eq", "$ne"):
            equal = self.any_of(node.field, [node.value])
            return equal if node.op == "$eq" else self.negate(equal)
        if node.op in ("$in", "$nin"):
            within = self.any_of(node.field, node.value)
            return within if node.op == "$in" else self.negate(within)
        if kind_of(node.value) != "n" or not self.has_properties(node.field):
            return Translation(self.present(node.field).native, False)
        prop = meta_property(node.field, "n")
        if prop is None or prop not in self.known:
            return Translation(False, True)
        return Translation(RANGES[node.op](Filter.by_property(prop), float(node.value)), True)
