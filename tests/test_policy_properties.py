"""Invariants of the policy engine over random keys, tools, arguments and collections (hypothesis)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from conftest import within_as_stated
from hypothesis import given, settings
from hypothesis import strategies as st

from bigrag_mcp.filters import matches, parse_filter, single_tenant
from bigrag_mcp.policy import (
    ACTIONS,
    RESOURCES,
    CollectionFacts,
    Decision,
    Principal,
    check_key_grant,
    evaluate,
    holds,
    load_policy,
    reach_gap,
    target_collection,
    visible_tools,
)

POLICY = load_policy()
WORLD: dict[str, str | None] = {"shared": "tenant_id", "wiki": "org", "plain": None}  # existing collections
NAMES = [*WORLD, "ghost"]  # "ghost" does not exist
TENANTS = ["acme", "globex"]
CONCRETE = [f"{r}:{a}" for r in sorted(RESOURCES) for a in sorted(ACTIONS)]
SCOPES = st.sampled_from(
    [*CONCRETE, *(f"{r}:*" for r in sorted(RESOURCES)), *(f"*:{a}" for a in sorted(ACTIONS)), "*:*"]
)
FIELDS = ["tenant_id", "org", "lang", "tenant_id", "org"]
VALUES = st.sampled_from([*TENANTS, *TENANTS, "", "en", 3])

principals = st.builds(
    Principal,
    key_id=st.just("k"),
    scopes=st.frozensets(SCOPES, max_size=6),
    collection=st.sampled_from([None, None, *NAMES]),
    tenant=st.sampled_from([None, None, *TENANTS]),
)


@st.composite
def calls(draw: st.DrawFn) -> tuple[Principal, str, dict[str, Any]]:
    """A key, a tool and arguments; half the keys are given a scope (or a wildcard) the tool needs."""
    operation = draw(st.sampled_from([*POLICY.operations, "unknown_tool"]))
    principal = draw(principals)
    rule = POLICY.operations.get(operation)
    if rule is not None and draw(st.booleans()):
        needed = draw(st.sampled_from([rule.scope, rule.scope_when_tenant_field or rule.scope]))
        resource, _, action = needed.partition(":")
        grant = draw(st.sampled_from([needed, f"{resource}:*", f"*:{action}", "*:*"]))
        principal = Principal(principal.key_id, principal.scopes | {grant}, principal.collection, principal.tenant)
    return principal, operation, draw(arguments)


_leaf = st.one_of(
    st.builds(lambda f, v: {f: v}, st.sampled_from(FIELDS), VALUES),
    st.builds(
        lambda f, op, v: {f: {op: v}},
        st.sampled_from(FIELDS),
        st.sampled_from(["$eq", "$ne", "$gt", "$lte"]),
        VALUES,
    ),
    st.builds(
        lambda f, op, vs: {f: {op: vs}},
        st.sampled_from(FIELDS),
        st.sampled_from(["$in", "$nin"]),
        st.lists(VALUES, max_size=3),
    ),
    st.builds(lambda f, b: {f: {"$exists": b}}, st.sampled_from(FIELDS), st.booleans()),
)
filters = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.builds(lambda xs: {"$and": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"$or": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"$not": x}, inner),
        st.builds(lambda a, b: {**a, **b}, inner, inner),
    ),
    max_leaves=6,
)
metadata = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={"tenant_id": VALUES, "org": VALUES, "lang": VALUES}),
    st.just(["tenant_id"]),
)
records = st.lists(st.fixed_dictionaries({"id": st.sampled_from("abc")}, optional={"metadata": metadata}), max_size=3)
arguments = st.fixed_dictionaries(
    {},
    optional={
        "collection": st.sampled_from([*NAMES, "", 7]),
        "filters": st.one_of(st.none(), st.just({}), filters, st.just({"$bad": 1})),
        "metadata": metadata,
        "tenant": st.sampled_from([*TENANTS, "", None]),
        "vectors": records,
        "query": st.just("q"),
    },
)


def _facts(name: str | None, exists: bool | None = None, tenant_field: str | None = None) -> CollectionFacts | None:
    if name is None:
        return None
    if exists is None:
        return CollectionFacts(name, name in WORLD, WORLD.get(name))
    return CollectionFacts(name, exists, tenant_field)


def _decide(principal: Principal, operation: str, args: Mapping[str, Any]) -> Decision:
    return evaluate(POLICY, principal, operation, args, _facts(target_collection(POLICY, principal, operation, args)))


def _tenants_named(operation: str, decision: Decision, tenant_field: str) -> set[Any]:
    """Every tenant value the allowed call's arguments carry for its tenant rule."""
    op = POLICY.operations[operation]
    args = decision.args
    if op.tenant_rule == "filter":
        return {single_tenant(parse_filter(args.get(op.filter_arg)), tenant_field)}
    if op.tenant_rule == "metadata":
        metas = [r[op.metadata_arg] for r in args[op.records_arg]] if op.records_arg else [args[op.metadata_arg]]
        return {m.get(tenant_field) for m in metas}
    return {args.get(op.tenant_arg)}


