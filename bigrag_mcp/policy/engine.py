"""The policy decision: a pure function of (policy, principal, operation, arguments, collection facts).

No I/O and no MCP types. Every call ends in a Decision: allowed with the arguments to execute and the one
tenant the service must scope to, or denied with a stable code and a sentence saying why.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Literal

from bigrag_mcp.errors import BigRagError, InvalidArgument, PermissionDenied, TenantRequired
from bigrag_mcp.filters import parse_filter, require_tenant, single_tenant
from bigrag_mcp.policy.model import OperationPolicy, Policy, holds

DenyCode = Literal["permission_denied", "tenant_required", "invalid_argument"]

CROSS_COLLECTION = "This API key cannot use cross-collection operations."
_ERRORS: dict[str, type[BigRagError]] = {
    "permission_denied": PermissionDenied,
    "tenant_required": TenantRequired,
    "invalid_argument": InvalidArgument,
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: one API key, its scopes, its optional collection and tenant pins, and when it expires."""

    key_id: str
    scopes: frozenset[str]
    collection: str | None = None
    tenant: str | None = None
    role: str | None = None  # the policy role the key was minted with, which limits may name
    expires_at: datetime | None = None

    @property
    def pinned(self) -> bool:
        return self.collection is not None or self.tenant is not None


@dataclass(frozen=True, slots=True)
class CollectionFacts:
    """What the store says about the collection a call names (exists=False when there is none)."""

    name: str
    exists: bool
    tenant_field: str | None = None


@dataclass(frozen=True, slots=True)
class Slice:
    """The part of one collection a key reaches: all of it (tenant None) or one tenant's rows."""

    tenant: str | None = None

    def covers(self, other: Slice) -> bool:
        """True when every row of `other` is inside this slice."""
        return self.tenant is None or self.tenant == other.tenant


def reach_in(principal: Principal, facts: CollectionFacts) -> Slice | None:
    """What of the collection `facts` describes the key may touch (None: nothing). The one rule for pins."""
    if principal.collection is not None and facts.name != principal.collection:
        return None
    shared = facts.exists and bool(facts.tenant_field)
    if principal.collection is None and principal.tenant is not None and not shared:
        return None
    return Slice(principal.tenant if shared else None)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one policy evaluation: what an audit row and the tool layer need."""

    operation: str
    key_id: str | None
    allowed: bool
    reason: str
    code: DenyCode | None = None
    collection: str | None = None
    tenant: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> Literal["allowed", "denied"]:
        return "allowed" if self.allowed else "denied"

    def error(self) -> BigRagError | None:
        """The error to answer a denied call with (None when allowed)."""
        return None if self.code is None else _ERRORS[self.code](self.reason)

    def raise_if_denied(self) -> None:
        """Raise PermissionDenied, TenantRequired or InvalidArgument carrying the reason when denied."""
        error = self.error()
        if error is not None:
            raise error

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view for `policy explain` and audit metadata."""
        return {
            "operation": self.operation,
            "key_id": self.key_id,
            "outcome": self.outcome,
            "code": self.code,
            "reason": self.reason,
            "collection": self.collection,
            "tenant": self.tenant,
            "args": dict(self.args),
        }


