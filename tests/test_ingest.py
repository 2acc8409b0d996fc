"""`bigrag-mcp ingest` and the batch upload path: a messy folder, exact summaries, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_docx, make_pdf, server_env
from sqlalchemy import func, select

from bigrag_mcp import compute
from bigrag_mcp.cli import Outcome, build_parser
from bigrag_mcp.commands.ingest import find_files, ingest_cmd
from bigrag_mcp.errors import PermissionDenied, Unavailable
from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.limits.engine import Hold, Scope
from bigrag_mcp.policy import Principal
from bigrag_mcp.services import bulk, collections, documents, search
from bigrag_mcp.services.fences import fence
from bigrag_mcp.services.index import IndexWrite
from bigrag_mcp.services.ledger import OPERATOR, Caller
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.services.usage import estimate_tokens, usage_row
from bigrag_mcp.settings import Settings
from bigrag_mcp.store.models import AuditEntry, Chunk, Document, IndexChange, PageText, UsageEvent
from bigrag_mcp.types import EmbeddingProviderFactory, Embeddings, Purpose

pytestmark = pytest.mark.anyio
PAGES = ["Cherry harvest forecast for the western orchards.", "Damson plums on page two, picked by hand in September."]


def messy(root: Path) -> Path:
    """Good files (text, Markdown in a subfolder, PDF, DOCX), a corrupt PDF, a binary, hidden ones, one too large."""
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "a.txt").write_text("Apples ripen in late summer orchards.", encoding="utf-8")
    (root / "a.txt.meta.json").write_text('{"lang": "en"}', encoding="utf-8")
    (root / "sub" / "b.md").write_text("# Bananas\n\nBananas grow in warm climates.", encoding="utf-8")
    (root / "report.pdf").write_bytes(make_pdf(PAGES))
    (root / "plan.docx").write_bytes(make_docx("Plan", ["Elderberry syrup recipe."], [["k", "v"]]))
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage")
    (root / "blob.bin").write_bytes(bytes(range(256)) * 8)
    (root / ".hidden.txt").write_text("hidden words", encoding="utf-8")
    (root / ".git" / "config").write_text("git words", encoding="utf-8")
    with (root / "huge.txt").open("wb") as handle:
        handle.truncate(documents.MAX_DOCUMENT_BYTES + 1)
    return root


async def ingest(rt: Runtime, *argv: str) -> Outcome:
    return await ingest_cmd(rt, build_parser().parse_args(["ingest", *argv]))


async def test_messy_folder_exact_summary_and_nothing_half_written(rt: Runtime, tmp_path: Path) -> None:
    await collections.create(rt, name="docs", chunk_size=64, chunk_overlap=0)
    root = messy(tmp_path / "folder")
    first = await ingest(rt, "docs", str(root))
    summary = first.value
    assert first.exit_code == 1
    assert sorted(Path(d["file"]).name for d in summary["ingested"]) == ["a.txt", "b.md", "plan.docx", "report.pdf"]
    failed = {Path(f["file"]).name: f["error"] for f in summary["failed"]}
    assert sorted(failed) == ["blob.bin", "broken.pdf", "huge.txt"]
    assert failed["huge.txt"].startswith("limit_exceeded:")
    assert failed["blob.bin"].startswith("invalid_argument:") and failed["broken.pdf"].startswith("invalid_argument:")
    assert summary["counts"] | {"seconds": 0, "chunks_per_second": 0} == {
        "ingested": 4, "deduplicated": 0, "failed": 3, "chunks": sum(d["chunks"] for d in summary["ingested"]),
        "seconds": 0, "chunks_per_second": 0,
    }
    async with rt.db.session() as session:
        docs = list(await session.scalars(select(Document)))
        chunks = await session.scalar(select(func.count()).select_from(Chunk))
        pages = list(await session.scalars(select(PageText).order_by(PageText.page)))
    assert sorted(d.filename for d in docs) == ["a.txt", "b.md", "plan.docx", "report.pdf"]
    assert chunks == summary["counts"]["chunks"] == sum(d.chunk_count for d in docs)
    assert [p.text for p in pages] == PAGES
    assert next(d for d in docs if d.filename == "a.txt").metadata_ == {"lang": "en", "source": str(root / "a.txt")}

    again = await ingest(rt, "docs", str(root))  # re-running skips what is already there
    assert again.exit_code == 1 and again.value["counts"]["ingested"] == 0
    assert again.value["counts"]["deduplicated"] == 4 and again.value["counts"]["failed"] == 3

    hits = await search.search(rt, "docs", "damson plums", top_k=1)
    assert hits.results[0].document_filename == "report.pdf" and hits.results[0].page == 2


def test_found_files_are_in_path_order_following_file_links_not_folder_links(tmp_path: Path) -> None:
    """Folders are read recursively in path order; a link to a file is a file, a link to a folder is not entered (no
    loops, nothing outside the folder), and a dangling link, hidden entries and sidecars are skipped."""
    root, outside = tmp_path / "in", tmp_path / "outside"
    (root / "a" / "deep").mkdir(parents=True)
    (root / "a-b").mkdir()
    outside.mkdir()
    for name in ("a/deep/z.txt", "a/y.txt", "a-b/x.txt", "b.txt", "b.txt.meta.json", "a/.hidden.txt"):
        (root / name).write_text(name, encoding="utf-8")
    (outside / "far.txt").write_text("far", encoding="utf-8")
    (root / "link.txt").symlink_to(outside / "far.txt")
    (root / "folder-link").symlink_to(outside)
    (root / "loop").symlink_to(root)
    (root / "dangling.txt").symlink_to(tmp_path / "gone.txt")
    found = find_files([str(root)], [], [])
    assert [p.relative_to(root).as_posix() for p in found] == ["a/deep/z.txt", "a/y.txt", "a-b/x.txt", "b.txt", "link.txt"]
    assert found == sorted(found)


async def test_globs_tenant_sidecar_and_manifest(rt: Runtime, tmp_path: Path) -> None:
    await collections.create(rt, name="shared", tenant_field="tenant_id")
    root = tmp_path / "in"
    root.mkdir()
    for name in ("keep.md", "skip.md", "notes.txt"):
        (root / name).write_text(f"Contents of {name} about figs.", encoding="utf-8")
    (root / "manifest.csv").write_text("file,team\nkeep.md,legal\n", encoding="utf-8")
    done = await ingest(
        rt, "shared", str(root), "--tenant", "acme", "--include", "*.md", "--exclude", "skip*", "--manifest",
        str(root / "manifest.csv"), "--metadata", '{"year": 2026}',
    )
    assert done.exit_code == 0 and [Path(d["file"]).name for d in done.value["ingested"]] == ["keep.md"]
    page = await documents.list_page(rt, "shared", tenant="acme")
    assert page.documents[0].metadata == {"tenant_id": "acme", "year": 2026, "team": "legal", "source": str(root / "keep.md")}


async def test_a_failed_write_fails_its_whole_group_and_leaves_nothing(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Indexing fails in the middle of the second group's write, after its first slice of rows went in: all of that
    group fails and nothing of it remains (rows, pages, usage, audit, change log); the group written before it stays."""
    await collections.create(rt, name="docs")
    monkeypatch.setattr(documents, "GROUP_DOCUMENTS", 3)
    monkeypatch.setattr(documents, "WRITE_SLICE", 2)  # one chunk a document: each group writes in two slices
    real, calls = IndexWrite.upsert_rows, []

    async def failing_on_the_fourth_slice(self: IndexWrite, *args: Any) -> None:
        calls.append(args[0])
        if len(calls) == 4:
            raise Unavailable("backend down")
        await real(self, *args)

    monkeypatch.setattr(IndexWrite, "upsert_rows", failing_on_the_fourth_slice)
    items = [documents.Upload(text=f"document number {i} about quinces") for i in range(6)]
    outcomes = await documents.upload_many(rt, "docs", items)
    assert [o.error for o in outcomes[:3]] == [None] * 3
    assert [str(o.error) for o in outcomes[3:]] == ["unavailable: backend down"] * 3
    assert len(calls) == 4 and len(calls[2]) == 2  # the failed group had inserted its first slice
    kept = {o.result.document.id for o in outcomes[:3] if o.result}
    async with rt.db.session() as session:
        assert set(await session.scalars(select(Document.id))) == kept
        assert {c.split("#")[0] for c in await session.scalars(select(Chunk.record_id))} == kept
        assert await session.scalar(select(func.count()).select_from(UsageEvent)) == 3
        uploaded = select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "document.uploaded")
        assert await session.scalar(uploaded) == 3
        logged = [ids for ids in await session.scalars(select(IndexChange.record_ids)) if ids]
        assert sorted(i.split("#")[0] for ids in logged for i in ids) == sorted(kept)


