"""The filter language: one parser and validator, an in-memory evaluator, and the tenant rule.

`{"field": value}` and `{"field": {"$eq"|"$ne"|"$gt"|"$gte"|"$lt"|"$lte"|"$in"|"$nin"|"$exists": ...}}`,
combined with `$and`, `$or` and `$not`. Backends translate the validated tree, never the raw dict.
Semantics (every backend must match them; the conformance suite checks):
- a missing field fails `$eq`, `$in` and the ranges, and passes `$ne` and `$nin`;
- a list-valued field matches `$eq`/`$in` when any element matches, `$ne`/`$nin` when none does;
- ranges compare numbers with numbers and strings with strings; booleans are not numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bigrag_mcp.errors import InvalidArgument, TenantRequired

FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Scalar = str | int | float | bool
CompareOp = Literal["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"]
OPERATORS: frozenset[str] = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"})
RANGE_OPS = frozenset({"$gt", "$gte", "$lt", "$lte"})
MAX_DEPTH = 8
MAX_NODES = 256
MAX_IN_VALUES = 1024


@dataclass(frozen=True)
class Compare:
    field: str
    op: CompareOp
    value: Any  # a Scalar; a tuple of Scalars for $in/$nin; a bool for $exists


@dataclass(frozen=True)
class And:
    items: tuple[FilterNode, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[FilterNode, ...]


@dataclass(frozen=True)
class Not:
    item: FilterNode


FilterNode = Compare | And | Or | Not


def _scalar(value: Any, where: str) -> Scalar:
    if isinstance(value, (str, bool, int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return value
    raise InvalidArgument(f"filter value at {where} must be a string, number or boolean, not {type(value).__name__}")


class _Parser:
    def __init__(self) -> None:
        self.nodes = 0

    def node(self, raw: Any, path: str, depth: int) -> FilterNode:
        if depth > MAX_DEPTH:
            raise InvalidArgument(f"filter is nested deeper than {MAX_DEPTH} levels at {path}")
        if not isinstance(raw, Mapping) or not raw:
            raise InvalidArgument(f"filter at {path} must be a non-empty object")
        items: list[FilterNode] = []
        for key, value in raw.items():
            self.nodes += 1
            if self.nodes > MAX_NODES:
                raise InvalidArgument(f"filter has more than {MAX_NODES} conditions")
            here = f"{path}.{key}" if path else str(key)
            if key in ("$and", "$or"):
                if not isinstance(value, list) or not value:
                    raise InvalidArgument(f"{here} takes a non-empty list of filters")
                subs = tuple(self.node(v, f"{here}[{i}]", depth + 1) for i, v in enumerate(value))
                items.append(And(subs) if key == "$and" else Or(subs))
            elif key == "$not":
                items.append(Not(self.node(value, here, depth + 1)))
            elif isinstance(key, str) and key.startswith("$"):
                raise InvalidArgument(f"unknown filter operator {key!r} at {path or 'top level'}; use $and, $or or $not")
            elif not isinstance(key, str) or not FIELD_NAME.match(key):
                raise InvalidArgument(f"filter field name {key!r} must match {FIELD_NAME.pattern}")
            else:
                items.extend(self.conditions(key, value, here))
        return items[0] if len(items) == 1 else And(tuple(items))

    def conditions(self, name: str, value: Any, here: str) -> list[FilterNode]:
        if not isinstance(value, Mapping):
            return [Compare(name, "$eq", _scalar(value, here))]
        if not value:
            raise InvalidArgument(f"filter at {here} must name at least one operator")
        out: list[FilterNode] = []
        for op, operand in value.items():
            where = f"{here}.{op}"
            if op not in OPERATORS:
                raise InvalidArgument(f"unknown filter operator {op!r} at {here}; use one of {', '.join(sorted(OPERATORS))}")
            if op in ("$in", "$nin"):
                if not isinstance(operand, list) or not operand:
                    raise InvalidArgument(f"{where} takes a non-empty list of values")
                if len(operand) > MAX_IN_VALUES:
                    raise InvalidArgument(f"{where} takes at most {MAX_IN_VALUES} values")
                out.append(Compare(name, op, tuple(_scalar(v, where) for v in operand)))
            elif op == "$exists":
                if not isinstance(operand, bool):
                    raise InvalidArgument(f"{where} takes true or false")
                out.append(Compare(name, "$exists", operand))
            else:
                scalar = _scalar(operand, where)
                if op in RANGE_OPS and isinstance(scalar, bool):
                    raise InvalidArgument(f"{where} compares numbers or strings, not booleans")
                out.append(Compare(name, op, scalar))
        return out


def parse_filter(raw: Any) -> FilterNode | None:
    """Validate a filter object and return its tree (None for no filter); raise InvalidArgument naming the fault."""
    if raw is None or (isinstance(raw, Mapping) and not raw):
        return None
    return _Parser().node(raw, "", 0)


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _ordered(a: Any, b: Any, op: str) -> bool:
    """Range comparison of numbers with numbers or strings with strings; anything else does not match."""
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    both_numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
    if not (both_numbers or (isinstance(a, str) and isinstance(b, str))):
        return False
    if op == "$gt":
        return bool(a > b)
    if op == "$gte":
        return bool(a >= b)
    if op == "$lt":
        return bool(a < b)
    return bool(a <= b)


def _compare(node: Compare, metadata: Mapping[str, Any]) -> bool:
    present = node.field in metadata and metadata[node.field] is not None
    if node.op == "$exists":
        return present is node.value
    if not present:
        return node.op in ("$ne", "$nin")
    actual = metadata[node.field]
    values = actual if isinstance(actual, list) else [actual]
    if node.op == "$eq":
        return any(_same(v, node.value) for v in values)
    if node.op == "$ne":
        return not any(_same(v, node.value) for v in values)
    if node.op == "$in":
        return any(_same(v, w) for v in values for w in node.value)
    if node.op == "$nin":
        return not any(_same(v, w) for v in values for w in node.value)
    return any(_ordered(v, node.value, node.op) for v in values)


def matches(node: FilterNode | None, metadata: Mapping[str, Any]) -> bool:
    """Evaluate a validated tree against one record's metadata."""
    if node is None:
        return True
    if isinstance(node, Compare):
        return _compare(node, metadata)
    if isinstance(node, And):
        return all(matches(n, metadata) for n in node.items)
    if isinstance(node, Or):
        return any(matches(n, metadata) for n in node.items)
    return not matches(node.item, metadata)


