"""How a record becomes a Weaviate object: fixed properties plus typed, flattened metadata properties.

Fixed: `record_id`, `text` (BM25, word tokenization), `bigrag_meta` (the metadata as JSON, not indexed),
`bigrag_fields` (names of the metadata fields that are present, for `$exists` and missing-field rules),
`bigrag_collection` / `bigrag_tenant` (the real partition). Each indexed metadata field `f` is flattened into up to
three array properties by value type: `meta_<stem>__t` (text[], field tokenization), `meta_<stem>__n` (number[]),
`meta_<stem>__b` (boolean[]), where `stem` is the field name in lower case only (`naming.field_stem`). A scalar is
stored as a one-element array, so list-valued and scalar fields filter alike. Text values are stored and compared
as `|value|`: `field` tokenization trims white space, and the brackets keep `" a "`, `"a"` and `""` apart.
Values that are objects, fields not declared filterable, and names too long for a property are kept only in
`bigrag_meta`. Properties are added to the class the first time a field with that type is written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from weaviate.classes.config import DataType, Property, Tokenization

from bigrag_mcp.filters import FIELD_NAME
from bigrag_mcp.types import Partition, VectorRecord
from bigrag_weaviate.naming import field_stem

RECORD_ID = "record_id"
TEXT = "text"
META = "bigrag_meta"
FIELDS = "bigrag_fields"
COLLECTION = "bigrag_collection"
TENANT = "bigrag_tenant"
MAX_PROPERTY = 231  # entities/schema/validation.go: [_A-Za-z][_0-9A-Za-z]{0,230}
BRACKET = "|"
KINDS: dict[str, DataType] = {"t": DataType.TEXT_ARRAY, "n": DataType.NUMBER_ARRAY, "b": DataType.BOOL_ARRAY}


def base_properties() -> list[Property]:
    """The properties every class of ours is created with."""
    field = Tokenization.FIELD
    return [
        Property(name=RECORD_ID, data_type=DataType.TEXT, tokenization=field, index_searchable=False),
        Property(name=TEXT, data_type=DataType.TEXT, tokenization=Tokenization.WORD),
        Property(name=META, data_type=DataType.TEXT, index_filterable=False, index_searchable=False),
        Property(name=FIELDS, data_type=DataType.TEXT_ARRAY, tokenization=field, index_searchable=False),
        Property(name=COLLECTION, data_type=DataType.TEXT, tokenization=field, index_searchable=False),
        Property(name=TENANT, data_type=DataType.TEXT, tokenization=field, index_searchable=False),
    ]


def meta_property(field: str, kind: str) -> str | None:
    """The property holding a field's values of one kind; None when the field cannot be a property."""
    if not FIELD_NAME.match(field):
        return None
    name = f"meta_{field_stem(field)}__{kind}"
    return name if len(name) <= MAX_PROPERTY else None


def kind_of(value: Any) -> str | None:
    """`t`, `n` or `b` for a filterable scalar; None for anything else."""
    if isinstance(value, bool):
        return "b"
    if isinstance(value, (int, float)):
        return "n"
    if isinstance(value, str):
        return "t"
    return None


def typed_value(value: Any) -> Any:
    """The value as Weaviate stores it: numbers are float64 (`number[]`), text bracketed against trimming."""
    kind = kind_of(value)
    if kind == "n":
        return float(value)
    return f"{BRACKET}{value}{BRACKET}" if kind == "t" else value


def new_property(name: str) -> Property:
    """The definition of a flattened metadata property, from its name's type suffix."""
    data_type = KINDS[name[-1]]
    if data_type == DataType.TEXT_ARRAY:
        return Property(name=name, data_type=data_type, tokenization=Tokenization.FIELD, index_searchable=False)
    return Property(name=name, data_type=data_type)


def flatten(metadata: Mapping[str, Any], indexed: Callable[[str], bool]) -> dict[str, list[Any]]:
    """Typed metadata properties of one record, for the fields `indexed` accepts."""
    out: dict[str, list[Any]] = {}
    for field, value in metadata.items():
        if not indexed(field):
            continue  # kept in bigrag_meta only and checked after the query
        for item in value if isinstance(value, list) else [value]:
            kind = kind_of(item)
            name = None if kind is None else meta_property(field, kind)
            if name is not None:
                out.setdefault(name, []).append(typed_value(item))
    return out


def to_properties(where: Partition, record: VectorRecord, indexed: Callable[[str], bool]) -> dict[str, Any]:
    props: dict[str, Any] = {
        RECORD_ID: record.id,
        META: json.dumps(dict(record.metadata), separators=(",", ":"), sort_keys=True),
        FIELDS: sorted(k for k, v in record.metadata.items() if v is not None),
        COLLECTION: where.collection,
        TENANT: where.tenant or "",
    }
    if record.text is not None:
        props[TEXT] = record.text
    props.update(flatten(record.metadata, indexed))
    return props