def _check_bounds(principal: Principal, operation: str, args: dict[str, Any]) -> Decision:
    before = copy.deepcopy(args)
    decision = _decide(principal, operation, args)
    assert args == before, "evaluate must not change the caller's arguments"
    assert decision.operation == operation and decision.key_id == principal.key_id and decision.reason
    if not decision.allowed:
        assert decision.code in {"permission_denied", "tenant_required", "invalid_argument"}
        assert decision.tenant is None and not decision.args
        return decision
    op = POLICY.operations[operation]
    facts = _facts(decision.collection)
    tenant_field = facts.tenant_field if facts else None
    # never allowed without the scope; an empty scope list grants nothing; the key sees the tool it may use
    assert principal.scopes and holds(principal.scopes, op.required_scope(tenant_field))
    assert operation in visible_tools(POLICY, principal)
    # a collection-pinned key never reaches another collection, nor spans collections
    if principal.collection is not None:
        assert not op.cross_collection
        assert decision.collection == principal.collection == decision.args[op.collection_arg or ""]
    # a tenant-pinned key without a collection pin stays in collections shared by tenants
    if principal.tenant is not None and principal.collection is None:
        assert not op.cross_collection and tenant_field is not None
    if tenant_field is None or op.tenant_rule == "none":
        assert decision.tenant is None
        return decision
    # in a shared collection the call carries exactly the decision's tenant, and never a tenant other than the pin
    if not (op.tenant_optional and principal.tenant is None):
        assert isinstance(decision.tenant, str) and decision.tenant
    if principal.tenant is not None:
        assert decision.tenant == principal.tenant
    if decision.tenant is not None:
        assert _tenants_named(operation, decision, tenant_field) == {decision.tenant}
    if op.tenant_rule == "filter":
        tree = parse_filter(decision.args.get(op.filter_arg))
        for other in TENANTS + ["", "zz"]:
            if other != decision.tenant:
                for lang in ("en", 3, None):
                    assert not matches(tree, {tenant_field: other, "lang": lang, "org": other})
    return decision


@settings(max_examples=2000, deadline=None)
@given(call=calls())
def test_every_decision_keeps_the_keys_bounds(call: tuple[Principal, str, dict[str, Any]]) -> None:
    _check_bounds(*call)


@settings(max_examples=2000, deadline=None)
@given(
    tenant=st.sampled_from([None, *TENANTS]),
    pin_collection=st.booleans(),
    operation=st.sampled_from([n for n, op in POLICY.operations.items() if op.tenant_rule != "none"]),
    collection=st.sampled_from(["shared", "wiki"]),
    args=arguments,
)
def test_calls_in_shared_collections_carry_one_tenant(
    tenant: str | None, pin_collection: bool, operation: str, collection: str, args: dict[str, Any]
) -> None:
    principal = Principal("k", frozenset({"*:*"}), collection if pin_collection else None, tenant)
    decision = _check_bounds(principal, operation, {**args, "collection": collection})
    assert decision.allowed or decision.code != "permission_denied" or tenant is not None


