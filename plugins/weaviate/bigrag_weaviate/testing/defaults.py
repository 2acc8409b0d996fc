"""The defaults a Weaviate server fills into a class definition before it answers `GET /v1/schema/<Class>`."""

from __future__ import annotations

import copy
from typing import Any

HNSW_DEFAULTS: dict[str, Any] = {
    "skip": False,
    "cleanupIntervalSeconds": 300,
    "maxConnections": 32,
    "efConstruction": 128,
    "ef": -1,
    "dynamicEfMin": 100,
    "dynamicEfMax": 500,
    "dynamicEfFactor": 8,
    "vectorCacheMaxObjects": 1000000000000,
    "flatSearchCutoff": 40000,
    "distance": "cosine",
    "pq": {"enabled": False},
    "bq": {"enabled": False},
    "sq": {"enabled": False},
    "filterStrategy": "sweeping",
    "multivector": {"enabled": False, "aggregation": "maxSim"},
}

INVERTED_DEFAULTS: dict[str, Any] = {
    "bm25": {"b": 0.75, "k1": 1.2},
    "cleanupIntervalSeconds": 60,
    "stopwords": {"preset": "en", "additions": None, "removals": None},
    "indexNullState": False,
    "indexPropertyLength": False,
    "indexTimestamps": False,
}


def _property(prop: dict[str, Any]) -> dict[str, Any]:
    out = dict(prop)
    text = out["dataType"][0] in ("text", "text[]")
    out.setdefault("indexFilterable", True)
    out.setdefault("indexSearchable", text)
    out.setdefault("indexRangeFilters", False)
    if text:
        out.setdefault("tokenization", "word")
    return out


def complete_class(body: dict[str, Any]) -> dict[str, Any]:
    """A copy of the posted class with the server-side defaults filled in."""
    out = copy.deepcopy(body)
    out.setdefault("description", "")
    out["properties"] = [_property(p) for p in out.get("properties") or []]
    out["invertedIndexConfig"] = {**INVERTED_DEFAULTS, **(out.get("invertedIndexConfig") or {})}
    mt = {"enabled": False, "autoTenantCreation": False, "autoTenantActivation": False}
    out["multiTenancyConfig"] = {**mt, **(out.get("multiTenancyConfig") or {})}
    out.setdefault("replicationConfig", {"factor": 1, "asyncEnabled": False, "deletionStrategy": "NoAutomatedResolution"})
    out.setdefault(
        "shardingConfig",
        {
            "virtualPerPhysical": 128,
            "desiredCount": 1,
            "actualCount": 1,
            "desiredVirtualCount": 128,
            "actualVirtualCount": 128,
            "key": "_id",
            "strategy": "hash",
            "function": "murmur3",
        },
    )
    for named in (out.get("vectorConfig") or {}).values():
        named.setdefault("vectorizer", {"none": {}})
        named.setdefault("vectorIndexType", "hnsw")
        named["vectorIndexConfig"] = {**HNSW_DEFAULTS, **(named.get("vectorIndexConfig") or {})}
    if "vectorConfig" not in out:
        out.setdefault("vectorizer", "none")
        out.setdefault("vectorIndexType", "hnsw")
        out["vectorIndexConfig"] = {**HNSW_DEFAULTS, **(out.get("vectorIndexConfig") or {})}
    return out
