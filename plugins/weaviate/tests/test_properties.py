"""Metadata fields as Weaviate properties: names unique ignoring case, add-property races, bounded indexing."""

from __future__ import annotations

from typing import Any

import pytest
from bigrag_weaviate import WeaviateBackend, records
from bigrag_weaviate.testing import FakeWeaviate, RecordedSleeps

from bigrag_mcp.filters import parse_filter
from bigrag_mcp.types import Partition, SearchRequest, VectorRecord

pytestmark = pytest.mark.anyio
CLASS = "BigragV2D3"
ACME = Partition("docs", "acme")


def semantic(raw: dict[str, Any]) -> SearchRequest:
    return SearchRequest(top_k=10, vector=[1.0, 0.5, 0.25], filter=parse_filter(raw))


async def ids(backend: WeaviateBackend, where: Partition, raw: dict[str, Any]) -> set[str]:
    return {h.id for h in await backend.search(where, semantic(raw))}


def text_property(field: str) -> dict[str, Any]:
    """The definition another replica posts for a text metadata field."""
    name = records.meta_property(field, "t")
    return {"name": name, "dataType": ["text[]"], "tokenization": "field", "indexSearchable": False}


async def test_field_names_that_differ_only_in_case_never_collide(fake: FakeWeaviate, backend: WeaviateBackend) -> None:
    await backend.upsert(ACME, [VectorRecord("lower", [1.0, 0.0, 0.0], metadata={"year": "2020"})])
    other = Partition("other", None)
    await backend.upsert(other, [VectorRecord("upper", [1.0, 0.0, 0.0], metadata={"Year": "2020"})])
    both = VectorRecord("both", [0.0, 1.0, 0.0], metadata={"year": "1999", "Year": "2001", "YEAR": "2002"})
    await backend.upsert(ACME, [both])
    assert await ids(backend, ACME, {"year": "2020"}) == {"lower"}
    assert await ids(backend, ACME, {"Year": "2001"}) == {"both"}
    assert await ids(backend, ACME, {"year": "2001"}) == set()
    assert await ids(backend, ACME, {"YEAR": {"$exists": True}}) == {"both"}
    assert await ids(backend, other, {"Year": "2020"}) == {"upper"}
    names = [n.lower() for n in fake.property_names(CLASS)]
    assert len(names) == len(set(names))


async def test_a_property_added_by_another_replica_first_is_not_an_error(
    fake: FakeWeaviate, backend: WeaviateBackend, sleeps: RecordedSleeps
) -> None:
    await backend.upsert(ACME, [VectorRecord("a", [1.0, 0.0, 0.0], metadata={"kind": "x"})])
    # the server-side race: our schema read missed it, the other replica's add lands just before ours
    fake.before(f"POST /v1/schema/{CLASS}/properties", lambda: fake.add_property(CLASS, text_property("colour")))
    await backend.upsert(ACME, [VectorRecord("b", [0.0, 1.0, 0.0], metadata={"colour": "red"})])
    # the client-side check: the client's own schema read (after ours) already sees the other replica's property
    fake.before(f"GET /v1/schema/{CLASS}", lambda: fake.add_property(CLASS, text_property("shade")), skip=1)
    await backend.upsert(ACME, [VectorRecord("c", [0.0, 0.0, 1.0], metadata={"shade": "dark"})])
    assert await ids(backend, ACME, {"colour": "red"}) == {"b"}
    assert await ids(backend, ACME, {"shade": "dark"}) == {"c"}
    assert sleeps == []


async def test_two_replicas_adding_one_field_both_succeed(fake: FakeWeaviate, sleeps: RecordedSleeps) -> None:
    first, second = (WeaviateBackend(fake.settings(), sleep=sleeps) for _ in range(2))
    await first.upsert(ACME, [VectorRecord("a", [1.0, 0.0, 0.0], metadata={"kind": "x"})])
    await second.upsert(ACME, [VectorRecord("b", [1.0, 0.0, 0.0], metadata={"kind": "y"})])  # both know the class
    fake.before(f"POST /v1/schema/{CLASS}/properties", lambda: fake.add_property(CLASS, text_property("lang")))
    await first.upsert(ACME, [VectorRecord("c", [1.0, 0.0, 0.0], metadata={"lang": "en"})])
    await second.upsert(ACME, [VectorRecord("d", [1.0, 0.0, 0.0], metadata={"lang": "de"})])
    assert await ids(second, ACME, {"lang": {"$in": ["en", "de"]}}) == {"c", "d"}
    await first.close()
    await second.close()


async def test_only_declared_fields_become_indexed_properties(fake: FakeWeaviate, sleeps: RecordedSleeps) -> None:
    backend = WeaviateBackend(fake.settings(filterable_fields="kind, year"), sleep=sleeps)
    rows = [
        VectorRecord("a", [1.0, 0.0, 0.0], metadata={"kind": "x", "year": 2020, "note": "free", "score": 3}),
        VectorRecord("b", [0.0, 1.0, 0.0], metadata={"kind": "y", "note": "other", "score": 7}),
    ]
    await backend.upsert(ACME, rows)
    metadata_properties = sorted(n for n in fake.property_names(CLASS) if n.startswith("meta_"))
    assert metadata_properties == sorted(
        p for p in (records.meta_property("kind", "t"), records.meta_property("year", "n")) if p
    )
    assert await ids(backend, ACME, {"kind": "x"}) == {"a"}
    assert await ids(backend, ACME, {"note": "other"}) == {"b"}  # checked after the query, on bigrag_meta
    assert await ids(backend, ACME, {"score": {"$gt": 5}}) == {"b"}
    assert await ids(backend, ACME, {"note": {"$ne": "free"}, "kind": "y"}) == {"b"}
    await backend.close()


async def test_field_names_too_long_for_a_property_are_filtered_after_the_query(backend: WeaviateBackend) -> None:
    long = "F" * 150  # every capital doubles in the property name, beyond Weaviate's 231 characters
    await backend.upsert(ACME, [VectorRecord("a", [1.0, 0.0, 0.0], metadata={long: "v"}), VectorRecord("b", [0.0, 1.0, 0.0])])
    assert records.meta_property(long, "t") is None
    assert await ids(backend, ACME, {long: "v"}) == {"a"}
    assert await ids(backend, ACME, {long: {"$ne": "v"}}) == {"b"}
