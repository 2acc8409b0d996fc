"""Names in Weaviate: one class per vector shape, one tenant per (collection, tenant) pair, one UUID per record,
one lower-case property name per metadata field.

Classes are `<prefix>V2D<dimension>`: layout 2 (case-safe property names, bracketed text values); classes of the
first layout (`<prefix>D<dimension>`) are not read.

Tenant names allow `[A-Za-z0-9_-]`, at most 64 characters. A pair is encoded as `esc(collection)` (no tenant) or
`esc(collection)--esc(tenant)`, where `esc` keeps `[A-Za-z0-9_]` and writes every other UTF-8 byte as `-XX`
(upper-case hex). Escapes are always `-` + two hex digits, so `--` only ever separates, and the encoding is
one-to-one and reversible. A pair whose encoding is longer than 64 characters becomes
`-_<sha256(collection)[:16]>_<sha256(pair)[:40]>`: plain encodings never start with `-_`, the collection digest
keeps every tenant of a collection findable, and each object also stores the real pair as properties.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid

MAX_TENANT_NAME = 64
HASHED = "-_"
SEPARATOR = "--"
KEEP = re.compile(r"[A-Za-z0-9_]")
ESCAPE = re.compile(r"-([0-9A-F]{2})")
NAMESPACE = uuid.UUID("6f1d4c2e-8b1a-5c3d-9e4f-b16a70b1ec01")


LAYOUT = "V2"


def class_name(prefix: str, dimension: int) -> str:
    """The Weaviate class holding every partition whose vectors have `dimension` components."""
    return f"{prefix}{LAYOUT}D{dimension}"


def dimension_of(prefix: str, name: str) -> int | None:
    """The dimension a class of ours holds, or None for another application's class (or an older layout)."""
    match = re.fullmatch(re.escape(prefix + LAYOUT) + r"D([1-9][0-9]*)", name)
    return int(match.group(1)) if match else None


def field_stem(field: str) -> str:
    """A filter-language field name (`[A-Za-z_][A-Za-z0-9_]*`) in lower case only, one-to-one.

    Weaviate refuses a property whose lower-cased name equals another's, so `_` becomes `__` and an upper-case
    letter `X` becomes `_x`: `Year` -> `_year`, `year` -> `year`, `_year` -> `__year`. Every `_` starts a two-character
    code, so the stem decodes uniquely, and no two stems differ only in case.
    """
    return "".join("__" if ch == "_" else f"_{ch.lower()}" if ch.isupper() else ch for ch in field)


def _escape(text: str) -> str:
    return "".join(ch if KEEP.fullmatch(ch) else "".join(f"-{b:02X}" for b in ch.encode()) for ch in text)


def _unescape(text: str) -> str:
    raw = bytearray()
    pos = 0
    for match in ESCAPE.finditer(text):
        raw += text[pos : match.start()].encode()
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += text[pos:].encode()
    return raw.decode()


def _digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


def collection_marker(collection: str) -> str:
    """The prefix every hashed tenant name of `collection` starts with."""
    return f"{HASHED}{_digest(collection)[:16]}_"


def tenant_name(collection: str, tenant: str | None) -> str:
    """The Weaviate tenant that holds one partition."""
    plain = _escape(collection) if tenant is None else f"{_escape(collection)}{SEPARATOR}{_escape(tenant)}"
    if len(plain) <= MAX_TENANT_NAME:
        return plain
    return collection_marker(collection) + _digest([collection, tenant])[:40]


def decode_tenant_name(name: str) -> tuple[str, str | None] | None:
    """The (collection, tenant) pair of a plain name; None for a hashed one (its objects carry the pair)."""
    if name.startswith(HASHED):
        return None
    collection, sep, tenant = name.partition(SEPARATOR)
    return _unescape(collection), (_unescape(tenant) if sep else None)


def belongs_to(name: str, collection: str) -> bool:
    """Whether a Weaviate tenant name holds one of `collection`'s partitions."""
    if name.startswith(HASHED):
        return name.startswith(collection_marker(collection))
    decoded = decode_tenant_name(name)
    return decoded is not None and decoded[0] == collection


def object_uuid(collection: str, tenant: str | None, record_id: str) -> str:
    """A deterministic UUID (v5) for a record id within its partition."""
    return str(uuid.uuid5(NAMESPACE, json.dumps([collection, tenant, record_id])))
