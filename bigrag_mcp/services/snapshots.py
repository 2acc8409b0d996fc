"""Partition snapshots in the data folder, so a restart maps a file instead of reading every row from the store.

A snapshot is two files named by the collection's uid and a hash of the tenant (a tenant never becomes a path):
`<key>.npy` with the raw float32 vectors and `<key>.json` with the sequence it reflects, the npy file's CRC-32,
and the ids, texts and metadata. The JSON is written last, so a crash leaves no snapshot that claims a matrix it
lacks. A snapshot whose checksum, shape or identity does not match is removed and never used.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bigrag_mcp.partition_files import UID, crc32_of, partition_key
from bigrag_mcp.types import PartitionRows

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Snapshot:
    """A partition as it was at `seq`, its matrix with spare rows like a refill's."""

    seq: int
    rows: PartitionRows


class SnapshotStore:
    """Reads and writes partition snapshots under one folder; every call is blocking (run it in a thread)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _paths(self, uid: str, tenant: str | None) -> tuple[Path, Path]:
        key = partition_key(uid, tenant)
        return self.folder / f"{key}.npy", self.folder / f"{key}.json"

    def save(self, uid: str, tenant: str | None, seq: int, rows: PartitionRows) -> None:
        """Write the partition's first len(rows.ids) vectors and its columns, replacing an older snapshot."""
        matrix_path, header_path = self._paths(uid, tenant)
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in (header_path, matrix_path):  # no header may ever describe a matrix being rewritten
            path.unlink(missing_ok=True)
        tmp = matrix_path.with_suffix(".npy.tmp")
        with tmp.open("wb") as f:
            np.save(f, rows.vectors[: len(rows.ids)])
        os.replace(tmp, matrix_path)
        kinds: dict[str, int] = {}
        for meta in rows.metadata:
            kinds.setdefault(json.dumps(meta, sort_keys=True), len(kinds))
        header = {
            "uid": uid,
            "tenant": tenant,
            "seq": seq,
            "count": len(rows.ids),
            "dimension": int(rows.vectors.shape[1]),
            "crc32": crc32_of(matrix_path),
            "ids": rows.ids,
            "texts": rows.texts,
            "metadata": list(kinds),
            "metadata_of": [kinds[json.dumps(m, sort_keys=True)] for m in rows.metadata],
        }
        tmp = header_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(header))
        os.replace(tmp, header_path)

    def load(self, uid: str, tenant: str | None, dimension: int) -> Snapshot | None:
        """The partition's snapshot, or None when there is none or it is damaged (then it is removed)."""
        matrix_path, header_path = self._paths(uid, tenant)
        if not header_path.exists():
            return None
        try:
            header: dict[str, Any] = json.loads(header_path.read_text())
            count = int(header["count"])
            if (header["uid"], header["tenant"], header["dimension"]) != (uid, tenant, dimension):
                raise ValueError("it belongs to another partition")
            if crc32_of(matrix_path) != header["crc32"]:
                raise ValueError("its matrix does not match its checksum")
            mapped = np.load(matrix_path, mmap_mode="r")
            if mapped.shape != (count, dimension) or mapped.dtype != np.float32:
                raise ValueError(f"its matrix has shape {mapped.shape}, not ({count}, {dimension})")
            vectors = np.empty((count + count // 8 + 16, dimension), dtype="<f4")  # room for writes, as a refill
            vectors[:count] = mapped
            kinds = [json.loads(k) for k in header["metadata"]]
            rows = PartitionRows(
                ids=list(header["ids"]),
                vectors=vectors,
                texts=list(header["texts"]),
                metadata=[kinds[i] for i in header["metadata_of"]],
            )
            if not len(rows.ids) == len(rows.texts) == len(rows.metadata) == count:
                raise ValueError("its columns do not all have one entry per vector")
            return Snapshot(seq=int(header["seq"]), rows=rows)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            log.warning("index snapshot %s is unusable (%s); removing it and reading the store", header_path, exc)
            self.remove(uid, tenant)
            return None

    def remove(self, uid: str, tenant: str | None) -> None:
        for path in self._paths(uid, tenant):
            path.unlink(missing_ok=True)

    def remove_collection(self, uid: str) -> None:
        """Remove the snapshots of every tenant of a collection."""
        if UID.fullmatch(uid) and self.folder.exists():
            for path in self.folder.glob(f"{uid}-*"):
                path.unlink(missing_ok=True)
