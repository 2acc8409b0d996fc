"""Cost of one policy decision (evaluate) over a realistic mix of calls, built-in policy, no server.

Usage: python benchmarks/policy_decision.py [--rounds N]
Prints JSON: median and p95 microseconds per evaluate() for each kind of call and for the whole mix
(the target is a median of 50 µs or less).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Mapping
from typing import Any

from bigrag_mcp.policy import CollectionFacts, Policy, Principal, evaluate, load_policy

SHARED = CollectionFacts("docs", True, "tenant_id")
PLAIN = CollectionFacts("tenant_acme", True, None)
APP = Principal("key_app", frozenset({"query:read", "chat:write", "document:upload"}), "docs", "acme")
BACKEND = Principal("key_backend", frozenset({"query:read", "document:*", "vector:write"}))
ADMIN = Principal("key_admin", frozenset({"*:*"}))
PINNED_A = Principal("key_a", frozenset({"query:read", "document:read"}), "tenant_acme")
FILTER = {"$and": [{"lang": {"$in": ["en", "de"]}}, {"year": {"$gte": 2020}}], "kind": "faq"}

# (name, weight, principal, tool, args, facts): weights approximate a SaaS workload, mostly retrieval.
MIX: list[tuple[str, int, Principal, str, Mapping[str, Any], CollectionFacts | None]] = [
    (
        "query_pinned_tenant_fill",
        30,
        APP,
        "query",
        {"collection": "docs", "query": "refund", "filters": FILTER},
        SHARED,
    ),
    (
        "query_unpinned_tenant",
        20,
        BACKEND,
        "query",
        {"collection": "docs", "query": "refund", "filters": {"tenant_id": "acme", "lang": "en"}},
        SHARED,
    ),
    ("chat_pinned_tenant", 10, APP, "chat", {"collection": "docs", "message": "hi"}, SHARED),
    ("query_collection_pin", 10, PINNED_A, "query", {"collection": "tenant_acme", "query": "refund"}, PLAIN),
    (
        "upload_pinned_tenant",
        10,
        APP,
        "documents_upload",
        {"collection": "docs", "text": "x" * 2000, "metadata": {"lang": "en"}},
        SHARED,
    ),
    (
        "vectors_upsert_100",
        5,
        BACKEND,
        "vectors_upsert",
        {
            "collection": "docs",
            "vectors": [{"id": str(i), "vector": [0.0] * 8, "metadata": {"tenant_id": "acme"}} for i in range(100)],
        },
        SHARED,
    ),
    (
        "documents_get",
        5,
        BACKEND,
        "documents_get",
        {"collection": "docs", "document_id": "d1", "tenant": "acme"},
        SHARED,
    ),
    ("denied_other_collection", 5, PINNED_A, "query", {"collection": "tenant_globex", "query": "x"}, PLAIN),
    ("denied_conflicting_tenant", 3, APP, "query", {"collection": "docs", "filters": {"tenant_id": "globex"}}, SHARED),
    ("collections_list_admin", 2, ADMIN, "collections_list", {}, None),
]


def _facts(facts: CollectionFacts | None, args: Mapping[str, Any]) -> CollectionFacts | None:
    """Facts as the server would load them: about the collection the call names."""
    if facts is None or "collection" not in args:
        return facts
    return CollectionFacts(args["collection"], facts.exists, facts.tenant_field)


def _time_one(
    policy: Policy, principal: Principal, tool: str, args: Mapping[str, Any], facts: CollectionFacts | None
) -> float:
    start = time.perf_counter_ns()
    evaluate(policy, principal, tool, args, facts)
    return (time.perf_counter_ns() - start) / 1000.0


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median_us": round(statistics.median(ordered), 2),
        "p95_us": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "calls": len(ordered),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500, help="rounds of the weighted mix")
    rounds = parser.parse_args().rounds
    policy = load_policy()  # parsed once, as the server does at start
    by_kind: dict[str, list[float]] = {}
    everything: list[float] = []
    for _ in range(rounds):
        for name, weight, principal, tool, args, facts in MIX:
            for _ in range(weight):
                micros = _time_one(policy, principal, tool, args, _facts(facts, args))
                by_kind.setdefault(name, []).append(micros)
                everything.append(micros)
    result = {
        "mix": _summary(everything),
        "target_median_us": 50,
        "by_kind": {name: _summary(samples) for name, samples in by_kind.items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
