"""Published output schemas: optional fields as type lists, accepting exactly what the pydantic schema accepts."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import call
from jsonschema import Draft202012Validator
from mcp import Client

from bigrag_mcp.schemas import QueryResult
from bigrag_mcp.services import collections, documents
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.tools.output_schemas import compact

pytestmark = pytest.mark.anyio

OPTIONAL_TEXT = {"anyOf": [{"type": "string", "minLength": 2}, {"type": "null"}], "default": None, "description": "d"}
VALUES: list[Any] = [None, "", "a", "ab", 0, 1.5, True, [], {}, [None], {"x": None}]


def accepted(schema: dict[str, Any], values: list[Any]) -> list[bool]:
    validator = Draft202012Validator(schema)
    return [validator.is_valid(v) for v in values]


def test_an_optional_field_becomes_a_type_list_that_accepts_the_same_values() -> None:
    folded = compact(OPTIONAL_TEXT)
    assert folded == {"type": ["string", "null"], "minLength": 2, "default": None, "description": "d"}
    assert accepted(folded, VALUES) == accepted(OPTIONAL_TEXT, VALUES)
    assert "anyOf" in OPTIONAL_TEXT  # the input is not changed


@pytest.mark.parametrize(
    "schema",
    [
        {"anyOf": [{"$ref": "#/$defs/X"}, {"type": "null"}], "$defs": {"X": {"type": "object"}}},  # a reference
        {"anyOf": [{"type": "integer", "minimum": 5}, {"type": "number"}]},  # 2.5 passes only through "number"
        {"anyOf": [{"enum": ["a", "b"]}, {"type": "null"}]},
        {"anyOf": [{"type": "string", "title": "T"}, {"type": "null"}]},  # a keyword that is not type-specific
        {"anyOf": [{"type": "string", "minLength": 3}, {"type": "null"}], "minLength": 1},  # already set outside
        {"anyOf": [{"type": "string"}, {"type": "string", "maxLength": 1}]},
    ],
)
def test_an_anyof_that_would_not_fold_equivalently_is_kept(schema: dict[str, Any]) -> None:
    assert compact(schema) == schema


def test_the_query_schema_accepts_and_refuses_what_the_pydantic_schema_does() -> None:
    original = QueryResult.model_json_schema()
    folded = compact(original)
    assert "anyOf" not in str(folded["$defs"]["QueryRow"])
    row = {"id": "r", "text": None, "score": 0.5, "document_id": None, "document_filename": None, "chunk_index": None,
           "char_start": None, "char_end": None, "metadata": {}, "collection": "c"}
    good = {"results": [row], "search_mode": "semantic", "timings": {"embed_ms": 1, "search_ms": 1, "total_ms": 2}}
    bad = [{**good, "results": [{**row, key: value}]} for key, value in
           (("text", 3), ("chunk_index", "x"), ("page", 1.5), ("score", None), ("metadata", None))]
    assert accepted(folded, [good, *bad]) == accepted(original, [good, *bad]) == [True] + [False] * len(bad)


async def test_tools_list_publishes_type_lists_and_results_still_validate(rt: Runtime, admin: Client) -> None:
    await collections.create(rt, name="docs")
    await documents.upload(rt, "docs", text="alpha beta")
    listed = {t.name: t.output_schema for t in (await admin.list_tools()).tools}
    assert listed["query"] is not None
    assert listed["query"]["$defs"]["QueryRow"]["properties"]["text"]["type"] == ["string", "null"]
    answer = await call(admin, "query", collection="docs", query="alpha")  # the SDK client validates it
    assert answer["results"][0]["text"] == "alpha beta"
