"""Tenant-name encoding: valid for Weaviate, one-to-one, reversible, and findable per collection when hashed."""

from __future__ import annotations

import re

from bigrag_weaviate.naming import belongs_to, decode_tenant_name, field_stem, object_uuid, tenant_name
from hypothesis import given
from hypothesis import strategies as st

WEAVIATE_TENANT = re.compile(r"[A-Za-z0-9_-]{1,64}")
collections = st.text(min_size=1, max_size=70)
field_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True)
tenants = st.none() | st.text(max_size=80)


@given(collections, tenants)
def test_names_are_valid_and_reversible_or_hashed(collection: str, tenant: str | None) -> None:
    name = tenant_name(collection, tenant)
    assert WEAVIATE_TENANT.fullmatch(name)
    decoded = decode_tenant_name(name)
    assert decoded is None or decoded == (collection, tenant)
    assert belongs_to(name, collection)


@given(collections, tenants, collections, tenants)
def test_distinct_pairs_get_distinct_names(c1: str, t1: str | None, c2: str, t2: str | None) -> None:
    if (c1, t1) != (c2, t2):
        assert tenant_name(c1, t1) != tenant_name(c2, t2)
        assert object_uuid(c1, t1, "x") != object_uuid(c2, t2, "x")
    if c1 != c2:
        assert not belongs_to(tenant_name(c1, t1), c2)


def test_readable_examples() -> None:
    assert tenant_name("tenant_acme", None) == "tenant_acme"
    assert tenant_name("docs", "acme-eu") == "docs--acme-2Deu"
    assert tenant_name("docs", "") == "docs--"
    assert decode_tenant_name("docs--acme-2Deu") == ("docs", "acme-eu")
    assert tenant_name("docs", "x" * 80).startswith("-_")


@given(field_names, field_names)
def test_field_stems_are_lower_case_and_one_to_one_ignoring_case(a: str, b: str) -> None:
    assert re.fullmatch(r"[a-z0-9_]+", field_stem(a))
    if a != b:
        assert field_stem(a).lower() != field_stem(b).lower()


def test_field_stem_examples() -> None:
    assert [field_stem(f) for f in ("year", "Year", "_year", "YEAR", "a_B")] == ["year", "_year", "__year", "_y_e_a_r", "a___b"]
