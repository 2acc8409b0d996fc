"""The dashboard's HTTP routes: sign-in, sign-out, and read-only pages decided by the tools' policy engine."""

from __future__ import annotations

import csv
import hmac
import io
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from bigrag_mcp.dashboard.charts import bar_chart
from bigrag_mcp.dashboard.sessions import SessionStore
from bigrag_mcp.errors import BigRagError, InvalidArgument, NotFound, PermissionDenied
from bigrag_mcp.gate import Gate
from bigrag_mcp.policy import Policy, Principal
from bigrag_mcp.services import admin, collections
from bigrag_mcp.services.admin import UsageView
from bigrag_mcp.services.audit import list_audit, verify_chain
from bigrag_mcp.services.keys import authenticate, get_key
from bigrag_mcp.services.ledger import Caller
from bigrag_mcp.services.outbox import OutboxRelay
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.services.usage import CollectionUsage

log = logging.getLogger(__name__)
PREFIX = "/dashboard"
COOKIE = "bigrag_dashboard"
LOGIN_COOKIE = "bigrag_dashboard_login"
WINDOWS = (7, 30, 90)
TOP_ROWS = 20
STATUS = {"permission_denied": 403, "tenant_required": 400, "invalid_argument": 400, "not_found": 404}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
Cell = str | int | float | None


@dataclass(frozen=True, slots=True)
class Link:
    """A table cell that links to another dashboard page."""

    text: str
    href: str

    def __str__(self) -> str:
        return self.text


@dataclass(slots=True)
class Table:
    """A table of a page; `?csv=<name>` downloads exactly its rows."""

    name: str
    title: str
    headers: Sequence[str]
    rows: list[Sequence[Cell | Link]]
    note: str = ""


@dataclass(slots=True)
class Page:
    """What one page shows: headline figures, charts, tables and page-specific extras for its template."""

    title: str
    stats: list[tuple[str, str]] = field(default_factory=list)
    charts: list[Markup] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    windowed: bool = True


Handler = Callable[[Request, Principal], Awaitable[Page]]


def _url(path: str, **query: Any) -> str:
    given = {k: v for k, v in query.items() if v not in (None, "")}
    return f"{PREFIX}{path}" + (f"?{urlencode(given)}" if given else "")


def _money(value: float | None) -> str:
    return "unknown (a model missing from the price table)" if value is None else f"${value:,.6f}"


