"""`bigrag-mcp keys` and `bigrag-mcp policy`: mint, list and revoke keys; check and explain policies."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bigrag_mcp.cli import UsageError, json_arg, when, with_runtime
from bigrag_mcp.errors import NotFound
from bigrag_mcp.policy import CollectionFacts, PolicyError, evaluate, load_policy, target_collection
from bigrag_mcp.services import admin
from bigrag_mcp.services.collections import find
from bigrag_mcp.services.keys import get_key
from bigrag_mcp.services.runtime import Runtime

ADMIN_SCOPES = ["*:*"]


async def keys_cmd(rt: Runtime, a: argparse.Namespace) -> Any:
    if a.action == "list":
        return await admin.keys_visible(rt)
    if a.action == "revoke":
        if not a.key_id:
            raise UsageError("keys revoke needs the id of the key to revoke (see `bigrag-mcp keys list`)")
        return await admin.revoke(rt, a.key_id)
    if not (a.admin or a.role or a.scope):
        raise UsageError("a key needs something to do: give --admin, --role ROLE or --scope RESOURCE:ACTION")
    scopes = list(ADMIN_SCOPES if a.admin else [])
    if a.role:
        scopes += rt.policy.role_scopes(a.role)
    scopes += a.scope or []
    info, secret = await admin.mint_key(
        rt, name=a.name or ("admin" if a.admin else "key"), scopes=scopes, collection=a.collection, tenant=a.tenant,
        expires_at=a.expires, role=a.role,
    )
    print("the secret is shown this once; store it now", file=sys.stderr)
    return {"key": info.model_dump(mode="json"), "secret": secret}


async def explain_cmd(rt: Runtime, a: argparse.Namespace) -> Any:
    policy = load_policy(a.policy) if a.policy else rt.policy
    principal = (await get_key(rt.db, a.key_id)).principal()
    name = target_collection(policy, principal, a.tool, a.args or {})
    facts = None
    if name is not None:
        async with rt.db.session() as session:
            try:
                found = await find(session, name)
                facts = CollectionFacts(name, True, found.tenant_field)
            except NotFound:
                facts = CollectionFacts(name, False, None)
    decision = evaluate(policy, principal, a.tool, a.args or {}, facts)
    limits = rt.limits if a.policy is None else rt.limits.with_rules(policy.limits)
    counted = await limits.preview(principal, a.tool, decision.args, decision.collection, decision.tenant) if decision.allowed else []
    return {**decision.to_dict(), "limits": counted}


def check_cmd(a: argparse.Namespace) -> int:
    try:
        policy = load_policy(a.file)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"ok": True, "operations": len(policy.operations), "roles": sorted(policy.roles)}, indent=2))
    return 0


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("keys", help="create, list or revoke API keys")
    p.add_argument("action", choices=("create", "list", "revoke"), help="what to do")
    p.add_argument("key_id", nargs="?", help="the key to revoke")
    p.add_argument("--name", help="a label for the key (default: admin or key)")
    p.add_argument("--admin", action="store_true", help="all scopes (bootstraps the first key of a data folder)")
    p.add_argument("--role", help="a role of the policy, e.g. tenant-app, read-only, ingest-only")
    p.add_argument("--scope", action="append", help="a resource:action scope (repeatable)")
    p.add_argument("--collection", help="pin the key to a collection")
    p.add_argument("--tenant", help="pin the key to a tenant")
    p.add_argument("--expires", type=when, help="when the key stops working: 30m, 12h, 90d, 2w or an ISO-8601 time (default: never)")
    p.set_defaults(handler=with_runtime(keys_cmd))

    p = sub.add_parser("policy", help="check a policy file, or explain a decision")
    psub = p.add_subparsers(dest="policy_command", required=True)
    c = psub.add_parser("check", help="validate a policy file")
    c.add_argument("file", type=Path, help="the policy TOML file")
    c.set_defaults(handler=check_cmd)
    e = psub.add_parser("explain", help="print the decision for a key, a tool and arguments, and why")
    e.add_argument("--key-id", required=True, help="the key whose call to explain")
    e.add_argument("--tool", required=True, help="the tool name, e.g. query")
    e.add_argument("--args", type=json_arg, default={}, help="the tool's arguments as a JSON object")
    e.add_argument("--policy", type=Path, help="a policy file (default: BIGRAG_POLICY_FILE or the built-in)")
    e.set_defaults(handler=with_runtime(explain_cmd))


