"""The fake server's data: classes, tenants and objects, and the filter and ranking rules it applies."""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bigrag_weaviate.testing.defaults import complete_class

ACTIVE, INACTIVE, OFFLOADED = "ACTIVE", "INACTIVE", "OFFLOADED"
STATUS_ALIASES = {"HOT": ACTIVE, "COLD": INACTIVE, "FROZEN": OFFLOADED}
TENANT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
WORD = re.compile(r"[A-Za-z0-9]+")


class FakeError(Exception):
    """A request the fake refuses the way Weaviate does: `status` is the HTTP code, `message` Weaviate's text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class StoredObject:
    uuid: str
    properties: dict[str, Any]
    vector: list[float]


@dataclass
class TenantShard:
    status: str = ACTIVE
    objects: dict[str, StoredObject] = field(default_factory=dict)


@dataclass
class StoredClass:
    config: dict[str, Any]
    tenants: dict[str, TenantShard] = field(default_factory=dict)

    @property
    def properties(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in self.config["properties"]}

    @property
    def multi_tenant(self) -> bool:
        return bool(self.config["multiTenancyConfig"]["enabled"])

    @property
    def auto_create(self) -> bool:
        return bool(self.config["multiTenancyConfig"].get("autoTenantCreation"))


def tokens(text: str) -> list[str]:
    """Weaviate's `word` tokenization: alphanumeric runs, lower-cased."""
    return [t.lower() for t in WORD.findall(text)]


def cosine_distance(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
    if na == 0 or nb == 0:
        return 1.0
    return 1.0 - dot / (na * nb)


@dataclass
class Fault:
    """An injected failure: `key` is "GET /v1/schema/X" for REST or "grpc Search" for gRPC."""

    key: str
    status: int
    times: int
    message: str = "injected failure"


class State:
    """Everything the fake holds, guarded by one lock (the REST and gRPC servers run in threads)."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.classes: dict[str, StoredClass] = {}
        self.lock = threading.RLock()
        self.reject: Callable[[str, dict[str, Any]], str | None] | None = None
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()

    def take_fault(self, call: str) -> Fault | None:
        """Count the call; return (and use up) the first injected fault whose key starts the call's name."""
        with self.lock:
            self.calls[call] += 1
            for fault in self.faults:
                if call.startswith(fault.key) and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    @property
    def supports_not(self) -> bool:
        """`Not` and `ContainsNone` exist from Weaviate 1.33 on."""
        major, minor = (int(x) for x in self.version.split(".")[:2])
        return (major, minor) >= (1, 33)

    # --- schema -----------------------------------------------------------------------------------
    def get_class(self, name: str) -> StoredClass:
        found = self.classes.get(name) or next(
            (c for n, c in self.classes.items() if n.lower() == name.lower()), None
        )
        if found is None:
            raise FakeError(404, f"class {name!r} not found")
        return found

    def create_class(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("class", "")
        if not name or not name[0].isupper():
            raise FakeError(422, f"class name {name!r} must start with an upper-case letter")
        if any(n.lower() == name.lower() for n in self.classes):
            raise FakeError(422, f"class name {name!r} already exists")
        config = complete_class(body)
        self.classes[name] = StoredClass(config)
        return config

    def add_property(self, class_name: str, prop: dict[str, Any]) -> dict[str, Any]:
        cls = self.get_class(class_name)
        if prop["name"] in cls.properties:
            raise FakeError(422, f"property {prop['name']!r} already exists")
        full = complete_class({"class": class_name, "properties": [prop]})["properties"][0]
        cls.config["properties"].append(full)
        return full

    # --- tenants ----------------------------------------------------------------------------------
    def shard(self, cls: StoredClass, tenant: str, *, for_write: bool = False) -> TenantShard:
        """The shard a request addresses, or the error Weaviate answers."""
        if not cls.multi_tenant:
            if tenant:
                raise FakeError(422, f"class {cls.config['class']} has multi-tenancy disabled, but request was with tenant")
            return cls.tenants.setdefault("", TenantShard())
        if not tenant:
            raise FakeError(
                422, f"class {cls.config['class']} has multi-tenancy enabled, but request was without tenant"
            )
        found = cls.tenants.get(tenant)
        if found is None:
            if for_write and cls.auto_create:
                found = cls.tenants[tenant] = TenantShard()
            else:
                raise FakeError(422, f'tenant not found: "{tenant}"')
        if found.status != ACTIVE:
            raise FakeError(422, f'tenant not active: "{tenant}"')
        return found

    def put_tenants(self, class_name: str, items: list[dict[str, Any]], *, create: bool) -> None:
        cls = self.get_class(class_name)
        if not cls.multi_tenant:
            raise FakeError(422, f"multi-tenancy is not enabled for class {class_name!r}")
        for item in items:
            name = item.get("name", "")
            if not TENANT_NAME.match(name):
                raise FakeError(422, f"tenant name {name!r} must match {TENANT_NAME.pattern}")
            status = item.get("activityStatus") or ACTIVE
            status = STATUS_ALIASES.get(status, status)
            if create:
                cls.tenants.setdefault(name, TenantShard(status=status))
            elif name not in cls.tenants:
                raise FakeError(422, f'tenant not found: "{name}"')
            else:
                cls.tenants[name].status = status

    def remove_tenants(self, class_name: str, names: list[str]) -> None:
        cls = self.get_class(class_name)
        for name in names:
            cls.tenants.pop(name, None)

    # --- data -------------------------------------------------------------------------------------
    def put_object(self, cls: StoredClass, tenant: str, obj: StoredObject) -> str | None:
        """Store one object; return Weaviate's per-object error text instead of raising."""
        try:
            shard = self.shard(cls, tenant, for_write=True)
        except FakeError as exc:
            return exc.message
        unknown = sorted(set(obj.properties) - set(cls.properties))
        if unknown:
            return f"no such prop with name '{unknown[0]}' found in class '{cls.config['class']}' in the schema"
        if self.reject is not None and (reason := self.reject(obj.uuid, obj.properties)) is not None:
            return reason
        existing = next(iter(shard.objects.values()), None)
        if existing is not None and len(existing.vector) != len(obj.vector):
            return (
                f"new node has a vector with length {len(obj.vector)}. "
                f"Existing nodes have vectors with length {len(existing.vector)}"
            )
        shard.objects[obj.uuid] = obj
        return None

    def bm25(self, objects: list[StoredObject], query: str, props: Sequence[str]) -> dict[str, float]:
        """Okapi BM25 (k1=1.2, b=0.75) over the word-tokenized properties; only positive scores."""
        terms = tokens(query)
        docs = {o.uuid: [t for p in props for t in tokens(str(o.properties.get(p) or ""))] for o in objects}
        if not docs or not terms:
            return {}
        avg = sum(len(d) for d in docs.values()) / len(docs) or 1.0
        n = len(docs)
        scores: dict[str, float] = {}
        for uid, words in docs.items():
            counts = Counter(words)
            score = 0.0
            for term in set(terms):
                df = sum(1 for d in docs.values() if term in d)
                if not counts[term]:
                    continue
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                tf = counts[term]
                score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(words) / avg))
            if score > 0:
                scores[uid] = score
        return scores
