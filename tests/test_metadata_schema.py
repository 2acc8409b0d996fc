"""metadata_schema is hostile input: no reference is ever fetched or read, patterns run in linear time, size and depth bounded."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import call, refused
from sqlalchemy import update

from bigrag_mcp.errors import InvalidArgument, LimitExceeded
from bigrag_mcp.metadata_schema import MAX_SCHEMA_DEPTH, check_schema
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.store.models import Collection

pytestmark = pytest.mark.anyio
CATASTROPHIC = "^(a+)+$"
OPENED: list[str] = []  # paths opened by this process, recorded by an audit hook while WATCHED is non-empty
WATCHED: set[str] = set()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "open" and WATCHED and isinstance(args[0], str | Path) and str(args[0]) in WATCHED:
        OPENED.append(str(args[0]))


sys.addaudithook(_audit)


@pytest.fixture
def secret_file(tmp_path: Path) -> Iterator[Path]:
    """A local JSON file a hostile schema points at; every open of it is recorded."""
    path = tmp_path / "secret.json"
    path.write_text('{"description": "TOP-SECRET-CONTENT", "type": "string"}', encoding="utf-8")
    WATCHED.add(str(path))
    OPENED.clear()
    yield path
    WATCHED.discard(str(path))


@pytest.fixture
def http_hits() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that serves a schema and records every request: (base URL, paths requested)."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            body = b'{"description": "FETCHED-CONTENT", "type": "string"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/schema+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", hits
    server.shutdown()
    server.server_close()


def _ref_schema(ref: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"code": {"$ref": ref}}}


async def _store_schema_behind_the_checks(rt: Runtime, name: str, schema: dict[str, Any]) -> None:
    """A schema stored before the rules existed (written straight into the store)."""
    async with rt.db.session() as session:
        await session.execute(update(Collection).where(Collection.name == name).values(metadata_schema=schema))


async def test_a_catastrophic_pattern_answers_at_once(admin) -> None:
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": CATASTROPHIC}},
        "patternProperties": {CATASTROPHIC: {"type": "integer"}},
        "additionalProperties": {"type": "string"},
    }
    await call(admin, "collections_create", collection="docs", metadata_schema=schema)
    evil = "a" * 30 + "!"
    started = time.perf_counter()
    text = await refused(admin, "documents_upload", collection="docs", text="hello", metadata={"code": evil})
    assert text.startswith("invalid_argument: metadata does not match the collection's metadata_schema at code")
    # the property name is matched against patternProperties (and additionalProperties' exclusion) too
    text = await refused(admin, "documents_upload", collection="docs", text="hello", metadata={evil: 3, "other": 1})
    assert text.startswith("invalid_argument") and "other" in text
    assert time.perf_counter() - started < 5  # Python's re needs hours for these; RE2 microseconds
    await call(admin, "documents_upload", collection="docs", text="hello", metadata={"code": "aaaa", "aaa": 1, "x": "y"})


async def test_patterns_re2_cannot_run_are_refused_when_the_schema_is_set(admin) -> None:
    backref = {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(a)\\1$"}}}
    text = await refused(admin, "collections_create", collection="docs", metadata_schema=backref)
    assert text.startswith("invalid_argument") and "RE2" in text
    lookahead = {"type": "object", "patternProperties": {"^(?=x)": {}}}
    assert (await refused(admin, "collections_create", collection="docs", metadata_schema=lookahead)).startswith("invalid_argument")
    await call(admin, "collections_create", collection="docs")
    assert (await refused(admin, "collections_update", collection="docs", metadata_schema=backref)).startswith("invalid_argument")


async def test_a_file_reference_is_refused_and_never_read(rt: Runtime, admin, secret_file: Path) -> None:
    for ref in (secret_file.as_uri(), secret_file.as_uri() + "#/description", str(secret_file)):
        text = await refused(admin, "collections_create", collection="docs", metadata_schema=_ref_schema(ref))
        assert text.startswith("invalid_argument") and "points outside the schema" in text
    await call(admin, "collections_create", collection="docs")
    text = await refused(admin, "collections_update", collection="docs", metadata_schema=_ref_schema(secret_file.as_uri()))
    assert text.startswith("invalid_argument")
    await _store_schema_behind_the_checks(rt, "docs", _ref_schema(secret_file.as_uri()))
    text = await refused(admin, "documents_upload", collection="docs", text="hello", metadata={"code": "x"})
    assert text.startswith("invalid_argument") and "never fetched" in text and "TOP-SECRET" not in text
    assert OPENED == []


async def test_an_http_reference_is_refused_and_never_fetched(rt: Runtime, admin, http_hits: tuple[str, list[str]]) -> None:
    base, hits = http_hits
    for schema in (_ref_schema(f"{base}/schema.json"), {"$id": f"{base}/root.json", **_ref_schema("other.json")}):
        text = await refused(admin, "collections_create", collection="docs", metadata_schema=schema)
        assert text.startswith("invalid_argument")
    nested_id = {"type": "object", "properties": {"code": {"$id": f"{base}/nested.json", "$ref": "#/x"}}}
    assert "only at its top level" in await refused(admin, "collections_create", collection="docs", metadata_schema=nested_id)
    await call(admin, "collections_create", collection="docs")
    await _store_schema_behind_the_checks(rt, "docs", _ref_schema(f"{base}/schema.json"))
    text = await refused(admin, "documents_upload", collection="docs", text="hello", metadata={"code": "x"})
    assert text.startswith("invalid_argument") and "FETCHED" not in text
    assert hits == []


async def test_references_inside_the_schema_work(admin) -> None:
    schema = {
        "$id": "https://example.test/meta.json",
        "$defs": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
        "type": "object",
        "properties": {"code": {"$ref": "#/$defs/code"}, "const_is_data": {"const": {"$ref": "http://not.a.reference"}}},
    }
    await call(admin, "collections_create", collection="docs", metadata_schema=schema)
    await call(admin, "documents_upload", collection="docs", text="hello", metadata={"code": "ABC"})
    assert (await refused(admin, "documents_upload", collection="docs", text="bye", metadata={"code": "abc"})).startswith("invalid_argument")
    named_like_keywords = {"type": "object", "properties": {"default": {"$ref": "https://example.test/x.json"}}}
    assert "points outside the schema" in await refused(admin, "collections_create", collection="x", metadata_schema=named_like_keywords)
    dangling = _ref_schema("#/$defs/nope")
    assert "does not point to a part of the schema" in await refused(admin, "collections_create", collection="x", metadata_schema=dangling)


def test_schema_size_and_depth_are_bounded() -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(5000):  # far past the recursion limit: refused without recursing
        deep = {"items": deep}
    with pytest.raises(InvalidArgument, match=f"deeper than {MAX_SCHEMA_DEPTH}"):
        check_schema(deep)
    wide = {"type": "object", "properties": {f"field_{i}": {"type": "string", "description": "x" * 100} for i in range(400)}}
    with pytest.raises(LimitExceeded, match="larger than 32 KB"):
        check_schema(wide)
    with pytest.raises(InvalidArgument, match="unevaluatedProperties"):
        check_schema({"patternProperties": {"^a": {}}, "unevaluatedProperties": False})
    check_schema({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}}}})
