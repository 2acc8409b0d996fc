"""How the fake evaluates a `weaviate.v1.Filters` message against one stored object."""

from __future__ import annotations

from typing import Any

from weaviate.proto.v1 import base_pb2

from bigrag_weaviate.testing.state import FakeError, StoredClass, StoredObject, field_token

Op = base_pb2.Filters
KINDS = {"text": "text", "text[]": "text", "number": "number", "number[]": "number", "int": "number",
         "int[]": "number", "boolean": "boolean", "boolean[]": "boolean"}
VALUE_KINDS = {"value_text": "text", "value_text_array": "text", "value_int": "number", "value_int_array": "number",
               "value_number": "number", "value_number_array": "number", "value_boolean": "boolean",
               "value_boolean_array": "boolean"}
NEGATIONS = (Op.OPERATOR_NOT, Op.OPERATOR_CONTAINS_NONE)


def _operand(msg: base_pb2.Filters, cls: StoredClass) -> tuple[str, Any]:
    """The property the condition targets and the value it compares with, checked against the schema."""
    prop = msg.target.property if msg.HasField("target") else (msg.on[0] if msg.on else "")
    if prop == "_id":
        which = msg.WhichOneof("test_value") or ""
        value = getattr(msg, which)
        return prop, list(value.values) if which.endswith("_array") else value
    schema = cls.properties.get(prop)
    if schema is None:
        raise FakeError(422, f"no such prop with name '{prop}' found in class '{cls.config['class']}' in the schema")
    which = msg.WhichOneof("test_value")
    if which is None:
        raise FakeError(422, f"filter on {prop!r} has no value")
    value = getattr(msg, which)
    value = list(value.values) if which.endswith("_array") else value
    if msg.operator != Op.OPERATOR_IS_NULL and VALUE_KINDS[which] != KINDS[schema["dataType"][0]]:
        raise FakeError(422, f"data type filter cannot use {which} on {prop!r} of type {schema['dataType'][0]}")
    if schema.get("indexFilterable") is False and msg.operator != Op.OPERATOR_IS_NULL:
        raise FakeError(422, f"property {prop!r} is not filterable")
    return prop, value


def _compare(op: int, have: Any, want: Any) -> bool:
    if op == Op.OPERATOR_EQUAL:
        return bool(have == want)
    if op == Op.OPERATOR_NOT_EQUAL:
        return bool(have != want)
    if op == Op.OPERATOR_GREATER_THAN:
        return bool(have > want)
    if op == Op.OPERATOR_GREATER_THAN_EQUAL:
        return bool(have >= want)
    if op == Op.OPERATOR_LESS_THAN:
        return bool(have < want)
    if op == Op.OPERATOR_LESS_THAN_EQUAL:
        return bool(have <= want)
    raise FakeError(422, f"operator {Op.Operator.Name(op)} is not supported by this fake")


def evaluate(msg: base_pb2.Filters, obj: StoredObject, cls: StoredClass, *, supports_not: bool) -> bool:
    """Array properties match a comparison when any element does, as Weaviate's inverted index does."""
    op = msg.operator
    if op in NEGATIONS and not supports_not:
        raise FakeError(422, f"operator {Op.Operator.Name(op)} needs Weaviate 1.33 or newer")
    if op in (Op.OPERATOR_AND, Op.OPERATOR_OR, Op.OPERATOR_NOT):
        results = [evaluate(f, obj, cls, supports_not=supports_not) for f in msg.filters]
        if op == Op.OPERATOR_NOT:
            return not results[0]
        return all(results) if op == Op.OPERATOR_AND else any(results)
    prop, want = _operand(msg, cls)
    have = obj.uuid if prop == "_id" else obj.properties.get(prop)
    items = have if isinstance(have, list) else ([] if have is None else [have])
    if prop != "_id" and cls.properties[prop].get("tokenization") == "field" and op != Op.OPERATOR_IS_NULL:
        # tokenizer.go tokenizeField: stored values and filter values are trimmed alike; "" is a valid token
        items = [field_token(v) for v in items]
        want = [field_token(v) for v in want] if isinstance(want, list) else field_token(want)
    if op == Op.OPERATOR_IS_NULL:
        return (not items) is bool(want)
    if op == Op.OPERATOR_CONTAINS_ANY:
        return any(v in want for v in items)
    if op == Op.OPERATOR_CONTAINS_ALL:
        return all(w in items for w in want)
    if op == Op.OPERATOR_CONTAINS_NONE:
        return not any(v in want for v in items)
    return any(_compare(op, v, want) for v in items)