async def test_the_batch_path_honours_fences_before_the_work_and_inside_the_write(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await collections.create(rt, name="shared", tenant_field="tenant_id")
    async with rt.db.session() as session:
        await fence(session, "shared", "acme", whole_collection=False, caller=OPERATOR)
    items = [documents.Upload(text=f"{t} notes on pears", metadata={"tenant_id": t}) for t in ("acme", "globex")]
    first = await documents.upload_many(rt, "shared", items)
    assert str(first[0].error).startswith("permission_denied: tenant 'acme' of collection 'shared' was offboarded")
    assert first[1].error is None and first[1].result is not None

    real = documents._embedded

    async def fenced_meanwhile(*args: Any, **kwargs: Any) -> None:
        """Offboarding commits after the batch's fence check and embedding, before its write."""
        await real(*args, **kwargs)
        async with rt.db.session() as session:
            await fence(session, "shared", "globex", whole_collection=False, caller=OPERATOR)

    monkeypatch.setattr(documents, "_embedded", fenced_meanwhile)
    late = await documents.upload_many(rt, "shared", [documents.Upload(text="globex plums", metadata={"tenant_id": "globex"})])
    assert str(late[0].error).startswith("permission_denied: tenant 'globex' of collection 'shared' was offboarded")
    async with rt.db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Document).where(Document.tenant == "acme")) == 0
        assert await session.scalar(select(func.count()).select_from(Document).where(Document.tenant == "globex")) == 1