@settings(max_examples=600, deadline=None)
@given(
    principal=principals.filter(lambda p: p.pinned),
    operation=st.sampled_from([n for n, op in POLICY.operations.items() if op.collection_arg]),
    args=arguments,
    name=st.sampled_from(["other", "shared", "wiki", "plain"]),
)
def test_a_pinned_key_learns_nothing_about_collections_it_cannot_use(
    principal: Principal, operation: str, args: dict[str, Any], name: str
) -> None:
    args = {**args, "collection": name}
    if principal.collection is not None:
        if name == principal.collection:
            return
        variants = [(False, None), (True, None), (True, "tenant_id")]
    else:
        variants = [(False, None), (True, None)]
    seen = {
        (d.allowed, d.code, d.reason, d.collection)
        for d in (evaluate(POLICY, principal, operation, args, _facts(name, e, tf)) for e, tf in variants)
    }
    assert len(seen) == 1
    (allowed, _, _, _) = seen.pop()
    assert not allowed


EXPIRIES = [datetime(2030, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC), datetime(2032, 1, 1, tzinfo=UTC)]
creators = st.builds(
    Principal,
    key_id=st.just("creator"),
    scopes=st.frozensets(SCOPES, max_size=6),
    collection=st.sampled_from([None, None, *NAMES]),
    tenant=st.sampled_from([None, None, *TENANTS]),
    expires_at=st.sampled_from([None, *EXPIRIES]),
)
probes = st.lists(st.tuples(st.sampled_from(sorted(POLICY.operations)), arguments), min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(
    creator=creators,
    scopes=st.lists(SCOPES, max_size=5),
    collection=st.sampled_from([None, *NAMES]),
    tenant=st.sampled_from([None, *TENANTS]),
    expires_at=st.sampled_from([None, *EXPIRIES]),
    calls=probes,
)
def test_every_granted_key_is_within_its_creator_in_all_four_dimensions(
    creator: Principal,
    scopes: list[str],
    collection: str | None,
    tenant: str | None,
    expires_at: datetime | None,
    calls: list[tuple[str, dict[str, Any]]],
) -> None:
    decision = check_key_grant(creator, scopes, collection, tenant, expires_at, _facts(collection or creator.collection))
    if not decision.allowed:
        assert decision.code == "permission_denied"
        return
    child = Principal("child", frozenset(decision.args["scopes"]), decision.collection, decision.tenant, expires_at=decision.args["expires_at"])
    assert (child.collection, child.tenant) == (collection or creator.collection, tenant or creator.tenant)
    # scopes: every concrete scope the child holds, the creator holds
    assert all(holds(creator.scopes, c) for c in CONCRETE if holds(child.scopes, c))
    # expiry: never later than the creator's, and never none when the creator has one
    if creator.expires_at is not None:
        assert child.expires_at is not None and child.expires_at <= creator.expires_at
    # pins, as the engine evaluates them: whatever the child may do, the creator may do on the same collection and tenant
    for operation, args in calls:
        done = _decide(child, operation, args)
        if done.allowed:
            same = _decide(creator, operation, dict(done.args))
            assert same.allowed, same.reason
            assert (same.collection, same.tenant) == (done.collection, done.tenant)


@settings(max_examples=1000, deadline=None)
@given(outer=creators, inner=creators)
def test_a_key_reaches_exactly_the_keys_within_its_reach(outer: Principal, inner: Principal) -> None:
    """The keys a key may list and revoke (reach_gap is None) are exactly the keys the stated rule allows."""
    gap = reach_gap(outer, inner, _facts(inner.collection))
    assert (gap is None) == within_as_stated(outer, inner, {n for n, f in WORLD.items() if f}), gap
    if gap is None:
        for operation, args in [("query", {"collection": n, "query": "q"}) for n in NAMES]:
            done = _decide(inner, operation, args)
            if done.allowed:
                assert _decide(outer, operation, dict(done.args)).allowed
