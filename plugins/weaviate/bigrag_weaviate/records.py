"""How a record becomes a Weaviate object: fixed properties plus typed, flattened metadata properties.

Fixed: `record_id`, `text` (BM25, word tokenization), `bigrag_meta` (the metadata as JSON, not indexed),
`bigrag_fields` (names of the metadata fields that are present, for `$exists` and missing-field rules),
`bigrag_collection` / `bigrag_tenant` (the real partition). Each metadata field `f` is flattened into up to three
array properties by value type: `meta_f__t` (text[], field tokenization), `meta_f__n` (number[]),
`meta_f__b` (boolean[]). A scalar is stored as a one-element array, so list-valued and scalar fields filter
alike. Values that are objects are kept only in `bigrag_meta`. Properties are added to the class the first time
a field with that type is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from weaviate.classes.config import DataType, Property, Tokenization

from bigrag_mcp.filters import FIELD_NAME
from bigrag_mcp.types import Partition, VectorRecord

RECORD_ID = "record_id"
TEXT = "text"
META = "bigrag_meta"
FIELDS = "bigrag_fields"
COLLECTION = "bigrag_collection"
TENANT = "bigrag_tenant"
MAX_FIELD = 200  # Weaviate property names stop at 230 characters
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


def meta_property(field: str, kind: str) -> str:
    return f"meta_{field}__{kind}"


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
    """The value as Weaviate stores it: numbers are float64 (`number[]`)."""
    return float(value) if kind_of(value) == "n" else value


def new_property(name: str) -> Property:
    """The definition of a flattened metadata property, from its name's type suffix."""
    data_type = KINDS[name[-1]]
    if data_type == DataType.TEXT_ARRAY:
        return Property(name=name, data_type=data_type, tokenization=Tokenization.FIELD, index_searchable=False)
    return Property(name=name, data_type=data_type)


def flatten(metadata: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Typed metadata properties of one record."""
    out: dict[str, list[Any]] = {}
    for field, value in metadata.items():
        if not FIELD_NAME.match(field) or len(field) > MAX_FIELD:
            continue  # the filter language cannot name it, so it is kept in bigrag_meta only
        for item in value if isinstance(value, list) else [value]:
            kind = kind_of(item)
            if kind is not None:
                out.setdefault(meta_property(field, kind), []).append(typed_value(item))
    return out


def to_properties(where: Partition, record: VectorRecord) -> dict[str, Any]:
    props: dict[str, Any] = {
        RECORD_ID: record.id,
        META: json.dumps(dict(record.metadata), separators=(",", ":"), sort_keys=True),
        FIELDS: sorted(k for k, v in record.metadata.items() if v is not None),
        COLLECTION: where.collection,
        TENANT: where.tenant or "",
    }
    if record.text is not None:
        props[TEXT] = record.text
    props.update(flatten(record.metadata))
    return props
