"""Every tool call passes here: find the session's key, ask the policy, run the service, map errors."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.types import CallToolResult, TextContent

from bigrag_mcp.errors import BigRagError, PermissionDenied, Unavailable
from bigrag_mcp.policy import CollectionFacts, Decision, Policy, Principal, evaluate, target_collection
from bigrag_mcp.services.audit import audit_safely
from bigrag_mcp.services.ledger import Caller
from bigrag_mcp.services.runtime import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")
Call = Callable[[Caller, dict[str, Any], Decision], Awaitable[T]]


def principal_of_token(token: Any) -> Principal:
    """The principal the HTTP token verifier put into the request's access token."""
    claims = token.claims or {}
    expires_at = claims.get("expires_at")
    return Principal(
        key_id=token.client_id,
        scopes=frozenset(token.scopes),
        collection=claims.get("collection"),
        tenant=claims.get("tenant"),
        role=claims.get("role"),
        expires_at=datetime.fromisoformat(expires_at) if expires_at else None,
    )


def token_revision() -> int | None:
    """The store revision the HTTP key check of this request read (None on stdio and in-memory sessions)."""
    token = get_access_token()
    return (token.claims or {}).get("revision") if token is not None else None


def tool_error(exc: BigRagError) -> Any:
    """An error result whose text starts with the stable code (the SDK passes CallToolResult through as is)."""
    return CallToolResult(
        content=[TextContent(type="text", text=str(exc))], structured_content=exc.details, is_error=True
    )


class Gate:
    """Resolves who calls (HTTP bearer token, or the stdio key) and enforces the policy on each call."""

    def __init__(self, rt: Runtime, policy: Policy, session_key: str | None = None) -> None:
        self.rt = rt
        self.policy = policy
        self.session_key = session_key

    async def principal(self) -> Principal:
        token = get_access_token()
        if token is not None:
            return principal_of_token(token)
        if self.session_key is None:
            raise PermissionDenied("this session has no API key; set BIGRAG_API_KEY or send Authorization: Bearer <key>")
        principal = await self.rt.lookups.principal(self.session_key)
        if principal is None:
            raise PermissionDenied("the API key of this session is unknown, revoked or expired")
        return principal

    async def facts(self, operation: str, args: Mapping[str, Any], principal: Principal) -> CollectionFacts | None:
        """What the store says about the collection the call targets (as the policy engine names it)."""
        name = target_collection(self.policy, principal, operation, args)
        if name is None:
            return None
        found = await self.rt.lookups.collection(name)
        return CollectionFacts(name=name, exists=found is not None, tenant_field=found.tenant_field if found else None)

    async def authorize(
        self, operation: str, args: dict[str, Any], request_id: str, principal: Principal | None = None
    ) -> tuple[Caller, Decision]:
        """The caller and the allowing decision, or the denial as an error (counted and audited).

        `principal` is the session's (the dashboard's signed-in key); by default the call's own key.
        """
        principal = principal or await self.principal()
        decision = evaluate(self.policy, principal, operation, args, await self.facts(operation, args, principal))
        if not decision.allowed:
            await audit_safely(
                self.rt.db,
                actor_key_id=principal.key_id,
                action=f"{operation}.denied",
                resource_type="collection" if decision.collection else "tool",
                resource_id=decision.collection or operation,
                tenant=principal.tenant,
                outcome="denied",
                reason=f"{decision.code}: {decision.reason}",
                request_id=request_id,
            )
            decision.raise_if_denied()
        return Caller(principal, request_id), decision

    async def admit(self, operation: str, caller: Caller, decision: Decision) -> Caller:
        """Count the call against its limits before any work (LimitExceeded when a hard one is full)."""
        hold = await self.rt.limits.admit(caller, operation, decision.args, decision.collection, decision.tenant)
        return caller if hold is None else replace(caller, hold=hold)

    async def run(self, operation: str, args: dict[str, Any], call: Call[T], *, settles_later: bool = False) -> T:
        """Authorise `operation` with `args`, admit it under the limits, and run `call` with the decision's arguments;
        errors become error results. What the call held and did not settle is released when it ends (only when it
        fails, with `settles_later`: the caller then calls `finish`)."""
        request_id = uuid.uuid4().hex

        async def authorised() -> T:
            # one store revision for the whole call (the HTTP key check's, or one read now): the key, the policy's
            # collection facts and the service's own lookups all use it, so a call reads the revision at most once
            async with self.rt.lookups.call(token_revision()):
                caller, decision = await self.authorize(operation, args, request_id)
                caller = await self.admit(operation, caller, decision)
                try:
                    result = await call(caller, dict(decision.args), decision)
                except BaseException:
                    await self.finish(caller)
                    raise
                if not settles_later:
                    await self.finish(caller)
                return result

        return await self.answer(operation, request_id, authorised())

    async def finish(self, caller: Caller) -> None:
        """Release what the call still holds under its limits."""
        await self.rt.limits.release(caller.hold)

    @staticmethod
    async def answer(operation: str, request_id: str, work: Awaitable[T]) -> T:
        """The work's result, or its failure as an error result whose text starts with the stable code."""
        try:
            return await work
        except BigRagError as exc:
            return tool_error(exc)
        except Exception:
            log.exception("tool %s failed (request %s)", operation, request_id)
            return tool_error(Unavailable(f"the server failed on this call and rolled it back (request {request_id})"))
