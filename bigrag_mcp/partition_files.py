"""Files that belong to one index partition in the data folder: their name (a tenant never becomes a path) and checksum."""

from __future__ import annotations

import hashlib
import re
import zlib
from pathlib import Path

_CRC_BLOCK = 1 << 24
UID = re.compile(r"[0-9a-f]{1,32}")


def partition_key(uid: str, tenant: str | None) -> str:
    """`<collection uid>-<hash of the tenant>`; ValueError for a uid that is not a store-made hex uid."""
    if not UID.fullmatch(uid):
        raise ValueError(f"collection uid {uid!r} cannot name a partition file")
    return f"{uid}-{hashlib.sha256((tenant or '').encode()).hexdigest()[:32]}"


def crc32_of(path: Path) -> int:
    """The CRC-32 of a file, read in blocks."""
    crc = 0
    with path.open("rb") as f:
        while block := f.read(_CRC_BLOCK):
            crc = zlib.crc32(block, crc)
    return crc