def _csv_cell(value: Cell | Link) -> str:
    """Text for a CSV cell; a leading formula character is defused so a spreadsheet shows it as text."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _ranked(rows: Sequence[CollectionUsage]) -> list[Any]:
    return sorted(rows, key=lambda r: (-(r.queries + r.chat_calls), -r.embedding_tokens))


class Dashboard:
    """Routes of the dashboard for one runtime and policy; sessions live in this object's store."""

    def __init__(self, rt: Runtime, policy: Policy, sessions: SessionStore | None = None) -> None:
        self.rt = rt
        self.gate = Gate(rt, policy)
        self.sessions = sessions or SessionStore()
        self.templates = Environment(
            loader=PackageLoader("bigrag_mcp.dashboard"), autoescape=select_autoescape(default=True)
        )

    # --- wiring -------------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        pages: dict[str, Handler] = {
            "/": self.overview,
            "/collection": self.collection,
            "/tenant": self.tenant,
            "/keys": self.keys,
            "/audit": self.audit,
            "/outbox": self.outbox,
        }
        return [
            Route(PREFIX + "/login", self.login_form, methods=["GET"]),
            Route(PREFIX + "/login", self.login, methods=["POST"]),
            Route(PREFIX + "/logout", self.logout, methods=["POST"]),
            *(Route(PREFIX + path, self._page(handler), methods=["GET"]) for path, handler in pages.items()),
        ]

    def install(self, server: MCPServer) -> None:
        """Serve the dashboard under /dashboard on the server's HTTP transports."""
        for route in self.routes():
            server.custom_route(route.path, methods=sorted(route.methods or ()), include_in_schema=False)(
                route.endpoint
            )

    def app(self) -> Starlette:
        """The dashboard on its own (for `bigrag-mcp dashboard`); `/` leads to it."""
        home = Route("/", lambda request: RedirectResponse(PREFIX + "/", 303), methods=["GET"])
        return Starlette(routes=[home, *self.routes()])

    # --- responses ----------------------------------------------------------------------------------

    def _html(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        body = self.templates.get_template(template).render(prefix=PREFIX, **context)
        return HTMLResponse(body, status_code=status, headers=HEADERS)

    @staticmethod
    def _cookie(response: Response, request: Request, name: str, value: str) -> None:
        response.set_cookie(
            name, value, httponly=True, samesite="strict", secure=request.url.scheme == "https", path=PREFIX
        )

    def _to_login(self, request: Request, notice: str | None = None) -> Response:
        response = RedirectResponse(_url("/login", notice=notice), 303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    # --- sign in and out ----------------------------------------------------------------------------

    async def login_form(self, request: Request, *, error: str | None = None, status: int = 200) -> Response:
        """The sign-in form; its CSRF token is double-submitted (cookie and field)."""
        token = uuid.uuid4().hex
        notice = {"ended": "Your session ended: the key was revoked or expired, or you were idle too long.",
                  "out": "You are signed out."}.get(request.query_params.get("notice", ""))
        response = self._html("login.html", status, csrf=token, error=error, notice=notice)
        self._cookie(response, request, LOGIN_COOKIE, token)
        return response

    async def login(self, request: Request) -> Response:
        """Check the POSTed key; on success start a fresh session. The key itself is never logged or kept."""
        form = await request.form()
        sent, expected = str(form.get("csrf", "")), request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(sent, expected):
            return await self.login_form(request, error="The form expired; please sign in again.", status=400)
        principal = await authenticate(self.rt.db, str(form.get("api_key", "")))
        if principal is None:
            log.info("dashboard sign-in refused")
            return await self.login_form(request, error="That API key is unknown, revoked or expired.", status=401)
        sid, _ = self.sessions.start(principal.key_id)
        log.info("dashboard sign-in by key %s", principal.key_id)
        response = RedirectResponse(PREFIX + "/", 303)
        self._cookie(response, request, COOKIE, sid)
        response.delete_cookie(LOGIN_COOKIE, path=PREFIX)
        return response

    async def logout(self, request: Request) -> Response:
        sid = request.cookies.get(COOKIE)
        session = self.sessions.get(sid)
        form = await request.form()
        if session is not None and not hmac.compare_digest(str(form.get("csrf", "")), session.csrf):
            return self._html("error.html", 400, message="invalid_argument: the sign-out form is stale; reload the page")
        self.sessions.end(sid)
        return self._to_login(request, "out")

    async def _principal(self, key_id: str) -> Principal | None:
        """The session key's principal as the store says now: None once it is revoked, expired or gone."""
        try:
            key = await get_key(self.rt.db, key_id)
        except NotFound:
            return None
        if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= datetime.now(UTC)):
            return None
        return key.principal()

    def _page(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A signed-in page: the session's key is checked again on every request, then the handler runs."""

        async def endpoint(request: Request) -> Response:
            sid = request.cookies.get(COOKIE)
            session = self.sessions.get(sid)
            if session is None:
                return self._to_login(request, "ended" if sid else None)
            principal = await self._principal(session.key_id)
            if principal is None:
                self.sessions.end(sid)
                return self._to_login(request, "ended")
            try:
                page = await handler(request, principal)
            except BigRagError as exc:
                return self._html("error.html", STATUS.get(exc.code, 400), message=str(exc), csrf=session.csrf,
                                  principal=principal)
            wanted = request.query_params.get("csv")
            if wanted is not None:
                return self._csv(page, wanted)
            query = {k: v for k, v in request.query_params.items() if k != "days"}
            return self._html("page.html", page=page, principal=principal, csrf=session.csrf,
                              days=request.query_params.get("days", "30"),
                              windows=WINDOWS, path=request.url.path, query=query, url=_url)

        return endpoint

    @staticmethod
    def _csv(page: Page, name: str) -> Response:
        table = next((t for t in page.tables if t.name == name), None)
        if table is None:
            return Response(f"not_found: this page has no table {name!r}", 404, media_type="text/plain")
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(table.headers)
        writer.writerows([_csv_cell(c) for c in row] for row in table.rows)
        filename = f"bigrag-{table.name}.csv"
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={**HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'})

    # --- policy -------------------------------------------------------------------------------------

    async def _allow(self, principal: Principal, operation: str, args: dict[str, Any]) -> tuple[Caller, dict[str, Any]]:
        """The same decision the tool `operation` would get (denials audited); the arguments it fills in."""
        caller, decision = await self.gate.authorize(operation, args, uuid.uuid4().hex, principal)
        return caller, dict(decision.args)

    @staticmethod
    def _days(request: Request) -> int:
        raw = request.query_params.get("days", "30")
        if raw not in {str(d) for d in WINDOWS}:
            raise InvalidArgument(f"days must be one of {', '.join(map(str, WINDOWS))}, not {raw!r}")
        return int(raw)

    async def _usage(self, request: Request, principal: Principal, collection: str | None, tenant: str | None) -> UsageView:
        """Exactly `usage_get(window_days, collection, tenant)` for this key, limits included."""
        args = {"window_days": self._days(request), "collection": collection, "tenant": tenant}
        _, a = await self._allow(principal, "usage_get", args)
        return await admin.usage(self.rt, window_days=a["window_days"], collection=a.get("collection"),
                                 tenant=a.get("tenant"), principal=principal)

    # --- pages --------------------------------------------------------------------------------------

    @staticmethod
    def _usage_page(title: str, report: UsageView) -> Page:
        days = [d.date for d in report.timeline]
        page = Page(title)
        page.stats = [
            ("Window", f"{report.start} to {report.end} ({report.window_days} days, UTC)"),
            ("Queries", f"{report.queries_total:,}"),
            ("Chat calls", f"{report.chat_calls_total:,}"),
            ("Embedding tokens", f"{report.embedding_tokens_total:,}"),
            ("Estimated embedding cost", _money(report.embedding_cost_usd_estimate)),
            ("Chat tokens in / out", f"{report.chat_input_tokens_total:,} / {report.chat_output_tokens_total:,}"),
            ("Documents (net)", f"{report.documents_total:,}"),
            ("Chunks (net)", f"{report.chunks_total:,}"),
            ("Storage bytes (net)", f"{report.storage_bytes_total:,}"),
        ]
        page.charts = [
            bar_chart("Queries per day", days, [d.queries for d in report.timeline]),
            bar_chart("Chat calls per day", days, [d.chat_calls for d in report.timeline]),
            bar_chart("Embedding tokens per day", days, [d.embedding_tokens for d in report.timeline]),
        ]
        figures = ("Queries", "Chat calls", "Embedding tokens", "Est. cost (USD)", "Documents (net)", "Storage bytes (net)")

        def numbers(r: CollectionUsage) -> list[Cell]:
            cost = r.embedding_cost_usd_estimate
            return [r.queries, r.chat_calls, r.embedding_tokens, None if cost is None else f"{cost:.6f}", r.documents,
                    r.storage_bytes]

        by_collection = _ranked(report.by_collection)
        by_tenant = _ranked(report.by_tenant)
        page.tables = [
            Table("collections", "Top collections", ("Collection", *figures),
                  [[Link(r.collection, _url("/collection", collection=r.collection)) if r.collection else "(none)",
                    *numbers(r)] for r in by_collection]),
            Table("tenants", "Top tenants", ("Collection", "Tenant", *figures),
                  [[r.collection, Link(r.tenant, _url("/tenant", collection=r.collection, tenant=r.tenant)), *numbers(r)]
                   for r in by_tenant]),
        ]
        if report.limits:  # each limit within the key's reach: its use against its cap and when it resets
            page.tables.insert(0, Table(
                "limits", "Limits", ("Limit", "Metric", "Mode", "Collection", "Tenant", "Used", "Max", "Remaining",
                                     "Window", "Resets at (UTC)"),
                [[x.name, x.metric, x.mode, x.collection, x.tenant, x.used, x.max, x.remaining, x.window,
                  x.resets_at.isoformat() if x.resets_at else "standing cap"] for x in report.limits],
            ))
        return page

    async def overview(self, request: Request, principal: Principal) -> Page:
        """Everything the key may see (a pinned key: its collection or tenant), as `usage_get` reports it."""
        report = await self._usage(request, principal, None, None)
        scope = " / ".join(x for x in (report.collection, report.tenant) if x) or "all collections"
        return self._usage_page(f"Usage: {scope}", report)

    async def _counts(self, principal: Principal, name: str) -> list[tuple[str, str]]:
        """A collection's document and chunk counts (of the key's tenant), when the key may read the collection."""
        try:
            caller, a = await self._allow(principal, "collections_get", {"collection": name})
        except PermissionDenied:
            return []
        found = await collections.get(self.rt, a["collection"], tenant=caller.tenant)
        return [("Documents now", f"{found.document_count or 0:,}"), ("Chunks and vectors now", f"{found.vector_count or 0:,}")]

    async def collection(self, request: Request, principal: Principal) -> Page:
        name = request.query_params.get("collection") or ""
        if not name:
            raise InvalidArgument("the collection page needs ?collection=<collection>")
        report = await self._usage(request, principal, name, None)
        page = self._usage_page(f"Collection {report.collection}", report)
        page.stats[1:1] = await self._counts(principal, report.collection or name)
        return page

    async def tenant(self, request: Request, principal: Principal) -> Page:
        name, tenant = request.query_params.get("collection") or None, request.query_params.get("tenant") or ""
        if not tenant:
            raise InvalidArgument("the tenant page needs ?collection=...&tenant=...")
        report = await self._usage(request, principal, name, tenant)
        page = self._usage_page(f"Tenant {report.tenant} in {report.collection}", report)
        page.stats[1:1] = await self._counts(principal, report.collection or "")
        page.tables = [t for t in page.tables if t.name != "tenants"]
        return page

    async def keys(self, request: Request, principal: Principal) -> Page:
        """The keys this key may manage, as `api_keys_list` shows them: never a secret or its hash."""
        caller, _ = await self._allow(principal, "api_keys_list", {})
        rows: list[Sequence[Cell | Link]] = [
            [k.id, k.name, " ".join(k.scopes), k.collection, k.tenant, k.created_at.isoformat(),
             k.expires_at.isoformat() if k.expires_at else None, k.last_used_at.isoformat() if k.last_used_at else None,
             k.revoked_at.isoformat() if k.revoked_at else None]
            for k in await admin.keys_visible(self.rt, caller)
        ]
        headers = ("Id", "Name", "Scopes", "Collection", "Tenant", "Created", "Expires", "Last used", "Revoked")
        return Page("API keys", tables=[Table("keys", "API keys", headers, rows)], windowed=False)

    async def audit(self, request: Request, principal: Principal) -> Page:
        """`audit_list` with the page's filters and cursor, and whether the hash chain verifies."""
        filters = {name: request.query_params.get(name) or None
                   for name in ("actor_key_id", "action", "resource_type", "resource_id", "tenant", "cursor")}
        _, a = await self._allow(principal, "audit_list", {**filters, "limit": 50})
        found = await list_audit(self.rt.db, **a)
        chain = await verify_chain(self.rt.db)
        verdict = (f"passes ({chain.rows_checked:,} rows)" if chain.ok
                   else f"FAILS at row {chain.bad_row_id}: {chain.problem} ({chain.detail})")
        rows: list[Sequence[Cell | Link]] = [
            [r.id, r.created_at.isoformat(), r.actor_key_id, r.action, r.resource_type, r.resource_id, r.tenant,
             r.outcome, r.reason] for r in found.rows
        ]
        headers = ("Id", "Time", "Actor key", "Action", "Resource type", "Resource", "Tenant", "Outcome", "Reason")
        shown = {k: v for k, v in filters.items() if k != "cursor"}
        return Page(
            "Audit log",
            stats=[("audit verify", verdict)],
            tables=[Table("audit", "Audit rows, newest first", headers, rows)],
            extra={"filters": shown, "next": _url("/audit", **shown, cursor=found.next_cursor) if found.next_cursor else None,
                   "chain_ok": chain.ok},
            windowed=False,
        )

    async def outbox(self, request: Request, principal: Principal) -> Page:
        """Billing and webhook deliveries waiting or parked (needs what `webhooks_list` needs: an unpinned admin)."""
        await self._allow(principal, "webhooks_list", {})
        status = await OutboxRelay(self.rt.db, {}, None).status()
        totals = status["totals"]
        row_headers = ("Id", "Kind", "Target", "Attempts", "Last error", "Created", "Next attempt")
        keys = ("id", "kind", "target", "attempts", "last_error", "created_at", "next_attempt_at")
        return Page(
            "Outbox",
            stats=[("Pending", f"{totals['pending']:,}"), ("Due now", f"{status['due']:,}"),
                   ("Parked", f"{totals['parked']:,}"), ("Sent", f"{totals['sent']:,}"),
                   ("Oldest pending", status["oldest_pending_at"] or "none")],
            tables=[
                Table("targets", "By target", ("Kind", "Target", "Pending", "Sent", "Parked"),
                      [[r["kind"], r["target"], r["pending"], r["sent"], r["parked"]] for r in status["by_target"]]),
                Table("parked", "Parked (gave up; `bigrag-mcp billing replay` resends)", row_headers,
                      [[r[k] for k in keys] for r in status["parked"]]),
                Table("retrying", "Pending after a failed attempt", row_headers,
                      [[r[k] for k in keys] for r in status["retrying"]]),
            ],
            windowed=False,
        )
