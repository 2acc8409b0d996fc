"""Shared fixtures: a runtime on a temporary data folder, keys, and MCP clients of the SDK."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from sqlalchemy import event, make_url, select

from bigrag_mcp.dashboard import Dashboard
from bigrag_mcp.dashboard.sessions import SessionStore
from bigrag_mcp.hookspecs import hookimpl
from bigrag_mcp.policy import Principal, holds, load_policy
from bigrag_mcp.server import build_server
from bigrag_mcp.services.keys import authenticate, create_key
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.services.usage import record_usage
from bigrag_mcp.settings import Settings
from bigrag_mcp.store.db import Database
from bigrag_mcp.store.models import Collection
from bigrag_mcp.testing.relay import temporary_database
from bigrag_mcp.testing.replicas import free_port
from bigrag_mcp.types import EmbeddingProviderFactory, Embeddings, Purpose

ALL = ["*:*"]
VEC = [1.0, 0.0, 0.0, 1.0]


class GatedEmbedder:
    """Embeds every text as VEC; while its gate is armed, a call announces itself and waits to be released."""

    name = "gated"
    model = "gated-1"
    dimension = 4
    max_batch = 16

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def embed(self, texts: Sequence[str], *, purpose: Purpose) -> Embeddings:
        self.gate.calls += 1
        if self.gate.armed and any(self.gate.marker in t for t in texts):
            self.gate.entered.set()
            await self.gate.release.wait()
        return Embeddings([VEC for _ in texts])


class Gate:
    """A plugin registering the "gated" embedder: arm it to hold uploads whose text holds `marker` mid-embedding."""

    def __init__(self) -> None:
        self.armed = False
        self.marker = ""
        self.calls = 0
        self.entered = anyio.Event()
        self.release = anyio.Event()

    @hookimpl
    def register_embedding_providers(self, register: Callable[[str, EmbeddingProviderFactory], None]) -> None:
        register("gated", lambda *, model, dimension: GatedEmbedder(self))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --- the store: SQLite, and a real Postgres for the modules marked `both_stores` --------------------

STORES = ("sqlite", "postgres")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_stores: run each test once on SQLite and once on a real Postgres")
    config.addinivalue_line("markers", "sqlite_only: in a module marked both_stores, a test run on SQLite only (its reason beside it)")
    config.addinivalue_line("markers", "postgres_only: what only a real Postgres shows (several processes at once)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marked = metafunc.definition.get_closest_marker
    if "store_kind" not in metafunc.fixturenames:
        return
    if marked("postgres_only"):
        metafunc.parametrize("store_kind", ["postgres"])
    elif marked("both_stores") and not marked("sqlite_only"):
        metafunc.parametrize("store_kind", STORES)


@pytest.fixture
def store_kind() -> str:
    """The store a test runs on: SQLite, unless its module is marked `both_stores` (then each in turn)."""
    return "sqlite"


def _in_own_loop(work: Awaitable[Any]) -> Any:
    """Run a coroutine to the end in a thread and event loop of its own (a sync fixture may sit inside a test's loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, work).result()


def _on_postgres(url: str, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run `work(connection)` on an autocommit asyncpg connection."""
    import asyncpg

    async def main() -> Any:
        conn = await asyncpg.connect(url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    return _in_own_loop(main())


class PostgresStores:
    """One real Postgres (the `pgserver` wheel) holding a migrated template; `fresh()` copies it into a new database."""

    TEMPLATE = "bigrag_template"

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url

        async def migrate() -> None:
            database = Database(self.url(self.TEMPLATE))
            await database.migrate()
            await database.close()

        for statement in (  # a throwaway server: durability only costs time here
            "ALTER SYSTEM SET fsync = off", "ALTER SYSTEM SET synchronous_commit = off",
            "ALTER SYSTEM SET full_page_writes = off", "SELECT pg_reload_conf()", f"CREATE DATABASE {self.TEMPLATE}",
        ):
            self._sql(statement)
        _in_own_loop(migrate())

    def _sql(self, statement: str) -> None:
        _on_postgres(self.server_url, lambda conn: conn.execute(statement))

    def url(self, name: str) -> str:
        """The SQLAlchemy asyncpg URL of database `name` on this server."""
        return make_url(self.server_url).set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)

    @contextmanager
    def fresh(self, *, empty: bool = False) -> Iterator[str]:
        """A database of its own (a copy of the migrated template, or `empty`) for one test, dropped afterwards."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self._sql(f"CREATE DATABASE {name}" + ("" if empty else f" TEMPLATE {self.TEMPLATE} STRATEGY FILE_COPY"))
        try:
            yield self.url(name)
        finally:
            self._sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresStores]:
    """A real Postgres 16 for the whole session, started once; skipped (loudly) only if `pgserver` is not installed."""
    if importlib.util.find_spec("pgserver") is None:
        pytest.skip("POSTGRES STORE TESTS NOT RUN: the pgserver wheel is not installed (pip install -e 'plugins/pgvector[test]')")
    from bigrag_pgvector.testing import postgres_server

    with postgres_server() as url:
        yield PostgresStores(url)


@pytest.fixture
def new_store(store_kind: str, request: pytest.FixtureRequest) -> Callable[[], AbstractContextManager[str | None]]:
    """Make a fresh migrated store: its URL on Postgres, None on SQLite (the data folder's default file)."""
    if store_kind == "sqlite":
        return nullcontext
    stores: PostgresStores = request.getfixturevalue("postgres")
    return stores.fresh


@pytest.fixture
def database_url(new_store: Callable[[], AbstractContextManager[str | None]]) -> Iterator[str | None]:
    """The test's store URL (None: SQLite in the data folder)."""
    with new_store() as url:
        yield url


@pytest.fixture
def empty_database_url(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The URL of an empty store, not yet migrated (for migration tests)."""
    if store_kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/empty.db"
        return
    stores: PostgresStores = request.getfixturevalue("postgres")
    with stores.fresh(empty=True) as url:
        yield url


@pytest.fixture
async def db(tmp_path: Path, database_url: str | None) -> AsyncIterator[Database]:
    """A bare migrated store, for services tested below the runtime."""
    if database_url is None:
        async with temporary_database(tmp_path) as database:
            yield database
        return
    database = Database(database_url)
    yield database
    await database.close()


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    """Built-in plugins only (an empty allow-list), so core tests do not depend on what else is installed."""
    return Settings(data_dir=tmp_path / "data", embedding_provider="hash", vector_backend="memory", load_plugins="",  # type: ignore[call-arg]
                    database_url=database_url, _env_file=None)


@pytest.fixture
async def rt(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = await Runtime.open(settings)
    yield runtime
    await runtime.close()


@pytest.fixture
async def gated(settings: Settings) -> AsyncIterator[tuple[Runtime, Gate]]:
    """A runtime with the "gated" embedder, and its gate."""
    gate = Gate()
    runtime = await Runtime.open(settings, plugins=(gate,))
    yield runtime, gate
    await runtime.close()


@pytest.fixture
def statements(rt: Runtime) -> Iterator[list[str]]:
    """Every SQL statement the runtime's store executes while the test runs, on its async engine and on the SQLite
    fast path's connection (clear it to start counting)."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engines = [rt.db.engine.sync_engine, *([rt.fast.engine] if rt.fast is not None else [])]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    fast = rt.fast
    driver = fast.connection if fast is not None else None
    if fast is not None:  # prepared reads run on the driver's connection itself
        fast.connection = Recording(driver, seen)  # type: ignore[assignment]
    yield seen
    for engine in engines:
        event.remove(engine, "before_cursor_execute", record)
    if fast is not None:
        fast.connection = driver  # type: ignore[assignment]


class Recording:
    """A DBAPI connection that notes every statement it executes."""

    def __init__(self, driver: Any, seen: list[str]) -> None:
        self.driver = driver
        self.seen = seen

    def execute(self, statement: str, *args: Any) -> Any:
        self.seen.append(statement)
        return self.driver.execute(statement, *args)

    def executemany(self, statement: str, *args: Any) -> Any:
        self.seen.append(statement)
        return self.driver.executemany(statement, *args)

    def __enter__(self) -> Any:  # a transaction, as the driver's connection is one
        return self.driver.__enter__()

    def __exit__(self, *exc: object) -> Any:
        return self.driver.__exit__(*exc)


@pytest.fixture
async def admin_key(rt: Runtime) -> str:
    _, secret = await create_key(rt.db, name="admin", scopes=ALL)
    return secret


@asynccontextmanager
async def mcp_session(rt: Runtime, key: str) -> AsyncIterator[Client]:
    """An in-memory MCP client session of the SDK, authenticated as `key` like a stdio session."""
    principal = await authenticate(rt.db, key)
    server = build_server(rt, load_policy(rt.settings.policy_file), session_key=key, principal=principal)
    async with Client(server) as client:
        yield client


@pytest.fixture
async def admin(rt: Runtime, admin_key: str) -> AsyncIterator[Client]:
    async with mcp_session(rt, admin_key) as client:
        yield client


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    """Call a tool that must succeed; return its structured output."""
    result = await client.call_tool(tool, args)
    assert not result.is_error, f"{tool} failed: {result.content[0].text}"  # type: ignore[union-attr]
    assert result.structured_content is not None
    return result.structured_content


async def refused(client: Client, tool: str, **args: Any) -> str:
    """Call a tool that must fail; return its error text (which starts with the stable code)."""
    result = await client.call_tool(tool, args)
    assert result.is_error, f"{tool} unexpectedly succeeded: {result.structured_content}"
    return result.content[0].text  # type: ignore[union-attr]


def server_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIGRAG_")}
    env.update(
        BIGRAG_DATA_DIR=str(settings.data_dir),
        BIGRAG_EMBEDDING_PROVIDER=settings.embedding_provider or "hash",
        BIGRAG_VECTOR_BACKEND=settings.vector_backend,
        BIGRAG_LOAD_PLUGINS=settings.load_plugins or "",
    )
    if settings.database_url:
        env["BIGRAG_DATABASE_URL"] = settings.database_url
    env.update(extra)
    return env


@pytest.fixture
def http_server(settings: Settings) -> Iterator[Any]:
    """Start `bigrag-mcp serve` over HTTP in a subprocess; yields a function(transport, *options, **env) -> base URL.

    The processes are in `start.procs`, for tests that read a server's stderr after stopping it."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(transport: str, *options: str, **env: str) -> str:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "bigrag_mcp", "serve", "--transport", transport, "--port", str(port), *options],
            env=server_env(settings, **env),
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return f"http://127.0.0.1:{port}"
            except OSError:
                time.sleep(0.05)  # polling for the port to open, not timing anything
        raise RuntimeError("server did not open its port within 60 s")

    start.procs = procs  # type: ignore[attr-defined]
    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def run_together(script: str, argvs: Sequence[Sequence[str]], timeout: float = 120) -> list[str]:
    """Run `python -c script ARGS` once per entry of `argvs`, all at once: each prints "ready" when set up and waits
    for a line on stdin, so their work starts together; returns what each printed after that, stripped."""
    procs = [
        subprocess.Popen([sys.executable, "-c", script, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for argv in argvs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [proc.communicate(timeout=timeout)[0].strip() for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert all(proc.returncode == 0 for proc in procs), outputs
    return outputs


@asynccontextmanager
async def http_session(url: str, key: str, timeout: float = 5.0) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=timeout) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client,
    ):
        yield client


def make_pdf(pages: list[str], *, password: str | None = None) -> bytes:
    """A real PDF with one text page per entry ("" gives a page without text, like a scan)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if text:
            pdf.multi_cell(0, 8, text)
    if password:
        pdf.set_encryption(owner_password=password, user_password=password)
    return bytes(pdf.output())


def make_docx(heading: str, paragraphs: list[str], table: list[list[str]]) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading(heading, level=1)
    for text in paragraphs:
        document.add_paragraph(text)
    grid = document.add_table(rows=len(table), cols=len(table[0]))
    for r, row in enumerate(table):
        for c, value in enumerate(row):
            grid.cell(r, c).text = value
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def make_xlsx(sheets: dict[str, list[list[Any]]]) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def make_pptx(slides: list[str]) -> bytes:
    import pptx
    from pptx.util import Inches

    deck = pptx.Presentation()
    for text in slides:
        slide = deck.slides.add_slide(deck.slide_layouts[6])
        slide.shapes.add_textbox(Inches(1), Inches(1), Inches(6), Inches(2)).text_frame.text = text
    out = io.BytesIO()
    deck.save(out)
    return out.getvalue()


def within_as_stated(outer: Principal, inner: Principal, shared: set[str]) -> bool:
    """policies/README.md's key-reach rule, restated independently of the engine: scopes held, pins at least as
    narrow, and a key limited to a tenant reaches only keys that stay in collections shared by tenants (`shared`)."""
    if not all(holds(outer.scopes, s) for s in inner.scopes):
        return False
    if outer.collection is not None and inner.collection != outer.collection:
        return False
    if outer.tenant is not None and inner.tenant != outer.tenant:
        return False
    return outer.tenant is None or outer.collection is not None or inner.collection is None or inner.collection in shared


@pytest.fixture
def postgres_store(postgres: PostgresStores) -> Iterator[str]:
    """An empty database of its own on the session's Postgres, for one test: its asyncpg URL (BIGRAG_DATABASE_URL)."""
    with postgres.fresh(empty=True) as url:
        yield url


@pytest.fixture
async def two_runtimes(settings: Settings) -> AsyncIterator[tuple[Runtime, Runtime]]:
    """Two independent runtimes on one store, as a server and the operator's CLI in two processes would be."""
    server, cli = await Runtime.open(settings), await Runtime.open(settings)
    yield server, cli
    await cli.close()
    await server.close()


# --- the dashboard --------------------------------------------------------------------------------

XSS_TENANT = '<script>alert("t")</script><img src=x onerror=alert(1)>'


@dataclass
class DashboardWorld:
    """A shared collection with tenants (one named like an XSS payload), usage in the last days, and keys."""

    rt: Runtime
    dashboard: Dashboard
    admin_key: str
    tenant_key: str
    tenant_key_id: str
    clock: list[float]


@pytest.fixture
async def dashboard_world(rt: Runtime, admin_key: str) -> DashboardWorld:
    async with mcp_session(rt, admin_key) as client:
        shared = (await call(client, "collections_create", collection="shared", tenant_field="tenant_id"))
        docs = (await call(client, "collections_create", collection="docs"))
    uids = {}
    async with rt.db.session() as session:
        for name in (shared["name"], docs["name"]):
            uids[name] = await session.scalar(select(Collection.uid).where(Collection.name == name))
    now = datetime.now(UTC)
    async with rt.db.session() as session:
        for day in range(10):
            for tenant, queries in (("acme", 3), ("globex", 5), (XSS_TENANT, 1)):
                for _ in range(queries):
                    record_usage(session, operation="query", collection="shared", collection_uid=uids["shared"], tenant=tenant,
                                 embedding_tokens=7 + day, provider="openai", model="text-embedding-3-small", latency_ms=5,
                                 created_at=now - timedelta(days=day))
            record_usage(session, operation="chat", collection="docs", collection_uid=uids["docs"], embedding_tokens=11,
                         chat_input_tokens=100, chat_output_tokens=20, provider="openai", model="text-embedding-3-small",
                         created_at=now - timedelta(days=day, minutes=1))
    info, tenant_key = await create_key(rt.db, name="acme app", scopes=["usage:read", "collection:read"],
                                        collection="shared", tenant="acme")
    clock = [0.0]
    sessions = SessionStore(idle_seconds=600, clock=lambda: clock[0])
    return DashboardWorld(rt, Dashboard(rt, load_policy(rt.settings.policy_file), sessions), admin_key, tenant_key,
                          info.id, clock)


@asynccontextmanager
async def dashboard_client(app: Any, base_url: str = "http://testserver") -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the dashboard app over the ASGI transport (no redirects followed)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client:
        yield client


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    """Fetch the login form (for its CSRF cookie and field) and POST the key."""
    form = await client.get("/dashboard/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    return await client.post("/dashboard/login", data={"csrf": csrf.group(1), "api_key": key})


@pytest.fixture(scope="session")
def postgres_store_url(postgres: PostgresStores) -> str:
    """The session's Postgres (its default database) as the store's asyncpg URL."""
    return make_url(postgres.server_url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
