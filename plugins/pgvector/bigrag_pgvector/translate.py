"""The validated filter tree as a SQL condition over the JSONB `metadata` column, with bound parameters only.

Field names and values always travel as parameters; the SQL text holds only fixed fragments and parameter
names. Each comparison is a JSON path test over the field's elements (a scalar counts as a one-element list),
so `$eq`/`$in` match when any element matches, ranges compare numbers with numbers and strings with strings,
and booleans never equal numbers — the semantics of `bigrag_mcp.filters`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.filters import And, Compare, FilterNode, Or

# The JSON path each comparison runs over the field's elements; `$v` is bound through the vars argument.
_PATHS = {
    "$eq": "lax $[*] ? (@ == $v[*])",
    "$in": "lax $[*] ? (@ == $v[*])",
    "$gt": "lax $[*] ? (@ > $v)",
    "$gte": "lax $[*] ? (@ >= $v)",
    "$lt": "lax $[*] ? (@ < $v)",
    "$lte": "lax $[*] ? (@ <= $v)",
}
_NEGATED = {"$ne": "$eq", "$nin": "$in"}


class Params:
    """Bound parameters of one statement, named p0, p1, ..."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def bind(self, value: Any) -> str:
        """Add a value and return its placeholder."""
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f":{name}"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidArgument("filter numbers must be finite")
    return value


def _compare(node: Compare, params: Params) -> str:
    field = f"metadata -> CAST({params.bind(node.field)} AS text)"
    present = f"(COALESCE(jsonb_typeof({field}), 'null') <> 'null')"
    if node.op == "$exists":
        return present if node.value else f"(NOT {present})"
    op = _NEGATED.get(node.op, node.op)
    operand = list(node.value) if op == "$in" else [node.value] if op == "$eq" else node.value
    operand = [_finite(v) for v in operand] if isinstance(operand, list) else _finite(operand)
    path = params.bind(_PATHS[op])
    variables = params.bind(json.dumps({"v": operand}))
    test = f"COALESCE(jsonb_path_exists({field}, CAST({path} AS jsonpath), CAST({variables} AS jsonb)), false)"
    return f"(NOT {test})" if node.op in _NEGATED else f"({test})"


def condition(node: FilterNode | None, params: Params) -> str:
    """A SQL boolean expression (never NULL) for the tree; `true` for no filter."""
    if node is None:
        return "true"
    if isinstance(node, Compare):
        return _compare(node, params)
    if isinstance(node, And):
        return "(" + " AND ".join(condition(n, params) for n in node.items) + ")"
    if isinstance(node, Or):
        return "(" + " OR ".join(condition(n, params) for n in node.items) + ")"
    return f"(NOT {condition(node.item, params)})"
