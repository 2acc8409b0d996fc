"""The policy as data: every case file in policies/tests runs here, plus the loader's error messages."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from bigrag_mcp.policy import (
    OPERATIONS,
    CollectionFacts,
    Decision,
    Policy,
    PolicyError,
    Principal,
    check_key_grant,
    evaluate,
    load_policy,
    parse_policy,
    target_collection,
    visible_tools,
)

POLICIES = Path(__file__).resolve().parent.parent / "policies"
CASE_FILES = sorted((POLICIES / "tests").glob("*.toml"))
EXPECT_KEYS = {"allowed", "code", "reason", "reason_contains", "tenant", "collection", "none", "args", "absent_args"}


def _principal(spec: Mapping[str, Any], key_id: str) -> Principal:
    return Principal(key_id, frozenset(spec["scopes"]), spec.get("collection"), spec.get("tenant"), spec.get("expires_at"))


def _policy(data: Mapping[str, Any], case_file: Path) -> Policy:
    return load_policy((case_file.parent / data["policy"]).resolve() if "policy" in data else None)


def _facts(collections: Mapping[str, Any], name: str | None) -> CollectionFacts | None:
    if name is None:
        return None
    spec = collections.get(name)
    return CollectionFacts(name, spec is not None, (spec or {}).get("tenant_field"))


def _cases(kind: str) -> Iterator[Any]:
    for case_file in CASE_FILES:
        data = tomllib.loads(case_file.read_text(encoding="utf-8"))
        for case in data.get(kind, []):
            yield pytest.param(data, case_file, case, id=f"{case_file.stem}: {case['name']}")


def _check(decision: Decision, expect: Mapping[str, Any]) -> None:
    assert set(expect) <= EXPECT_KEYS, f"unknown expectation keys {set(expect) - EXPECT_KEYS}"
    assert decision.allowed is expect["allowed"], decision.reason
    assert decision.code == expect.get("code"), decision.reason
    assert bool(decision.reason)
    if "reason" in expect:
        assert decision.reason == expect["reason"]
    if "reason_contains" in expect:
        assert expect["reason_contains"] in decision.reason
    for name in ("tenant", "collection"):
        if name in expect:
            assert getattr(decision, name) == expect[name]
    for name in expect.get("none", []):
        assert getattr(decision, name) is None, f"{name} should be None"
    for name, value in expect.get("args", {}).items():
        assert decision.args[name] == value, name
    for name in expect.get("absent_args", []):
        assert name not in decision.args
    if not decision.allowed:
        assert decision.args == {} and decision.tenant is None
        error = decision.error()
        assert error is not None and error.code == decision.code and error.message == decision.reason


@pytest.mark.parametrize(("data", "case_file", "case"), list(_cases("cases")))
def test_case(data: Mapping[str, Any], case_file: Path, case: Mapping[str, Any]) -> None:
    policy = _policy(data, case_file)
    principal = _principal(data["keys"][case["key"]], case["key"])
    args = case.get("args", {})
    target = target_collection(policy, principal, case["tool"], args)
    decision = evaluate(policy, principal, case["tool"], args, _facts(data.get("collections", {}), target))
    assert decision.operation == case["tool"] and decision.key_id == case["key"]
    _check(decision, case["expect"])


@pytest.mark.parametrize(("data", "case_file", "case"), list(_cases("grants")))
def test_grant(data: Mapping[str, Any], case_file: Path, case: Mapping[str, Any]) -> None:
    creator = _principal(data["keys"][case["key"]], case["key"])
    target = case.get("collection", creator.collection)
    facts = _facts(data.get("collections", {}), target)
    decision = check_key_grant(creator, case["scopes"], case.get("collection"), case.get("tenant"), case.get("expires_at"), facts)
    assert decision.operation == "api_keys_create"
    _check(decision, case["expect"])
    if decision.allowed:
        expected = {"scopes": case["scopes"], "collection": decision.collection, "tenant": decision.tenant}
        assert decision.args == {**expected, "expires_at": case.get("expires_at", creator.expires_at)}


@pytest.mark.parametrize(("data", "case_file", "case"), list(_cases("visible")))
def test_visible_tools(data: Mapping[str, Any], case_file: Path, case: Mapping[str, Any]) -> None:
    policy = _policy(data, case_file)
    assert visible_tools(policy, _principal(data["keys"][case["key"]], case["key"])) == case["tools"]


def test_case_files_cover_every_tool_and_every_outcome() -> None:
    tools: set[str] = set()
    codes: set[str | None] = set()
    for case_file in CASE_FILES:
        for case in tomllib.loads(case_file.read_text(encoding="utf-8")).get("cases", []):
            tools.add(case["tool"])
            codes.add(case["expect"].get("code"))
    uncovered = OPERATIONS - tools
    assert not uncovered, f"no case exercises {sorted(uncovered)}"
    assert {None, "permission_denied", "tenant_required", "invalid_argument"} <= codes


# --- loading ------------------------------------------------------------------------------------------


def test_default_policy_guards_every_tool_and_has_the_roles() -> None:
    policy = load_policy()
    assert set(policy.operations) == OPERATIONS
    assert {"admin", "tenant-app", "read-only", "ingest-only"} <= set(policy.roles)
    assert policy.role_scopes("tenant-app") == ["query:read", "chat:write", "document:upload"]
    assert load_policy() is policy


def test_shipped_example_policy_loads() -> None:
    policy = load_policy(POLICIES / "saas-example.toml")
    assert "support" in policy.roles
    assert "collections_delete" not in policy.operations


def test_unknown_role_names_the_roles() -> None:
    with pytest.raises(Exception, match="unknown role 'root'; roles: admin"):
        load_policy().role_scopes("root")


GOOD_HEAD = '[operations.query]\nscope = "query:read"\ncollection_arg = "collection"\ntenant_rule = "filter"\n\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GOOD_HEAD + '[operations.query_everything]\nscope = "query:read"\n',
            r"line 6: operations\.query_everything: unknown tool 'query_everything'",
        ),
        (
            GOOD_HEAD + '[operations.chat]\ncollection_arg = "collection"\nscope = "chat:shout"\n',
            r"line 8: operations\.chat\.scope: unknown scope 'chat:shout'",
        ),
        (GOOD_HEAD + '[operations.chat]\nscope = "chatter:write"\n', r"line 7: .*resource must be \* or one of"),
        (
            GOOD_HEAD
            + '[operations.chat]\nscope = "chat:write"\ncollection_arg = "collection"\ntenant_rule = "header"\n',
            r"line 9: operations\.chat\.tenant_rule: Input should be 'none'",
        ),
        (
            GOOD_HEAD + '[operations.chat]\nscopes = "chat:write"\n',
            r"line 6: operations\.chat\.scope: Field required.*line 7: operations\.chat\.scopes: Extra inputs",
        ),
        (
            GOOD_HEAD + '[operations.chat]\nscope = "chat:write"\ntenant_rule = "filter"\n',
            r"line 6: operations\.chat: tenant_rule 'filter' needs collection_arg",
        ),
        (
            GOOD_HEAD + '[roles."tenant-app"]\nscopes = [\n  "query:read",\n  "chat:everything",\n]\n',
            r"line 7: roles\.tenant-app\.scopes\.1: unknown scope 'chat:everything'",
        ),
        (
            GOOD_HEAD + "[roles.reader]\nscopes = 'query:read'\n",
            r"line 7: roles\.reader\.scopes: Input should be a valid list",
        ),
        (GOOD_HEAD + '[operations.chat]\nscope = "chat:write\n', r"not valid TOML: .*line 7"),
        ('[operation.query]\nscope = "query:read"\n', r"line 1: operation: Extra inputs"),
    ],
)
def test_policy_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message) as caught:
        parse_policy(text, "p.toml")
    assert str(caught.value).startswith("p.toml")


def test_policy_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[operations.queries]\nscope = "query:read"\n', encoding="utf-8")
    with pytest.raises(PolicyError, match=rf"{bad}, line 1: operations\.queries: unknown tool"):
        load_policy(bad)
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(tmp_path / "missing.toml")


def test_a_tool_left_out_of_a_policy_is_refused_to_everyone() -> None:
    policy = parse_policy(GOOD_HEAD)
    admin = Principal("k", frozenset({"*:*"}))
    assert visible_tools(policy, admin) == ["query"]
    decision = evaluate(policy, admin, "chat", {"collection": "c", "message": "m"}, CollectionFacts("c", True))
    assert not decision.allowed and decision.code == "permission_denied"


def test_evaluate_needs_the_facts_of_the_collection_it_decides_on() -> None:
    admin = Principal("k", frozenset({"*:*"}))
    with pytest.raises(ValueError, match="CollectionFacts of 'docs'"):
        evaluate(load_policy(), admin, "query", {"collection": "docs"}, CollectionFacts("other", True))


def test_evaluate_leaves_the_callers_arguments_alone() -> None:
    args = {"collection": "docs", "query": "q", "filters": {"lang": "en"}}
    acme = Principal("k", frozenset({"query:read"}), "docs", "acme")
    decision = evaluate(load_policy(), acme, "query", args, CollectionFacts("docs", True, "tenant_id"))
    assert decision.args["filters"] == {"lang": "en", "tenant_id": "acme"}
    assert args == {"collection": "docs", "query": "q", "filters": {"lang": "en"}}


def test_decision_to_dict_and_raise() -> None:
    acme = Principal("k", frozenset(), "docs")
    decision = evaluate(load_policy(), acme, "collections_list", {})
    assert decision.to_dict() == {
        "operation": "collections_list",
        "key_id": "k",
        "outcome": "denied",
        "code": "permission_denied",
        "reason": "This API key lacks the scope 'collection:read' that collections_list needs.",
        "collection": None,
        "tenant": None,
        "args": {},
    }
    with pytest.raises(Exception, match="permission_denied: This API key lacks"):
        decision.raise_if_denied()