async def test_the_batch_path_reserves_and_settles_limits_per_document_and_takes_write_slots(
    settings: Settings, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    default = (Path(__file__).resolve().parent.parent / "bigrag_mcp" / "policy" / "default.toml").read_text(encoding="utf-8")
    policy.write_text(default + '\n[[limits]]\nname = "chunks"\nmetric = "chunks"\nmax = 3\nper = "day"\n', encoding="utf-8")
    rt = await Runtime.open(settings.model_copy(update={"policy_file": policy, "write_concurrency": 1}))
    try:
        await collections.create(rt, name="docs", chunk_size=64, chunk_overlap=0)
        principal = Principal(key_id="k1", scopes=frozenset({"*:*"}))
        caller = Caller(principal, "r1", Hold(Scope("k1", None, "docs", None), "k1", "r1"))
        three = "\n\n".join(f"Paragraph {i} says one thing only." for i in range(3))
        items = [documents.Upload(text="one small note"), documents.Upload(text=three), documents.Upload(text="another note")]
        outcomes = await documents.upload_many(rt, "docs", items, caller=caller)
        assert outcomes[0].error is None and outcomes[2].error is None  # the one that did not fit failed alone
        assert str(outcomes[1].error).startswith("limit_exceeded: chunks: chunks 1/3 per day")
        assert [s.used for s in await rt.limits.status(None) if s.name == "chunks"] == [2]  # settled, nothing left held
        assert caller.hold is not None and caller.hold.held == {}

        async with rt.writes.hold(caller, "docs", None):  # the key's one write slot is taken
            busy = await documents.upload_many(rt, "docs", [documents.Upload(text="a third note")], caller=caller)
        assert str(busy[0].error).startswith("limit_exceeded: this API key already has 1 writes in progress")
        assert [s.used for s in await rt.limits.status(None) if s.name == "chunks"] == [2]  # its reservation released
        async with rt.db.session() as session:
            assert await session.scalar(select(func.count()).select_from(Document)) == 2
    finally:
        await rt.close()


async def test_batch_path_matches_the_single_path(rt: Runtime) -> None:
    """Many documents in one batch: same chunks and vectors as one by one, duplicates within the batch stored once."""
    await collections.create(rt, name="one", chunk_size=256, chunk_overlap=32)  # several chunks per document
    await collections.create(rt, name="many", chunk_size=256, chunk_overlap=32)
    texts = [f"Paragraph {i} on orchard pests.\n\n" + "Aphids and mites. " * (i + 3) for i in range(40)]
    for text in texts:
        await documents.upload(rt, "one", text=text)
    outcomes = await documents.upload_many(rt, "many", [documents.Upload(text=t) for t in [*texts, texts[0]]])
    assert [o.error for o in outcomes] == [None] * 41
    assert [o.result.deduplicated for o in outcomes if o.result] == [False] * 40 + [True]
    async with rt.db.session() as session:
        rows = {
            name: sorted((c.text, c.char_start, c.char_end, c.vector) for c in await session.scalars(
                select(Chunk).join(Document).where(Document.collection_id == (await collections.find(session, name)).id)
            ))
            for name in ("one", "many")
        }
    assert rows["one"] == rows["many"] and len(rows["one"]) > 40


def test_cli_exit_codes_and_missing_path(settings: Settings, tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bigrag_mcp", *args], env=server_env(settings), capture_output=True, text=True,
            timeout=300, check=False,
        )

    assert run("collections", "create", "docs").returncode == 0
    tmp_path = tmp_path / "in"
    tmp_path.mkdir()
    (tmp_path / "ok.txt").write_text("Grapes need sun.", encoding="utf-8")
    (tmp_path / "bad.pdf").write_bytes(b"not a pdf at all")
    missing = run("ingest", "docs", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr and "usage: bigrag-mcp ingest" in missing.stderr
    other = tmp_path.parent / "other-data"  # the global --data-dir, given after the command, wins over BIGRAG_DATA_DIR
    assert run("--data-dir", str(other), "collections", "create", "docs").returncode == 0
    elsewhere = run("ingest", "docs", str(tmp_path / "ok.txt"), "--data-dir", str(other))
    assert elsewhere.returncode == 0 and json.loads(elsewhere.stdout)["counts"]["ingested"] == 1
    done = run("ingest", "docs", str(tmp_path))
    summary = json.loads(done.stdout)
    assert done.returncode == 1 and summary["counts"]["ingested"] == 1 and summary["counts"]["failed"] == 1
    assert "[2/2]" in done.stderr  # plain progress lines when stderr is not a terminal
    assert "not a application/pdf file" in summary["failed"][0]["error"]


async def test_statements_per_upload_do_not_grow_with_chunks_or_documents(rt: Runtime) -> None:
    """One upload's SQL statements do not depend on its chunk count; a batch's grow by at most one a document."""
    from sqlalchemy import event

    await collections.create(rt, name="docs", chunk_size=64, chunk_overlap=0)
    await documents.upload(rt, "docs", text="A first upload loads the partition.")
    seen: list[str] = []
    listener = lambda *args: seen.append(args[2])  # (conn, cursor, statement, ...)
    event.listen(rt.db.engine.sync_engine, "before_cursor_execute", listener)
    try:
        counts = []
        for text in ("One short chunk.", " ".join(f"Sentence number {i} about medlars." for i in range(40))):
            seen.clear()
            result = await documents.upload(rt, "docs", text=text)
            counts.append((result.document.chunk_count, len(seen)))
        batches = []
        for size in (10, 40):
            seen.clear()
            await documents.upload_many(rt, "docs", [documents.Upload(text=f"batch {size} doc {i} on loquats") for i in range(size)])
            batches.append(len(seen))
    finally:
        event.remove(rt.db.engine.sync_engine, "before_cursor_execute", listener)
    (small_chunks, small), (big_chunks, big) = counts
    assert small_chunks == 1 and big_chunks > 20 and small == big
    assert batches[1] - batches[0] <= 30  # at most the usage row of each document (usage.py inserts it singly)


async def test_a_small_text_upload_stays_on_the_event_loop_and_checks_first_on_the_fast_path(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text upload of up to INLINE_CHARS characters is checked, chunked and its tokens estimated on the event loop
    (no worker-thread hand-off, each of which costs more than that work), and its fence and duplicate checks before
    the work read the store's fast path: one session, the write's. A larger text goes to worker threads; a duplicate
    and a fenced tenant are answered as before."""
    import anyio.to_thread

    await collections.create(rt, name="inline", tenant_field="tenant_id")
    await documents.upload(rt, "inline", text="warm up: the collection and its partition", metadata={"tenant_id": "a"})
    handoffs: list[str] = []
    sessions: list[int] = []
    real_run_sync, real_session = anyio.to_thread.run_sync, rt.db.session

    async def run_sync(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        handoffs.append(fn.__name__)
        return await real_run_sync(fn, *args, **kwargs)

    def session(*args: Any, **kwargs: Any) -> Any:
        sessions.append(1)
        return real_session(*args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", run_sync)
    monkeypatch.setattr(rt.db, "session", session)
    note = "a short note about loquats " * 20
    first = await documents.upload(rt, "inline", text=note, metadata={"tenant_id": "a"})
    assert not first.deduplicated and first.document.chunk_count >= 1
    assert handoffs == [] and len(sessions) == 1
    again = await documents.upload(rt, "inline", text=note, metadata={"tenant_id": "a"})
    assert again.deduplicated and again.document.id == first.document.id
    await documents.upload(rt, "inline", text="loquat " * (documents.INLINE_CHARS // 7 + 1), metadata={"tenant_id": "a"})
    assert {"_admit", "_load_here"} <= set(handoffs)
    async with rt.db.session() as s:
        await fence(s, "inline", "a", whole_collection=False, caller=OPERATOR)
    with pytest.raises(PermissionDenied):
        await documents.upload(rt, "inline", text="after the fence", metadata={"tenant_id": "a"})


def test_ingest_loads_only_what_it_uses(settings: Settings, tmp_path: Path) -> None:
    """An ingest run imports no other command, no MCP SDK, no HTTP client and no JSON Schema validator (no schema)."""
    env = server_env(settings)
    subprocess.run([sys.executable, "-m", "bigrag_mcp", "collections", "create", "docs"], env=env, check=True, capture_output=True)
    (tmp_path / "a.txt").write_text("Quince jelly sets overnight.", encoding="utf-8")
    probe = (
        "import sys; from bigrag_mcp.cli import main; code = main(['ingest', 'docs', sys.argv[1]]); "
        "print(sorted(m for m in sys.modules if m.startswith('bigrag_mcp.commands.') or m.split('.')[0] in "
        "('mcp', 'httpx', 'jsonschema', 'starlette', 'uvicorn')), code)"
    )
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "a.txt")], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "['bigrag_mcp.commands.ingest'] 0"


async def test_direct_chunk_inserts_store_what_sqlalchemy_stores(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The driver-level chunk insert of a SQLite store writes the very column values SQLAlchemy's insert writes."""
    from sqlalchemy import text as sql

    await collections.create(rt, name="direct", chunk_size=128, chunk_overlap=16)
    await collections.create(rt, name="core", chunk_size=128, chunk_overlap=16)
    body = "Pommes et poires, récoltées en octobre. " * 20
    meta = {"lang": "fr", "n": 3, "nested": {"é": [1.5, None, True]}}
    async with rt.db.session() as session:
        assert (await documents._ChunkInsert.of(await session.connection())).direct  # this store takes the driver path
    await documents.upload_many(rt, "direct", [documents.Upload(text=body, metadata=meta)])
    monkeypatch.setattr(bulk, "DIRECT_DRIVERS", frozenset())
    await documents.upload_many(rt, "core", [documents.Upload(text=body, metadata=meta)])
    columns = "chunk_index, text, metadata, char_start, char_end, page, vector, typeof(vector), typeof(created_at), length(created_at)"
    async with rt.db.session() as session:
        stored = {}
        for name in ("direct", "core"):
            found = await collections.find(session, name)
            query = sql(f"SELECT {columns} FROM chunks WHERE collection_id = :c ORDER BY chunk_index")
            stored[name] = (await session.execute(query, {"c": found.id})).all()
        assert stored["direct"] == stored["core"] and len(stored["core"]) > 3
        for doc in await session.scalars(select(Document)):  # times read back as the document's
            assert {c.created_at for c in await session.scalars(select(Chunk).where(Chunk.document_id == doc.id))} == {doc.created_at}


async def test_direct_row_inserts_store_what_sqlalchemy_stores(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """`bulk.insert_rows` on a SQLite store (one driver executemany) writes the very values a Core insert writes, for
    each table a batch write fills that way: documents, pages, usage events and audit entries."""
    from sqlalchemy import text as sql

    await collections.create(rt, name="rows")
    async with rt.db.session() as session:
        info = await collections.find(session, "rows")
    when = datetime(2026, 11, 28, 4, 5, 6, 789, tzinfo=UTC)
    meta = {"lang": "fr", "n": 3, "nested": {"é": [1.5, None, True]}}

    # row i (0 or 1) of a batch; `n` makes only its unique columns differ between the two batches
    def document(n: int, i: int) -> dict[str, Any]:
        return documents.NewDocument(
            id=f"doc{n}", collection_id=info.id, tenant="t" * i, filename="é.txt" if i else None, mime_type="text/plain",
            content_hash=f"{n:064}", metadata_=meta if i else {}, size_bytes=10, char_count=9, chunk_count=1,
            embedding_tokens=i, created_at=when,
        ).row()

    def page(n: int, i: int) -> dict[str, Any]:
        return {"document_id": f"doc{n}", "page": i + 1, "char_start": 0, "char_end": 5, "text": "Pâges" * i}

    def usage(n: int, i: int) -> dict[str, Any]:
        return usage_row(
            operation="upload", collection="rows", collection_uid=info.uid, tenant="t" if i else None, documents=1,
            chunks=i, embedding_tokens=i, tokens_estimated=bool(i), latency_ms=1.5 * i, provider="hash", created_at=when,
        )

    def audit(n: int, i: int) -> dict[str, Any]:
        return {
            "id": n, "created_at": when, "actor_key_id": None, "action": "document.uploaded", "resource_type": "document",
            "resource_id": "doc" if i else None, "tenant": None, "outcome": "allowed", "reason": "é" * i, "request_id": "r",
            "metadata": meta if i else {}, "prev_hash": f"{n:064}", "entry_hash": f"{n + 1:064}",
        }

    unique = {"id", "document_id", "content_hash", "prev_hash", "entry_hash"}
    cases: list[tuple[type[Any], Callable[[int, int], dict[str, Any]]]] = [
        (Document, document), (PageText, page), (UsageEvent, usage), (AuditEntry, audit),
    ]
    for model, make in cases:
        table = model.__table__
        columns = ", ".join(f"{c.name}, typeof({c.name})" for c in table.columns if c.name not in unique)
        stored = {}
        for path, first in (("direct", 101), ("core", 103)):  # audit ids past the collection's own entry
            if path == "core":
                monkeypatch.setattr(bulk, "DIRECT_DRIVERS", frozenset())
            async with rt.db.session() as session:
                assert (await bulk.driver_connection(await session.connection()) is not None) == (path == "direct")
                await bulk.insert_rows(session, model, [make(first + i, i) for i in (0, 1)])
            monkeypatch.undo()
            async with rt.db.session() as session:
                stored[path] = (await session.execute(sql(f"SELECT {columns} FROM {table.name} ORDER BY rowid DESC LIMIT 2"))).all()
        assert stored["direct"] == stored["core"] and len(stored["core"]) == 2, table.name
    # rows leaving out columns that SQLAlchemy fills with their defaults take its own insert
    assert bulk._whole_row_insert(UsageEvent, frozenset({"operation", "collection"})) is None


async def test_a_batch_write_runs_its_fixed_statements_on_the_driver(rt: Runtime) -> None:
    """On a SQLite store a batch write's fixed statements (fence checks, inserts, the audit chain, the partition's
    sequence and change log, the webhook check) go straight to the driver, one round trip each: through SQLAlchemy's
    adapter (three or four round trips a statement) only the collection's read and the partition's first sequence row
    remain, and every row is still written."""
    from sqlalchemy import event

    await collections.create(rt, name="lean")
    through_sqlalchemy: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        through_sqlalchemy.append(statement)

    event.listen(rt.db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        outcomes = await documents.upload_many(rt, "lean", [documents.Upload(text=f"doc {n} " * 50) for n in range(96)])
    finally:
        event.remove(rt.db.engine.sync_engine, "before_cursor_execute", seen)
    assert all(o.error is None for o in outcomes)  # groups of 32 and 64
    tables = Counter(next(w for w in s.split() if w in {"collections", "index_generations"}) for s in through_sqlalchemy)
    assert tables == {"collections": 1, "index_generations": 1}  # the partition's first write makes its row
    async with rt.db.session() as session:
        for model, rows in ((Document, 96), (UsageEvent, 96), (AuditEntry, 97), (IndexChange, 2)):  # + the creation's audit
            assert await session.scalar(select(func.count()).select_from(model)) == rows, model


async def test_the_next_group_embeds_while_the_previous_one_is_written(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first group's write waits until the second group has been embedded: it can only finish if the two overlap."""
    import anyio

    await collections.create(rt, name="docs")
    monkeypatch.setattr(documents, "FIRST_GROUP", 2)
    monkeypatch.setattr(documents, "GROUP_DOCUMENTS", 4)
    real_embedded, real_write = documents._embedded, documents._write
    embedded_groups: list[int] = []
    second = anyio.Event()
    written: list[int] = []

    async def embedded(provider: Any, ready: Any, progress: Any = None, worker: Any = None) -> None:
        await real_embedded(provider, ready, progress, worker)
        embedded_groups.append(len(ready))
        if len(embedded_groups) == 2:
            second.set()

    async def write(rt_: Runtime, collection: Any, tenant: Any, ready: Any) -> Any:
        if not written:
            with anyio.fail_after(30):  # a guard against hanging, not a timing: a sequential pipeline never sets it
                await second.wait()
        written.append(len(ready))
        return await real_write(rt_, collection, tenant, ready)

    monkeypatch.setattr(documents, "_embedded", embedded)
    monkeypatch.setattr(documents, "_write", write)
    outcomes = await documents.upload_many(rt, "docs", [documents.Upload(text=f"medlar note {i}") for i in range(10)])
    assert [o.error for o in outcomes] == [None] * 10
    assert embedded_groups == written == [2, 4, 4]  # groups double from FIRST_GROUP up to GROUP_DOCUMENTS


async def test_the_next_group_loads_while_the_previous_one_embeds(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first group's embedding waits until the second group has been loaded and chunked: it can only finish if
    loading and embedding overlap (three stages, not two)."""
    import anyio

    await collections.create(rt, name="docs")
    monkeypatch.setattr(documents, "FIRST_GROUP", 2)
    monkeypatch.setattr(documents, "GROUP_DOCUMENTS", 4)
    real_load_all, real_embedded = documents._load_all_here, documents._embedded
    loaded_groups: list[int] = []
    embedded_groups: list[int] = []
    second = anyio.Event()

    def load_all(rt_: Runtime, collection: Any, admitted: Any) -> Any:  # runs in a worker thread
        loaded = real_load_all(rt_, collection, admitted)
        loaded_groups.append(len(admitted))
        if len(loaded_groups) == 2:
            anyio.from_thread.run_sync(second.set)
        return loaded

    async def embedded(provider: Any, ready: Any, progress: Any = None, worker: Any = None) -> None:
        if not embedded_groups:
            with anyio.fail_after(30):  # a guard against hanging, not a timing: without the overlap it never sets
                await second.wait()
        embedded_groups.append(len(ready))
        await real_embedded(provider, ready, progress, worker)

    monkeypatch.setattr(documents, "_load_all_here", load_all)
    monkeypatch.setattr(documents, "_embedded", embedded)
    outcomes = await documents.upload_many(rt, "docs", [documents.Upload(text=f"quince note {i}") for i in range(10)])
    assert [o.error for o in outcomes] == [None] * 10
    assert loaded_groups == embedded_groups == [2, 4, 4]


class PidEmbedder:
    """A process-safe embedder whose vectors name the process that made them ([pid, 1, 0, 0]); a text holding "exit!"
    ends the worker process computing it (in this process it is refused)."""

    name = "pid"
    model = "pid-1"
    dimension = 4
    max_batch = 16
    process_safe = True

    def __init__(self) -> None:
        self.home = os.getpid()

    def matrix(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float64]]:
        if any("exit!" in t for t in texts):
            if os.getpid() == self.home:
                raise Unavailable("exit! is for worker processes")
            os._exit(3)
        return np.array([[os.getpid(), 1.0, 0.0, 0.0] for _ in texts], dtype=np.float64)

    async def embed(self, texts: Sequence[str], *, purpose: Purpose) -> Embeddings:
        return Embeddings(self.matrix(texts).tolist())


class PidPlugin:
    """Registers the "pid" embedder (defined here, in a module of its own name, so a worker process finds it)."""

    @hookimpl
    def register_embedding_providers(self, register: Callable[[str, EmbeddingProviderFactory], None]) -> None:
        register("pid", lambda *, model, dimension: PidEmbedder())


@asynccontextmanager
async def pid_runtime(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = await Runtime.open(settings, plugins=(PidPlugin(),))
    try:
        yield runtime
    finally:
        await runtime.close()


MULTICORE = pytest.mark.skipif(compute.cores() < 2, reason="a worker process is used from two cores")


@MULTICORE
async def test_a_process_safe_embedder_embeds_the_batch_in_a_worker_process(settings: Settings) -> None:
    """The batch path computes a process-safe provider's vectors in another process (one for the whole batch); one
    upload embeds in this one."""
    async with pid_runtime(settings) as rt:
        await collections.create(rt, name="docs", embedding_provider="pid")
        await documents.upload(rt, "docs", text="a single note on sloes")
        outcomes = await documents.upload_many(rt, "docs", [documents.Upload(text=f"sloe note {i}") for i in range(40)])
        assert [o.error for o in outcomes] == [None] * 40
        async with rt.db.session() as session:
            vectors = await session.scalars(select(Chunk.vector))
            makers = Counter(int(np.frombuffer(v, dtype=np.float32)[0]) for v in vectors)
            metered = (await session.execute(select(UsageEvent.embedding_tokens, UsageEvent.tokens_estimated).where(
                UsageEvent.operation == "upload").order_by(UsageEvent.id))).all()
    assert makers.pop(os.getpid()) == 1  # the single upload's one chunk
    assert len(makers) == 1 and sum(makers.values()) == 40  # both groups of the batch (32 and 8) in one worker
    texts = ["a single note on sloes", *(f"sloe note {i}" for i in range(40))]  # the worker estimates the tokens too
    assert metered == [(estimate_tokens([t]), True) for t in texts]


@MULTICORE
async def test_a_worker_process_that_dies_fails_its_group_and_leaves_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker ends while embedding the second group: that group fails `unavailable` and nothing of it is stored;
    the first group stays."""
    monkeypatch.setattr(documents, "FIRST_GROUP", 3)
    async with pid_runtime(settings) as rt:
        await collections.create(rt, name="docs", embedding_provider="pid")
        items = [documents.Upload(text=f"damson note {i}" + (" exit!" if i == 4 else "")) for i in range(6)]
        outcomes = await documents.upload_many(rt, "docs", items)
        assert [o.error for o in outcomes[:3]] == [None] * 3
        assert [str(o.error) for o in outcomes[3:]] == ["unavailable: the batch's worker process ended unexpectedly"] * 3
        kept = {o.result.document.id for o in outcomes[:3] if o.result}
        async with rt.db.session() as session:
            assert set(await session.scalars(select(Document.id))) == kept
            assert {c.split("#")[0] for c in await session.scalars(select(Chunk.record_id))} == kept
            assert await session.scalar(select(func.count()).select_from(UsageEvent)) == 3


@MULTICORE
async def test_a_cancelled_batch_ends_its_worker_process(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled after its first group is written, the batch still stops and reaps the worker process it forked."""
    import anyio

    monkeypatch.setattr(documents, "FIRST_GROUP", 2)
    async with pid_runtime(settings) as rt:
        await collections.create(rt, name="docs", embedding_provider="pid")
        with anyio.CancelScope() as scope:

            async def cancel(outcome: documents.Outcome) -> None:
                scope.cancel()

            items = [documents.Upload(text=f"rowan note {i}") for i in range(10)]
            await documents.upload_many(rt, "docs", items, on_outcome=cancel)
        async with rt.db.session() as session:
            makers = {int(np.frombuffer(v, dtype=np.float32)[0]) for v in await session.scalars(select(Chunk.vector))}
    assert len(makers) == 1 and os.getpid() not in makers  # the first group, embedded in the worker
    with pytest.raises(ProcessLookupError):
        os.kill(makers.pop(), 0)
