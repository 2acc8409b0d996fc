"""The MCP server: tools, resources and instructions for one API key's view, on stdio, SSE or streamable HTTP."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, cast

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.types import CallToolResult, Resource
from pydantic import BaseModel
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bigrag_mcp import __version__, logs
from bigrag_mcp.errors import BigRagError
from bigrag_mcp.gate import Gate
from bigrag_mcp.policy import CollectionFacts, Policy, Principal, evaluate, visible_tools
from bigrag_mcp.services import collections
from bigrag_mcp.services.keys import refusal_reason
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.store.models import Collection
from bigrag_mcp.tools import admin, chat, documents, search, vectors
from bigrag_mcp.tools import collections as collection_tools
from bigrag_mcp.tools.arguments import CheckedServer

log = logging.getLogger(__name__)
HANDSHAKES = ("initialize", "server/discover")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_LISTINGS = 256  # distinct (protocol version, visible tools) listings kept serialized
TOOL_FAMILIES = (collection_tools, documents, vectors, search, admin, chat)


def instructions_for(principal: Principal | None, limits: str | None = None) -> str:
    """What the server tells an agent about the key it works with (`limits`: one sentence on the key's limits)."""
    text = (
        "bigrag-mcp: retrieval over document collections. Upload documents, then query them; results cite "
        "document ids and chunk offsets. Errors start with a stable code (invalid_argument, not_found, "
        "permission_denied, tenant_required, conflict, limit_exceeded, unavailable) and say what to change."
    )
    if principal is None:
        return text
    if principal.collection:
        text += f" This key works in collection {principal.collection!r} only; pass it as `collection`."
    if principal.tenant:
        text += (
            f" It is pinned to tenant {principal.tenant!r}: tenant filters and tenant metadata are filled in for you; "
            "naming another tenant is refused."
        )
    if limits:
        text += " " + limits
    return text


class KeyVerifier(TokenVerifier):
    """Checks `Authorization: Bearer <key>` on every HTTP request, so a revoked key fails at once."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def verify_token(self, token: str) -> AccessToken | None:
        async with self.rt.lookups.call() as revision:
            principal = await self.rt.lookups.principal(token)
        if principal is None:
            logs.auth_refused("http", await refusal_reason(self.rt.db, token))
            return None
        return AccessToken(
            token=token,
            client_id=principal.key_id,
            scopes=sorted(principal.scopes),
            claims={
                "collection": principal.collection,
                "tenant": principal.tenant,
                "role": principal.role,
                "revision": revision,
                "expires_at": principal.expires_at.isoformat() if principal.expires_at else None,
            },
        )


def _outcome(result: Any) -> str:
    """`ok`, or the stable code a tool error's text starts with."""
    called = result if isinstance(result, CallToolResult) else CallToolResult.model_validate(result)
    if not called.is_error:
        return "ok"
    text = getattr(called.content[0], "text", "") if called.content else ""
    return text.split(":", 1)[0] if ":" in text else "error"


def _access_log(session: Principal | None) -> Any:
    """Middleware: one access-log line per `tools/call` (key id, tool, collection, outcome code, milliseconds)."""

    async def logged(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method != "tools/call" or not logs.access.isEnabledFor(logging.INFO):
            return await call_next(ctx)
        started = time.perf_counter()
        result = await call_next(ctx)
        params = getattr(ctx, "params", None) or {}
        if not isinstance(params, dict):
            params = params.model_dump() if hasattr(params, "model_dump") else {}
        arguments = params.get("arguments") or {}
        token = get_access_token()
        logs.tool_call(
            token.client_id if token is not None else (session.key_id if session else None),
            str(params.get("name")),
            arguments.get("collection") if isinstance(arguments.get("collection"), str) else None,
            _outcome(result),
            (time.perf_counter() - started) * 1000,
        )
        return result

    return logged


def _health_routes(server: MCPServer, rt: Runtime, worker: int | None) -> None:
    """`/healthz` (the process answers; under `serve --workers`, which worker) and `/readyz` (the store answers and
    its schema is current); no auth, no data."""
    alive: dict[str, Any] = {"status": "ok"} if worker is None else {"status": "ok", "worker": worker}

    @server.custom_route("/healthz", methods=["GET"], include_in_schema=False)
    async def healthz(request: Request) -> Response:
        return JSONResponse(alive)

    @server.custom_route("/readyz", methods=["GET"], include_in_schema=False)
    async def readyz(request: Request) -> Response:
        try:
            current = await rt.db.schema_is_current()
        except Exception:
            log.warning("readiness check: the store is unreachable", exc_info=True)
            return JSONResponse({"status": "unavailable", "store": "unreachable"}, status_code=503)
        if not current:
            return JSONResponse({"status": "unavailable", "store": "schema not current"}, status_code=503)
        return JSONResponse({"status": "ready"})


async def _visible_collections(gate: Gate, principal: Principal) -> list[Resource]:
    """A resource for each collection the key may read with `collections_get`, as the policy decides."""
    async with gate.rt.db.session() as session:
        rows = (await session.execute(select(Collection.name, Collection.tenant_field).order_by(Collection.name))).all()
    return [
        Resource(name=name, uri=f"bigrag://collections/{name}", mime_type="application/json", description=f"Collection {name!r}")
        for name, tenant_field in rows
        if evaluate(gate.policy, principal, "collections_get", {"collection": name}, CollectionFacts(name, True, tenant_field)).allowed
    ]


def _wire(result: Any) -> dict[str, Any]:
    """A handler result in its wire form (the SDK hands middleware the serialized dict; models are dumped)."""
    if isinstance(result, BaseModel):
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dict(result)


def _key_view(gate: Gate) -> Any:
    """Middleware: `tools/list` shows only the tools the session's key may call, `resources/list` only the
    collections it may read; the handshake's instructions (`initialize`, or `server/discover` on the stateless
    protocol) speak to that key.

    The tools are fixed once the server is built, so each (protocol version, visible tools) listing is serialized
    once and then served from memory: a listing costs the key check, not a pass over every tool's JSON Schema.
    """
    listings: dict[tuple[str, frozenset[str]], dict[str, Any]] = {}

    async def per_key(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method not in ("tools/list", "resources/list", *HANDSHAKES):
            return await call_next(ctx)
        try:
            principal: Principal | None = await gate.principal()
        except BigRagError:
            principal = None
        if ctx.method == "tools/list":
            allowed = frozenset(visible_tools(gate.policy, principal)) if principal is not None else frozenset()
            view = (ctx.protocol_version, allowed)
            if view not in listings:
                listed = _wire(await call_next(ctx))
                if len(listings) >= MAX_LISTINGS:
                    listings.clear()
                listings[view] = {**listed, "tools": [t for t in listed["tools"] if t["name"] in allowed]}
            return dict(listings[view])
        result = await call_next(ctx)
        if result is None:
            return None
        if ctx.method == "resources/list":
            listed = _wire(result)
            visible = await _visible_collections(gate, principal) if principal is not None else []
            dumped = [r.model_dump(by_alias=True, mode="json", exclude_none=True) for r in visible]
            return {**listed, "resources": [*listed.get("resources", []), *dumped]}
        limits = gate.rt.limits.describe(principal) if principal is not None else None
        return {**_wire(result), "instructions": instructions_for(principal, limits)}

    return per_key


def build_server(
    rt: Runtime,
    policy: Policy,
    *,
    session_key: str | None = None,
    principal: Principal | None = None,
    http_url: str | None = None,
    worker: int | None = None,
) -> MCPServer:
    """The server for one stdio/in-memory session key, or (with `http_url`, the MCP endpoint) for bearer keys over HTTP
    (`worker`: its number under `serve --workers`)."""
    auth: dict[str, Any] = {}
    if http_url is not None:
        # Keys are not OAuth tokens: the protected-resource metadata is served only when an operator names a real
        # authorization server (BIGRAG_AUTH_ISSUER_URL); otherwise a 401 is a plain Bearer challenge.
        issuer = rt.settings.auth_issuer_url
        settings = AuthSettings(
            issuer_url=issuer or http_url,  # type: ignore[arg-type]
            resource_server_url=http_url if issuer else None,  # type: ignore[arg-type]
            validate_token_resource=False if issuer else None,  # the verifier checks the key itself
        )
        auth = {"token_verifier": KeyVerifier(rt), "auth": settings}
    gate = Gate(rt, policy, session_key)
    level = rt.settings.log_level.upper()
    server: MCPServer = CheckedServer(
        "bigrag-mcp",
        instructions=instructions_for(principal, rt.limits.describe(principal) if principal else None),
        version=__version__,
        # uvicorn logs at this level: at the default WARNING it no longer writes a line per HTTP request
        log_level=cast(Any, level if level in LEVELS else "INFO"),
        middleware=[_access_log(principal), _key_view(gate)],
        **auth,
    )
    if http_url is not None:
        _health_routes(server, rt, worker)
    for family in TOOL_FAMILIES:
        family.register(server, gate)

    @server.resource("bigrag://collections/{name}", mime_type="application/json")
    async def collection_resource(name: str) -> str:
        """A collection's settings and counts."""
        try:
            caller, decision = await gate.authorize("collections_get", {"collection": name}, "resource")
            found = await collections.get(rt, decision.args["collection"], tenant=caller.tenant)
        except BigRagError as exc:
            raise ResourceError(str(exc)) from None
        return json.dumps(found.model_dump(mode="json"))

    return server