def fields(node: FilterNode | None) -> set[str]:
    """Every field name the tree mentions, at any depth."""
    if node is None:
        return set()
    if isinstance(node, Compare):
        return {node.field}
    if isinstance(node, Not):
        return fields(node.item)
    return set().union(*(fields(n) for n in node.items))


def top_level(node: FilterNode | None) -> list[FilterNode]:
    """The conjuncts at the top of the tree (a lone node counts as one)."""
    if node is None:
        return []
    if isinstance(node, And):
        return [leaf for n in node.items for leaf in top_level(n)]
    return [node]


def single_tenant(node: FilterNode | None, tenant_field: str) -> str | None:
    """The one tenant a filter pins at its top level, or None when it mentions no tenant condition.

    Raises TenantRequired for every form the design refuses: multi-value `$in`, `$ne`, `$nin`, ranges,
    `$exists`, conflicting values, and tenant conditions under `$or` or `$not`.
    """
    values: set[Any] = set()
    for conj in top_level(node):
        if isinstance(conj, Compare):
            if conj.field != tenant_field:
                continue
            if conj.op == "$eq" or (conj.op == "$in" and len(conj.value) == 1):
                value = conj.value if conj.op == "$eq" else conj.value[0]
                if not isinstance(value, str) or not value:
                    raise TenantRequired(f"the tenant field {tenant_field!r} must be compared with a non-empty string")
                values.add(value)
            elif conj.op == "$in":
                raise TenantRequired(f"$in on the tenant field {tenant_field!r} must list exactly one tenant")
            else:
                raise TenantRequired(
                    f"{conj.op} on the tenant field {tenant_field!r} is not allowed; give one tenant with "
                    f'{{"{tenant_field}": "<tenant>"}}'
                )
        elif tenant_field in fields(conj):
            kind = "$or" if isinstance(conj, Or) else "$not"
            raise TenantRequired(f"the tenant field {tenant_field!r} may not appear under {kind}; put it at the top level")
    if len(values) > 1:
        raise TenantRequired(f"the filter names more than one tenant in {tenant_field!r}; give exactly one")
    return values.pop() if values else None


def require_tenant(node: FilterNode | None, tenant_field: str) -> str:
    """The one tenant the filter pins; TenantRequired when it names none."""
    tenant = single_tenant(node, tenant_field)
    if tenant is None:
        raise TenantRequired(
            f'this collection is shared by tenants: add {{"{tenant_field}": "<tenant>"}} to the filters'
        )
    return tenant
