"""The SDK's argument validation keeps the error contract: a stable code first, the argument named, no pydantic text."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Annotated, Any

import pytest
from conftest import call, mcp_session, refused
from mcp import Client
from pydantic import Field

from bigrag_mcp.policy import OPERATIONS
from bigrag_mcp.services.keys import create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings
from bigrag_mcp.tools.arguments import MAX_DEPTH, CheckedServer

pytestmark = pytest.mark.anyio
TOOLS = sorted(OPERATIONS)
LEAKS = ("validation error", "Error executing tool", "errors.pydantic.dev", "Input should", "Arguments")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def checker(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Client]:
    """One admin session for the argument checks over every tool (they refuse before touching the store)."""
    data = tmp_path_factory.mktemp("tool_errors") / "data"
    settings = Settings(data_dir=data, embedding_provider="hash", vector_backend="memory", load_plugins="", _env_file=None)  # type: ignore[call-arg]
    rt = await Runtime.open(settings)
    _, key = await create_key(rt.db, name="admin", scopes=["*:*"])
    async with mcp_session(rt, key) as client:
        yield client
    await rt.close()


def _clean(text: str) -> str:
    assert text.startswith("invalid_argument: "), text
    assert not any(leak in text for leak in LEAKS), text
    return text.removeprefix("invalid_argument: ")


async def _schema(client: Client, tool: str) -> dict[str, Any]:
    listed = {t.name: t.input_schema for t in (await client.list_tools()).tools}
    assert set(listed) == set(OPERATIONS)
    return listed[tool]


def _wrong_value(schema: dict[str, Any]) -> Any:
    """A value no type of this property accepts (an object for anything but an object, else a number)."""
    kinds = {s.get("type") for s in schema.get("anyOf", [schema])}
    return 12345 if "object" in kinds else {"not": "this"}


@pytest.mark.parametrize("tool", TOOLS)
async def test_an_unknown_argument_is_refused_not_ignored(checker: Client, tool: str) -> None:
    text = _clean(await refused(checker, tool, no_such_argument=1))
    assert text.startswith("unknown argument 'no_such_argument'; " + tool + " takes")


@pytest.mark.parametrize("tool", TOOLS)
async def test_a_missing_required_argument_is_named(checker: Client, tool: str) -> None:
    required = (await _schema(checker, tool)).get("required", [])
    if not required:
        return  # nothing to leave out
    text = _clean(await refused(checker, tool))
    assert text.split("; ") == [f"{name} is required" for name in required]


@pytest.mark.parametrize("tool", TOOLS)
async def test_a_mistyped_argument_is_named(checker: Client, tool: str) -> None:
    properties = (await _schema(checker, tool)).get("properties", {})
    if not properties:
        return  # nothing to mistype
    name, schema = next(iter(properties.items()))
    text = _clean(await refused(checker, tool, **{name: _wrong_value(schema)}))
    assert text.startswith((f"{name} must be ", f"{name}: ")), text


def _type_arrays(schema: Any, path: str = "") -> list[str]:
    """Where a schema gives `type` as a list: legal, but clients that map tool schemas onto a single-`type` dialect
    (Gemini's function declarations) may reject the tool."""
    if isinstance(schema, list):
        return [found for i, item in enumerate(schema) for found in _type_arrays(item, f"{path}[{i}]")]
    if not isinstance(schema, dict):
        return []
    here = [path or "/"] if isinstance(schema.get("type"), list) else []
    return here + [found for key, value in schema.items() for found in _type_arrays(value, f"{path}/{key}")]


async def test_every_published_schema_keeps_one_type_per_schema(checker: Client) -> None:
    tools = (await checker.list_tools()).tools
    assert len(tools) == len(OPERATIONS)
    for tool in tools:
        assert _type_arrays(tool.input_schema) == [], tool.name
        assert _type_arrays(tool.output_schema or {}) == [], tool.name


async def test_bounds_and_choices_name_the_argument_and_the_real_bound(admin) -> None:
    await call(admin, "collections_create", collection="docs")
    cases = [
        ({"top_k": 500}, "top_k must be between 1 and 200"),
        ({"top_k": "many"}, "top_k must be an integer"),
        ({"search_mode": "fuzzy"}, "search_mode must be one of 'semantic', 'keyword' or 'hybrid'"),
        ({"min_score": 1e308}, "min_score must be between -1 and 1000000"),
        ({"min_score": -2}, "min_score must be between -1 and 1000000"),
        ({"query": ""}, "query must be at least 1 characters"),
        ({"top_k": 0, "search_mode": "x"}, "top_k must be between 1 and 200; search_mode must be one of 'semantic', 'keyword' or 'hybrid'"),
    ]
    for extra, expected in cases:
        assert await refused(admin, "query", **{"collection": "docs", "query": "q", **extra}) == f"invalid_argument: {expected}"
    assert await refused(admin, "usage_get", window_days=400) == "invalid_argument: window_days must be between 1 and 365"
    expected = "invalid_argument: scopes[0] must be a string"
    assert await refused(admin, "api_keys_create", name="k", scopes=[7]) == expected
    text = await refused(admin, "api_keys_create", name="k", expires_at="next week")
    assert text.startswith("invalid_argument: expires_at must be an ISO 8601 date-time")


async def test_deep_json_is_invalid_argument_and_nothing_is_stored(admin) -> None:
    await call(admin, "collections_create", collection="docs")
    deep: Any = "x"
    for _ in range(MAX_DEPTH + 5):
        deep = {"$and": [deep]}
    text = await refused(admin, "query", collection="docs", query="q", filters=deep)
    assert text == f"invalid_argument: filters is nested deeper than {MAX_DEPTH} levels"
    meta: Any = 1
    for _ in range(MAX_DEPTH + 5):
        meta = {"a": meta}
    assert (await refused(admin, "documents_upload", collection="docs", text="t", metadata=meta)).startswith("invalid_argument: metadata is nested")
    document = base64.b64encode(b"[" * 100_000 + b"]" * 100_000).decode()
    text = await refused(admin, "documents_upload", collection="docs", content_base64=document, filename="deep.json", mime_type="application/json")
    assert text == "invalid_argument: deep.json is JSON nested too deeply to load"
    assert (await refused(admin, "documents_upload", collection="docs", text="t", metdata={"lang": "en"})).startswith(
        "invalid_argument: unknown argument 'metdata'"
    )
    assert (await call(admin, "documents_list", collection="docs"))["documents"] == []


async def test_arguments_sent_as_json_strings_are_still_accepted(admin) -> None:
    await call(admin, "collections_create", collection="docs")
    result = await admin.call_tool("query", {"collection": "docs", "query": "q", "filters": '{"lang": "en"}'})
    assert not result.is_error, result.content


def test_mcp_param_headers_are_checked_against_the_full_schema_only_where_a_tool_declares_them() -> None:
    server = CheckedServer("headers")

    @server.tool()
    async def plain(a: int) -> int:
        return a

    @server.tool()
    async def routed(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})]) -> str:
        return region

    routed_tool = server._tool_manager.get_tool("routed")
    assert routed_tool is not None
    assert server._tool_input_schema("plain") == {}  # nothing to check: the SDK's check passes either way
    assert server._tool_input_schema("routed") == routed_tool.parameters
    assert server._tool_input_schema("nope") is None
