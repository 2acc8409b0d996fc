"""Operator commands: usage, audit, billing, webhooks, tenant offboarding and reindexing."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bigrag_mcp.cli import Outcome, UsageError, confirm, when, with_runtime
from bigrag_mcp.services import admin
from bigrag_mcp.services.audit import list_audit, verify_chain
from bigrag_mcp.services.background import relay_for
from bigrag_mcp.services.collections import list_all, load
from bigrag_mcp.services.fences import list_fences, readmit
from bigrag_mcp.services.keys import get_key
from bigrag_mcp.services.offboarding import offboard
from bigrag_mcp.services.runtime import Runtime


async def usage_cmd(rt: Runtime, a: argparse.Namespace) -> Any:
    return await admin.usage(rt, window_days=a.window_days, collection=a.collection, tenant=a.tenant)


async def limits_cmd(rt: Runtime, a: argparse.Namespace) -> Any:
    principal = (await get_key(rt.db, a.key_id)).principal() if a.key_id else None
    return await rt.limits.status(principal, collection=a.collection, tenant=a.tenant, key_id=a.key_id)


async def audit_cmd(rt: Runtime, a: argparse.Namespace) -> Any:
    if a.action == "verify":
        result = await verify_chain(rt.db)
        if not result.ok:
            print(f"audit chain broken at row {result.bad_row_id}: {result.problem} — {result.detail}", file=sys.stderr)
        return Outcome(result, 0 if result.ok else 3)
    return await list_audit(
        rt.db,
        actor_key_id=a.actor,
        action=a.action_name,
        resource_type=a.resource_type,
        resource_id=a.resource_id,
        since=a.since,
        until=a.until,
        limit=a.limit,
        cursor=a.cursor,
    )


async def billing_cmd(rt: Runtime, a: argparse.Namespace) -> Any:
    relay = relay_for(rt)
    try:
        if a.action == "status":
            return await relay.status()
        if a.action == "replay":
            return {"requeued": await relay.replay(a.ids or None, parked=not a.ids)}
        total: dict[str, int] = {}
        while True:  # until nothing is due, or a pass only met failing receivers (they are retried later)
            stats = asdict(await relay.run_once())
            for key, value in stats.items():
                total[key] = total.get(key, 0) + value
            if not stats["claimed"] or stats["sent"] + stats["duplicate"] + stats["parked"] == 0:
                return total
    finally:
        await relay.close()


async def webhooks_cmd(rt: Runtime, a: argparse.Namespace) -> Any:
    if a.action == "list":
        return [h.as_dict() for h in await admin.webhooks(rt)]
    if a.action == "delete":
        return (await admin.remove_webhook(rt, a.target)).as_dict()
    return (await admin.add_webhook(rt, a.target, a.events or ["collection.*", "document.*", "tenant.offboarded"])).as_dict()


async def tenants_cmd(rt: Runtime, a: argparse.Namespace) -> Any:
    if a.action == "fences":
        return await list_fences(rt)
    if a.collection is None or a.tenant is None:
        raise UsageError(f"tenants {a.action} needs COLLECTION and TENANT")
    if a.action == "readmit":
        return await readmit(rt, a.collection, a.tenant)
    confirm(f"Remove every trace of tenant {a.tenant!r} from {a.collection!r}, revoke its keys and fence its writes?", a)
    return await offboard(rt, a.collection, a.tenant)


async def reindex_cmd(rt: Runtime, a: argparse.Namespace) -> Any:
    from bigrag_mcp.services.reindex import reindex_collection  # imported here: only this command needs it

    target = rt.registry.vector_backend(a.to)()
    try:
        names = a.collection or [c.name for c in await list_all(rt)]
        done = {}
        for name in names:
            collection = await load(rt, name)

            def progress(copied: int, total: int, name: str = name) -> None:
                print(f"{name}: {copied}/{total} vectors", file=sys.stderr)

            checkpoint = (a.checkpoint_dir or rt.settings.data_dir) / f"reindex-{a.to}-{collection.name}.json"
            done[name] = await reindex_collection(rt.db, collection.name, target, progress=progress, checkpoint=checkpoint)
        return {"backend": a.to, "reindexed": done}
    finally:
        await target.close()


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("usage", help="usage totals, timeline, by collection and by tenant (JSON)")
    p.add_argument("--window-days", type=int, default=30, help="days of usage to show (1-365)")
    p.add_argument("--collection", help="only this collection")
    p.add_argument("--tenant", help="only this tenant")
    p.set_defaults(handler=with_runtime(usage_cmd))

    p = sub.add_parser("limits", help="the policy's limits: each counter's used, max, remaining and reset time (JSON)")
    p.add_argument("--key-id", help="what this key counts against (a pinned key: only its own counters)")
    p.add_argument("--collection")
    p.add_argument("--tenant")
    p.set_defaults(handler=with_runtime(limits_cmd))

    p = sub.add_parser("audit", help="list audit rows, or verify the hash chain")
    p.add_argument("action", choices=("list", "verify"), help="list rows, or check the whole hash chain")
    p.add_argument("--actor", help="only rows of this key id")
    p.add_argument("--action-name", help="e.g. collection.created")
    p.add_argument("--resource-type", help="e.g. collection, document, api_key")
    p.add_argument("--resource-id", help="only rows about this resource")
    p.add_argument("--since", type=when, help="from this ISO-8601 time")
    p.add_argument("--until", type=when, help="until this ISO-8601 time")
    p.add_argument("--limit", type=int, default=50, help="rows per page")
    p.add_argument("--cursor", help="the next_cursor of the previous page")
    p.set_defaults(handler=with_runtime(audit_cmd))

    p = sub.add_parser("billing", help="send due billing events and webhooks now, show the outbox, or replay parked rows")
    p.add_argument("action", choices=("flush", "status", "replay"), help="what to do")
    p.add_argument("ids", nargs="*", help="outbox row ids to replay (default: every parked row)")
    p.set_defaults(handler=with_runtime(billing_cmd))

    p = sub.add_parser("webhooks", help="create, list or delete webhook subscriptions")
    p.add_argument("action", choices=("create", "list", "delete"), help="what to do")
    p.add_argument("target", nargs="?", help="the URL to create, or the id to delete")
    p.add_argument(
        "--event", dest="events", action="append", help="an event pattern to send (repeatable; default: collection.*, document.*, tenant.offboarded)"
    )
    p.set_defaults(handler=with_runtime(webhooks_cmd))

    p = sub.add_parser("tenants", help="offboard a tenant (and fence its writes), re-admit it, or list the fenced ones")
    p.add_argument("action", choices=("offboard", "readmit", "fences"), help="what to do")
    p.add_argument("collection", nargs="?", help="the tenant's own collection, or the shared collection it is in")
    p.add_argument("tenant", nargs="?", help="the tenant")
    p.add_argument("--yes", action="store_true", help="offboard without asking")
    p.set_defaults(handler=with_runtime(tenants_cmd))

    p = sub.add_parser("reindex", help="rebuild collections' vectors in another backend from the store (resumable)")
    p.add_argument("--to", required=True, help="a registered vector backend, e.g. weaviate")
    p.add_argument("--collection", action="append", help="only these collections (default: all)")
    p.add_argument(
        "--checkpoint-dir", type=Path, help="where progress is kept so an interrupted run resumes (default: the data folder)"
    )
    p.set_defaults(handler=with_runtime(reindex_cmd))
