"""`bigrag-mcp ingest`: files and folders into a collection, by content, with a summary and an exit code."""

from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bigrag_mcp.cli import Outcome, UsageError, json_arg, with_runtime
from bigrag_mcp.errors import BigRagError, InvalidArgument, LimitExceeded
from bigrag_mcp.services import collections, documents
from bigrag_mcp.services.runtime import Runtime

SIDECAR = ".meta.json"


def _matches(path: Path, root: Path, globs: list[str]) -> bool:
    relative = path.relative_to(root).as_posix() if path != root else path.name
    return any(fnmatch.fnmatch(relative, g) or fnmatch.fnmatch(path.name, g) for g in globs)


def _files_under(folder: Path) -> list[Path]:
    """The regular files under `folder`, not entering hidden folders or links to folders, skipping hidden files, in
    path order (one directory read per folder; no stat per file unless it is a link)."""
    files: list[str] = []
    folders = [str(folder)]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif entry.is_file():
                    files.append(entry.path)
    return sorted(map(Path, files))


def find_files(paths: list[str], include: list[str], exclude: list[str]) -> list[Path]:
    """Files under `paths` (folders recursively), skipping hidden files and folders and sidecars, in a stable order."""
    found: list[Path] = []
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise UsageError(f"{given} does not exist")
        for path in [root] if root.is_file() else _files_under(root):
            if path.name.endswith(SIDECAR):
                continue
            if include and not _matches(path, root, include):
                continue
            if exclude and _matches(path, root, exclude):
                continue
            found.append(path)
    return list(dict.fromkeys(found))


def read_manifest(manifest: str | None) -> dict[Path, dict[str, Any]]:
    """Per-file metadata from a CSV with a `file` column (relative to the CSV's folder); other columns are strings."""
    if manifest is None:
        return {}
    where = Path(manifest)
    try:
        with where.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"cannot read the manifest {manifest}: {exc}") from None
    if rows and "file" not in rows[0]:
        raise UsageError(f"the manifest {manifest} needs a 'file' column")
    return {
        (where.parent / row["file"]).resolve(): {k: v for k, v in row.items() if k != "file" and k and v not in (None, "")}
        for row in rows
    }


def _sidecar(path: Path) -> dict[str, Any]:
    side = f"{path}{SIDECAR}"
    try:
        with open(side, encoding="utf-8") as handle:
            value = json.loads(handle.read())
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"its sidecar {path.name}{SIDECAR} is not readable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(f"its sidecar {path.name}{SIDECAR} must hold a JSON object")
    return value


class Progress:
    """A rich progress bar on a terminal (files, chunks, rate, ETA); plain log lines otherwise."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.chunks, self.started = total, 0, 0, time.perf_counter()
        self.bar: Any = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("ingest"), BarColumn(), MofNCompleteColumn(), TextColumn("files · {task.fields[chunks]} chunks"),
                TextColumn("· {task.fields[rate]} chunks/s"), TimeRemainingColumn(), transient=True,
            )
            self.task = self.bar.add_task("ingest", total=total, chunks=0, rate=0)
            self.bar.start()

    def step(self, path: Path, status: str, chunks: int) -> None:
        self.done += 1
        self.chunks += chunks
        rate = round(self.chunks / max(time.perf_counter() - self.started, 1e-9))
        if self.bar is not None:
            self.bar.update(self.task, advance=1, chunks=self.chunks, rate=rate)
        else:
            print(f"[{self.done}/{self.total}] {path}: {status}", file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


async def ingest_cmd(rt: Runtime, a: argparse.Namespace) -> Outcome:
    started = time.perf_counter()
    paths = find_files(a.paths, a.include or [], a.exclude or [])
    manifest = read_manifest(a.manifest)
    info = await collections.get(rt, a.collection)
    base = dict(a.metadata or {})
    if a.tenant is not None:
        if not info.tenant_field:
            raise UsageError(f"collection {a.collection!r} has no tenant_field; leave --tenant out")
        base[info.tenant_field] = a.tenant
    summary: dict[str, Any] = {"ingested": [], "deduplicated": [], "failed": []}
    sent: list[Path] = []
    progress = Progress(len(paths))

    def fail(path: Path, error: BigRagError) -> None:
        summary["failed"].append({"file": str(path), "error": str(error)})
        progress.step(path, f"failed: {error}", 0)

    def uploads() -> Iterator[documents.Upload]:
        for path in paths:
            try:
                listed = manifest.get(path.resolve(), {}) if manifest else {}  # resolving costs a stat per folder
                metadata = {**base, **listed, **_sidecar(path), "source": str(path)}
                with open(path, "rb") as handle:
                    if os.fstat(handle.fileno()).st_size > documents.MAX_DOCUMENT_BYTES:
                        raise LimitExceeded(f"the document is larger than {documents.MAX_DOCUMENT_BYTES >> 20} MB")
                    data = handle.read()
            except OSError as exc:
                fail(path, InvalidArgument(f"cannot read it: {exc.strerror}"))
                continue
            except BigRagError as exc:
                fail(path, exc)
                continue
            sent.append(path)
            yield documents.Upload(data=data, filename=path.name, metadata=metadata)

    async def record(outcome: documents.Outcome) -> None:
        path = sent[outcome.index]
        if outcome.error is not None:
            fail(path, outcome.error)
            return
        assert outcome.result is not None
        doc = outcome.result.document
        kind = "deduplicated" if outcome.result.deduplicated else "ingested"
        summary[kind].append({"file": str(path), "document_id": doc.id, "chunks": doc.chunk_count})
        progress.step(path, f"{kind}, {doc.chunk_count} chunks", 0 if outcome.result.deduplicated else doc.chunk_count)

    try:
        await documents.upload_many(rt, a.collection, uploads(), on_outcome=record)
    finally:
        progress.close()
    seconds = time.perf_counter() - started
    chunks = sum(d["chunks"] for d in summary["ingested"])
    summary["counts"] = {
        "ingested": len(summary["ingested"]), "deduplicated": len(summary["deduplicated"]),
        "failed": len(summary["failed"]), "chunks": chunks, "seconds": round(seconds, 3),
        "chunks_per_second": round(chunks / seconds, 1) if seconds else None,
    }
    return Outcome(summary, 1 if summary["failed"] else 0)


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ingest", help="upload files or folders (PDF, DOCX, XLSX, PPTX, HTML, text, ...) into a collection")
    p.add_argument("collection", help="the collection to upload into")
    p.add_argument("paths", nargs="+", help="files and folders (recursively; hidden files and folders are skipped)")
    p.add_argument("--metadata", type=json_arg, help="JSON object added to every document")
    p.add_argument("--tenant", help="the tenant of every document (shared collections): sets its tenant_field")
    p.add_argument("--include", action="append", metavar="GLOB", help="only files matching (name or relative path); repeatable")
    p.add_argument("--exclude", action="append", metavar="GLOB", help="skip files matching (name or relative path); repeatable")
    p.add_argument("--manifest", metavar="CSV", help="per-file metadata: a CSV with a 'file' column")
    p.set_defaults(handler=with_runtime(ingest_cmd))
