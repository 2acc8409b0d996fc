"""A collection's metadata_schema: checked at create/update, applied to metadata without reaching out or stalling.

A tenant key sets the schema, so it is hostile input:
- references (`$ref`, `$dynamicRef`) must point inside the schema (`#...`) and resolve there; the validator's
  registry has no retrieval, so no URL is fetched and no file is read, even for a schema stored before this rule;
- `pattern` and `patternProperties` run on RE2, whose matching time is linear in the value (no backtracking);
  a pattern RE2 cannot compile (backreferences, look-around) is refused;
- the schema's size and nesting depth are bounded.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

import re2
from jsonschema import Draft202012Validator, FormatChecker, ValidationError, validators
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from bigrag_mcp.errors import InvalidArgument, LimitExceeded

MAX_SCHEMA_BYTES = 32 * 1024
MAX_SCHEMA_DEPTH = 32
REFERENCES = ("$ref", "$dynamicRef")
# Keywords whose values are data, not schemas (a "$ref" inside them is not a reference), and keywords whose
# values map names to schemas (their keys are names, not keywords).
DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
NAME_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
NO_RETRIEVAL: Registry[Any] = Registry()  # an unknown URI raises Unresolvable: nothing is ever fetched or read

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    return re2.compile(pattern, _RE2_OPTIONS)


def _re2_error(pattern: str) -> str | None:
    """Why RE2 cannot compile `pattern`, or None when it can."""
    try:
        _compiled(pattern)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        return reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
    return None


_RE2_FORMATS = FormatChecker(formats=())


@_RE2_FORMATS.checks("regex")
def _is_re2(instance: object) -> bool:
    return not isinstance(instance, str) or _re2_error(instance) is None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _compiled(pattern).search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = [_compiled(p) for p in schema.get("patternProperties", {})]
    extras = sorted(k for k in instance if k not in properties and not any(p.search(k) for p in patterns))
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        yield ValidationError(f"additional properties are not allowed ({', '.join(map(repr, extras))} unexpected)")


# Draft 2020-12 with the keywords that match regular expressions running on RE2.
SafeValidator = validators.extend(
    Draft202012Validator,
    {"pattern": _pattern, "patternProperties": _pattern_properties, "additionalProperties": _additional_properties},
)


def _walk(schema: Any) -> Iterator[tuple[int, str, Any]]:
    """Every (depth, role, value) of the schema's JSON, without recursion. The role says how a dict's keys read:
    "schema" (keywords), "names" (property or definition names, each value a schema) or "data" (const, enum, ...)."""
    stack: list[tuple[int, str, Any]] = [(1, "schema", schema)]
    while stack:
        depth, role, value = stack.pop()
        yield depth, role, value
        if isinstance(value, list):
            stack.extend((depth + 1, role, v) for v in value)
        elif isinstance(value, dict):
            for key, item in value.items():
                if role != "schema":
                    stack.append((depth + 1, "schema" if role == "names" else "data", item))
                else:
                    stack.append((depth + 1, "data" if key in DATA_KEYWORDS else "names" if key in NAME_MAPS else "schema", item))


def _structure(schema: dict[str, Any]) -> list[str]:
    """Check depth, `$id` and references; return the references (all local)."""
    refs: list[str] = []
    keywords: set[str] = set()
    for depth, role, value in _walk(schema):
        if depth > MAX_SCHEMA_DEPTH:
            raise InvalidArgument(f"metadata_schema is nested deeper than {MAX_SCHEMA_DEPTH} levels")
        if role != "schema" or not isinstance(value, dict):
            continue
        keywords.update(value)
        if isinstance(value.get("$id"), str) and value is not schema:
            raise InvalidArgument("metadata_schema may carry $id only at its top level")
        for key in REFERENCES:
            ref = value.get(key)
            if isinstance(ref, str) and not ref.startswith("#"):
                raise InvalidArgument(
                    f"metadata_schema {key} {ref!r} points outside the schema; only references inside it "
                    "(starting with '#', e.g. '#/$defs/name') are allowed, and nothing is ever fetched"
                )
            if isinstance(ref, str):
                refs.append(ref)
    if {"patternProperties", "unevaluatedProperties"} <= keywords:
        raise InvalidArgument("metadata_schema cannot combine unevaluatedProperties with patternProperties")
    return refs


def check_schema(schema: Any) -> None:
    """Refuse a metadata_schema that is not a safe, self-contained JSON Schema (InvalidArgument, LimitExceeded)."""
    if schema is None:
        return
    if not isinstance(schema, dict):
        raise InvalidArgument("metadata_schema must be a JSON Schema object")
    refs = _structure(schema)  # first: it bounds the depth that json.dumps and the metaschema walk below recurse into
    if len(json.dumps(schema, ensure_ascii=False).encode()) > MAX_SCHEMA_BYTES:
        raise LimitExceeded(f"metadata_schema is larger than {MAX_SCHEMA_BYTES // 1024} KB")
    try:
        SafeValidator.check_schema(schema, format_checker=_RE2_FORMATS)
    except SchemaError as exc:
        if exc.validator == "format" and exc.validator_value == "regex":
            raise InvalidArgument(
                f"metadata_schema pattern {exc.instance!r} is not a regular expression RE2 accepts "
                f"({_re2_error(str(exc.instance))}); backreferences and look-around are not supported"
            ) from None
        raise InvalidArgument(f"metadata_schema is not a valid JSON Schema: {exc.message}") from None
    resolver = NO_RETRIEVAL.resolver_with_root(DRAFT202012.create_resource(schema))
    for ref in refs:
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise InvalidArgument(f"metadata_schema reference {ref!r} does not point to a part of the schema") from None


def metadata_errors(schema: dict[str, Any], metadata: Any) -> list[ValidationError]:
    """The schema violations of `metadata` (sorted); references resolve inside the schema or not at all."""
    try:
        return sorted(SafeValidator(schema, registry=NO_RETRIEVAL).iter_errors(metadata), key=str)
    except Unresolvable:
        raise InvalidArgument(
            "the collection's metadata_schema has a reference outside itself, which is never fetched; "
            "update the schema with collections_update"
        ) from None
    except re2.error:
        raise InvalidArgument(
            "the collection's metadata_schema has a pattern RE2 cannot run; update the schema with collections_update"
        ) from None
