"""Tool arguments checked before the SDK sees them, so a refusal keeps the error contract.

The SDK's own validation answers `Error executing tool query: 1 validation error for queryArguments ...` and
ignores arguments it does not know. Here every call is checked first against the same argument model: unknown
arguments are refused, JSON nested deeper than MAX_DEPTH is refused before anything recurses into it, and each
pydantic error becomes a sentence that names the argument and the real bound, after the stable code:
`invalid_argument: top_k must be between 1 and 200`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import annotated_types
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.inbound import x_mcp_header_map
from mcp.types import CallToolResult, InputRequiredResult, TextContent
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from bigrag_mcp.errors import InvalidArgument

MAX_DEPTH = 64
_KINDS = {
    "int": "an integer",
    "float": "a number",
    "string": "a string",
    "bool": "true or false",
    "list": "a list",
    "dict": "an object",
    "model": "an object",
    "datetime": "an ISO 8601 date-time such as 2030-01-01T00:00:00Z",
    "date": "an ISO 8601 date-time such as 2030-01-01T00:00:00Z",
}
_LOWER = {"greater_than_equal": "ge", "greater_than": "gt"}
_UPPER = {"less_than_equal": "le", "less_than": "lt"}


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _where(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _bounds(field: FieldInfo | None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for rule in field.metadata if field is not None else ():
        for name in ("ge", "gt", "le", "lt"):
            if isinstance(rule, getattr(annotated_types, name.capitalize())):
                found[name] = getattr(rule, name)
    return found


def _range(name: str, bounds: Mapping[str, Any]) -> str:
    low = f"at least {_number(bounds['ge'])}" if "ge" in bounds else f"greater than {_number(bounds['gt'])}" if "gt" in bounds else None
    high = f"at most {_number(bounds['le'])}" if "le" in bounds else f"less than {_number(bounds['lt'])}" if "lt" in bounds else None
    if "ge" in bounds and "le" in bounds:
        return f"{name} must be between {_number(bounds['ge'])} and {_number(bounds['le'])}"
    return f"{name} must be " + " and ".join(part for part in (low, high) if part)


def _sentence(error: ErrorDetails, fields: Mapping[str, FieldInfo]) -> str:
    """One pydantic error as a sentence that starts with the argument's name."""
    loc, kind, ctx = error["loc"], error["type"], error.get("ctx") or {}
    name = _where(loc)
    if kind == "missing":
        return f"{name} is required"
    if kind in _LOWER or kind in _UPPER:
        bounds = _bounds(fields.get(str(loc[0]))) if len(loc) == 1 else {}
        return _range(name, bounds or ctx)
    if kind == "literal_error":
        return f"{name} must be one of {ctx.get('expected')}"
    if kind in ("string_too_short", "string_too_long"):
        bound = ctx.get("min_length") if kind == "string_too_short" else ctx.get("max_length")
        return f"{name} must be {'at least' if kind == 'string_too_short' else 'at most'} {bound} characters"
    if kind in ("too_short", "too_long"):
        bound = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        return f"{name} must have {'at least' if kind == 'too_short' else 'at most'} {bound} items"
    if kind == "finite_number":
        return f"{name} must be a finite number"
    for prefix, what in _KINDS.items():
        if kind.startswith(prefix + "_"):
            return f"{name} must be {what}"
    message = str(error["msg"])
    return f"{name}: {message[:1].lower()}{message[1:]}"


def _too_deep(value: Any) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)
    return False


def argument_error(tool: str, model: type[BaseModel], arguments: Mapping[str, Any]) -> InvalidArgument | None:
    """Why `arguments` cannot be passed to `tool` (whose argument model is `model`), or None when they can."""
    fields = model.model_fields
    known = {f.alias or n for n, f in fields.items()}
    unknown = sorted(set(arguments) - known)
    if unknown:
        listed = ", ".join(repr(u) for u in unknown)
        return InvalidArgument(
            f"unknown argument{'s' if len(unknown) > 1 else ''} {listed}; {tool} takes {', '.join(sorted(known)) or 'no arguments'}"
        )
    for name, value in arguments.items():
        if _too_deep(value):
            return InvalidArgument(f"{name} is nested deeper than {MAX_DEPTH} levels")
    try:
        model.model_validate(dict(arguments))
    except ValidationError as exc:
        return InvalidArgument("; ".join(dict.fromkeys(_sentence(e, fields) for e in exc.errors())))
    return None


class CheckedServer(MCPServer):
    """The SDK's server with every tool call's arguments checked by `argument_error` before the tool runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._header_schemas: dict[str, dict[str, Any]] = {}
        super().__init__(*args, **kwargs)

    def _tool_input_schema(self, name: str) -> dict[str, Any] | None:
        """What streamable HTTP checks a call's `Mcp-Param-*` headers against: a tool that declares no `x-mcp-header`
        gives an empty schema (the check answers the same, without walking the whole input schema on every call)."""
        schema = super()._tool_input_schema(name)
        if schema is None:
            return None
        if name not in self._header_schemas:
            self._header_schemas[name] = schema if x_mcp_header_map(schema) else {}
        return self._header_schemas[name]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        tool = self._tool_manager.get_tool(name)  # the registered tool and its argument model
        if tool is not None:
            # the SDK's own leniency first: a list or object sent as a JSON string is parsed, as the tool would see it
            error = argument_error(name, tool.fn_metadata.arg_model, tool.fn_metadata.pre_parse_json(arguments))
            if error is not None:
                return CallToolResult(content=[TextContent(type="text", text=str(error))], is_error=True)
        return await super().call_tool(name, arguments, context)