class _Deny(Exception):
    def __init__(self, code: DenyCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _conflict(pin: str, where: str, value: object) -> _Deny:
    return _Deny(
        "permission_denied",
        f"This API key is limited to tenant {pin!r}, but {where} names {value!r}; name {pin!r} or leave it out.",
    )


def _require_scope(principal: Principal, scope: str, operation: str) -> None:
    if not holds(principal.scopes, scope):
        raise _Deny("permission_denied", f"This API key lacks the scope {scope!r} that {operation} needs.")


def _tenant_value(value: object, pin: str | None, where: Callable[[], str]) -> str | None:
    """Check one tenant value against the pin: None means 'fill in the pin'. `where` names it in a refusal."""
    if value is None:
        if pin is None:
            raise _Deny(
                "tenant_required", f"This collection is shared by tenants: {where()} must name the tenant of this call."
            )
        return None
    if not isinstance(value, str) or not value:
        raise _Deny("tenant_required", f"{where()} must be a non-empty string naming one tenant.")
    if pin is not None and value != pin:
        raise _conflict(pin, where(), value)
    return value


def _filter_rule(op: OperationPolicy, pin: str | None, tenant_field: str, args: dict[str, Any]) -> str | None:
    raw = args.get(op.filter_arg)
    tree = parse_filter(raw)
    if pin is None:
        return require_tenant(tree, tenant_field)
    named = single_tenant(tree, tenant_field)
    if named is None:
        # The tenant field is not a top-level key of `raw` (single_tenant would have seen it), so adding it is an $and.
        args[op.filter_arg] = {**raw, tenant_field: pin} if raw else {tenant_field: pin}
    elif named != pin:
        raise _conflict(pin, f"the filter on {tenant_field!r}", named)
    return pin


def _metadata_tenant(
    meta: object, pin: str | None, tenant_field: str, where: Callable[[], str]
) -> tuple[Mapping[str, Any], str]:
    if meta is None:
        meta = {}
    if not isinstance(meta, Mapping):
        raise _Deny("invalid_argument", f"{where()} must be an object.")
    value = _tenant_value(meta.get(tenant_field), pin, lambda: f"{where()}.{tenant_field}")
    if value is None:
        assert pin is not None
        return {**meta, tenant_field: pin}, pin
    return meta, value


def _metadata_rule(op: OperationPolicy, pin: str | None, tenant_field: str, args: dict[str, Any]) -> str | None:
    if op.records_arg is None:
        meta, tenant = _metadata_tenant(args.get(op.metadata_arg), pin, tenant_field, lambda: op.metadata_arg)
        args[op.metadata_arg] = meta
        return tenant
    records = args.get(op.records_arg)
    if not isinstance(records, Sequence) or isinstance(records, (str, bytes)) or not records:
        raise _Deny("invalid_argument", f"{op.records_arg} must be a non-empty list of records.")
    tenants: set[str] = set()
    filled: list[Mapping[str, Any]] = []
    for i, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise _Deny("invalid_argument", f"{op.records_arg}[{i}] must be an object.")
        given = record.get(op.metadata_arg)
        where = partial("{}[{}].{}".format, op.records_arg, i, op.metadata_arg)  # formatted only for a refusal
        meta, tenant = _metadata_tenant(given, pin, tenant_field, where)
        tenants.add(tenant)
        filled.append(record if meta is given else {**record, op.metadata_arg: meta})
    if len(tenants) > 1:
        raise _Deny("tenant_required", f"Every record of one {op.records_arg} call must carry the same tenant.")
    args[op.records_arg] = filled
    return tenants.pop()


def _argument_rule(op: OperationPolicy, pin: str | None, tenant_field: str, args: dict[str, Any]) -> str | None:
    value = args.get(op.tenant_arg)
    if value is None and pin is None and op.tenant_optional:
        return None
    tenant = _tenant_value(value, pin, lambda: f"the {op.tenant_arg!r} argument")
    if tenant is None:
        args[op.tenant_arg] = pin
        return pin
    return tenant


_RULES: dict[str, Callable[[OperationPolicy, str | None, str, dict[str, Any]], str | None]] = {
    "filter": _filter_rule,
    "metadata": _metadata_rule,
    "argument": _argument_rule,
}


def target_collection(policy: Policy, principal: Principal, operation: str, args: Mapping[str, Any]) -> str | None:
    """The collection whose facts `evaluate` needs for this call (the pin fills an omitted one), or None."""
    op = policy.operations.get(operation)
    if op is None or op.collection_arg is None:
        return None
    value = args.get(op.collection_arg)
    if value is None:
        return principal.collection
    return value if isinstance(value, str) and value else None


def _collection_guard(
    op: OperationPolicy, principal: Principal, operation: str, args: dict[str, Any], facts: CollectionFacts | None
) -> str | None:
    """Apply the pins to the collection the call names; return that collection (None = every collection)."""
    assert op.collection_arg is not None
    value = args.get(op.collection_arg)
    if value is None:
        value = principal.collection
        if value is None:
            if not op.all_collections_when_omitted:
                raise _Deny("invalid_argument", f"{operation} needs the {op.collection_arg!r} argument.")
            if principal.tenant is not None:
                raise _Deny("permission_denied", CROSS_COLLECTION)
            return None
        args[op.collection_arg] = value
    if not isinstance(value, str) or not value:
        raise _Deny("invalid_argument", f"{op.collection_arg} must be a collection name.")
    if facts is None or facts.name != value:
        raise ValueError(f"evaluate() needs the CollectionFacts of {value!r} for {operation}")
    # The refusals below read nothing about the collection but its name until the key is known to belong
    # there, so a pinned key learns nothing about whether another collection exists.
    if reach_in(principal, facts) is None:
        if principal.collection is not None:
            raise _Deny(
                "permission_denied",
                f"This API key is pinned to collection {principal.collection!r} and cannot use collection {value!r}.",
            )
        raise _Deny(
            "permission_denied",
            f"This API key is limited to tenant {principal.tenant!r} and can only use collections shared by "
            f"tenants; it cannot use collection {value!r}.",
        )
    if principal.pinned and op.alters(facts.tenant_field):
        raise _Deny(
            "permission_denied", f"This API key is pinned and cannot reconfigure or delete collection {value!r}."
        )
    return value


def _decide(
    op: OperationPolicy, principal: Principal, operation: str, args: dict[str, Any], facts: CollectionFacts | None
) -> Decision:
    if op.scope_when_tenant_field is None:
        _require_scope(principal, op.scope, operation)
    collection: str | None = None
    if op.cross_collection and principal.pinned:
        raise _Deny("permission_denied", CROSS_COLLECTION)
    if op.collection_arg is not None:
        collection = _collection_guard(op, principal, operation, args, facts)
    tenant_field = facts.tenant_field if collection is not None and facts is not None and facts.exists else None
    scope = op.required_scope(tenant_field)
    if op.scope_when_tenant_field is not None:
        _require_scope(principal, scope, operation)
    tenant = None
    if tenant_field and op.tenant_rule != "none":
        tenant = _RULES[op.tenant_rule](op, principal.tenant, tenant_field, args)
    where = f" on collection {collection!r}" if collection else ""
    who = f" for tenant {tenant!r}" if tenant else ""
    return Decision(
        operation=operation,
        key_id=principal.key_id,
        allowed=True,
        reason=f"Allowed: the key holds {scope!r} for {operation}{where}{who}.",
        collection=collection,
        tenant=tenant,
        args=args,
    )


def evaluate(
    policy: Policy,
    principal: Principal,
    operation: str,
    args: Mapping[str, Any],
    facts: CollectionFacts | None = None,
) -> Decision:
    """Decide one call. `facts` describe `target_collection(...)`; a mismatch is a caller bug (ValueError)."""
    op = policy.operations.get(operation)
    if op is None:
        return Decision(
            operation,
            principal.key_id,
            False,
            f"The tool {operation!r} is not allowed by this server's policy.",
            "permission_denied",
        )
    work = dict(args)
    try:
        return _decide(op, principal, operation, work, facts)
    except _Deny as deny:
        code, reason = deny.code, deny.reason
    except InvalidArgument as exc:
        code, reason = "invalid_argument", exc.message
    except TenantRequired as exc:
        code, reason = "tenant_required", exc.message
    collection = target_collection(policy, principal, operation, args)
    return Decision(operation, principal.key_id, False, reason, code, collection=collection)


def visible_tools(policy: Policy, principal: Principal) -> list[str]:
    """The tools a key may see in tools/list: it holds their scope, and a pinned key is not shown tools it can never use."""
    visible = []
    for name, op in policy.operations.items():
        if principal.pinned and (op.cross_collection or op.alters_collection == "always"):
            continue
        if holds(principal.scopes, op.scope) or (
            op.scope_when_tenant_field is not None and holds(principal.scopes, op.scope_when_tenant_field)
        ):
            visible.append(name)
    return visible
