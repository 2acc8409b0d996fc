"""Tool output schemas in an equivalent form that is cheaper to validate for the clients that check every result.

The SDK's client validates each result's `structured_content` against the tool's output schema with `jsonschema`.
Pydantic writes an optional field as `{"anyOf": [{"type": "string"}, {"type": "null"}]}`; `jsonschema` evaluates
each branch with a fresh sub-validator, which for a 10-row query result is about half the client's validation time.
`{"type": ["string", "null"]}` accepts exactly the same values, so that is what the server publishes.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer

# keywords that constrain only values of one JSON type (others pass them), so they can sit beside a type list
_ONLY_FOR: dict[str, frozenset[str]] = {
    "string": frozenset({"minLength", "maxLength", "pattern", "format"}),
    "number": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}),
    "integer": frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}),
    "array": frozenset({"items", "prefixItems", "minItems", "maxItems", "uniqueItems", "contains"}),
    "object": frozenset({"properties", "required", "additionalProperties", "patternProperties", "minProperties", "maxProperties"}),
    "boolean": frozenset(),
    "null": frozenset(),
}


def _as_type_list(node: dict[str, Any]) -> dict[str, Any] | None:
    """`node` with its `anyOf` of plain typed branches folded into a type list, or None when that would not be
    equivalent (a `$ref` or `enum` branch, a repeated type, integer beside number, a keyword the node already has)."""
    branches = node["anyOf"]
    if not isinstance(branches, list) or len(branches) < 2 or "type" in node:
        return None
    types: list[str] = []
    folded = {k: v for k, v in node.items() if k != "anyOf"}
    for branch in branches:
        kind = branch.get("type") if isinstance(branch, dict) else None
        if not isinstance(kind, str) or kind not in _ONLY_FOR or kind in types:
            return None
        keywords = set(branch) - {"type"}
        if not keywords <= _ONLY_FOR[kind] or keywords & set(folded):
            return None
        types.append(kind)
        folded.update({k: branch[k] for k in keywords})
    if {"number", "integer"} <= set(types):  # an integer is a number too: their keywords would overlap
        return None
    return {**folded, "type": types}


def compact(schema: Any) -> Any:
    """`schema` with every foldable `anyOf` written as a type list (a new object; the input is not changed)."""
    if isinstance(schema, list):
        return [compact(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    node = {key: compact(value) for key, value in schema.items()}
    if "anyOf" in node:
        node = _as_type_list(node) or node
    return node


def compact_output_schemas(server: MCPServer) -> None:
    """Publish every registered tool's output schema in its compact form (call once, after the tools are added)."""
    for tool in server._tool_manager.list_tools():
        metadata = tool.fn_metadata
        if metadata.output_schema is not None:
            metadata.output_schema = compact(metadata.output_schema)
            tool.__dict__.pop("output_schema", None)  # the Tool caches what it read before
