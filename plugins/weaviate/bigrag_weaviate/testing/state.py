"""The fake server's data: classes, tenants and objects, and the filter and ranking rules it applies."""

from __future__ import annotations

import math
import re
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bigrag_weaviate.testing.defaults import complete_class

ACTIVE, INACTIVE, OFFLOADED = "ACTIVE", "INACTIVE", "OFFLOADED"
ONLOADING, OFFLOADING = "ONLOADING", "OFFLOADING"
STATUS_ALIASES = {"HOT": ACTIVE, "COLD": INACTIVE, "FROZEN": OFFLOADED, "UNFREEZING": ONLOADING, "FREEZING": OFFLOADING}
TENANT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PROPERTY_NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]{0,230}$")  # entities/schema/validation.go PropertyNameRegex
QUERY_MAXIMUM_RESULTS = 10_000  # the server's default for the QUERY_MAXIMUM_RESULTS environment variable
# adapters/repos/db/inverted/stopwords/presets.go, preset "en" (the default of invertedIndexConfig.stopwords)
STOPWORDS_EN = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "will", "with"]
)


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
    ready_at: float = 0.0  # when an ONLOADING tenant becomes ACTIVE, on the fake's clock


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


def is_space(ch: str) -> bool:
    """Go's unicode.IsSpace: the Latin-1 white space and Unicode's space separators."""
    return ch in "\t\n\v\f\r \x85\xa0" or (ch > "\xff" and unicodedata.category(ch) in ("Zs", "Zl", "Zp"))


def field_token(text: str) -> str:
    """Weaviate's `field` tokenization: the whole value, white space trimmed at both ends (may be empty)."""
    start, end = 0, len(text)
    while start < end and is_space(text[start]):
        start += 1
    while end > start and is_space(text[end - 1]):
        end -= 1
    return text[start:end]


def tokens(text: str) -> list[str]:
    """Weaviate's `word` tokenization: runs of Unicode letters and numbers, lower-cased."""
    out: list[str] = []
    word: list[str] = []
    for ch in text + " ":
        if ch.isalpha() or ch.isnumeric():
            word.append(ch)
        elif word:
            out.append("".join(word).lower())
            word = []
    return out


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


@dataclass
class Hook:
    """Something that happens on the server just before it answers a call (another replica's write, say)."""

    key: str
    action: Callable[[], None]
    skip: int = 0
    times: int = 1


class State:
    """Everything the fake holds, guarded by one lock (the REST and gRPC servers run in threads)."""

    def __init__(self, version: str, *, clock: Callable[[], float] = time.monotonic, onload_seconds: float = 0.0) -> None:
        self.version = version
        self.clock = clock
        self.onload_seconds = onload_seconds
        self.query_maximum_results = QUERY_MAXIMUM_RESULTS
        self.hooks: list[Hook] = []
        self.classes: dict[str, StoredClass] = {}
        self.lock = threading.RLock()
        self.reject: Callable[[str, dict[str, Any]], str | None] | None = None
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()

    def take_fault(self, call: str) -> Fault | None:
        """Count the call, run due hooks; return (and use up) the first injected fault whose key starts the name."""
        with self.lock:
            self.calls[call] += 1
            for hook in self.hooks:
                if call.startswith(hook.key) and hook.times > 0:
                    if hook.skip:
                        hook.skip -= 1
                    else:
                        hook.times -= 1
                        hook.action()
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
        self.check_properties(name, [], list(body.get("properties") or []))
        config = complete_class(body)
        self.classes[name] = StoredClass(config)
        return config

    @staticmethod
    def check_properties(class_name: str, existing: list[str], new: list[dict[str, Any]]) -> None:
        """Weaviate's validateProperty: a valid name, not equal to any other one ignoring case."""
        taken = {n.lower() for n in existing}
        for prop in new:
            name = str(prop.get("name", ""))
            if not PROPERTY_NAME.match(name):
                raise FakeError(422, f"'{name}' is not a valid property name. Property names in Weaviate are "
                                     f"restricted to valid GraphQL names, which must be “{PROPERTY_NAME.pattern}”.")
            if name.lower() in taken:
                raise FakeError(
                    422, f'class "{class_name}": conflict for property "{name}": already in use or provided multiple times'
                )
            taken.add(name.lower())

    def add_property(self, class_name: str, prop: dict[str, Any]) -> dict[str, Any]:
        cls = self.get_class(class_name)
        self.check_properties(cls.config["class"], list(cls.properties), [prop])
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
        if self.status(found) != ACTIVE:
            raise FakeError(422, f"tenant not active: '{tenant}'")
        return found

    def status(self, shard: TenantShard) -> str:
        """The tenant's status now: an ONLOADING tenant turns ACTIVE once its onloading time has passed."""
        if shard.status == ONLOADING and self.clock() >= shard.ready_at:
            shard.status = ACTIVE
        return shard.status

    def _change_status(self, name: str, shard: TenantShard, wanted: str) -> None:
        """cluster/schema/meta_class.go UpdateTenants: offloaded tenants onload asynchronously (UNFREEZING)."""
        current = self.status(shard)
        if current == wanted:
            return
        if current == OFFLOADING:
            raise FakeError(422, f'tenant "{name}" is currently being frozen, cannot change status to {wanted}')
        if current == ONLOADING and wanted == ACTIVE:
            return  # the onloading under way already targets ACTIVE
        if current == ONLOADING:
            raise FakeError(422, f'tenant "{name}" is currently being unfrozen to {ACTIVE}, cannot change status to {wanted}')
        if current == OFFLOADED and wanted == ACTIVE and self.onload_seconds > 0:
            shard.status, shard.ready_at = ONLOADING, self.clock() + self.onload_seconds
            return
        shard.status = wanted

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
                self._change_status(name, cls.tenants[name], status)

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
        """Okapi BM25 (k1=1.2, b=0.75) over the word-tokenized properties; only positive scores.

        Documents keep every token (stop words count towards their length); the query drops the class's stop
        words (the default preset "en"), as bm25_searcher.go does for `word` tokenization.
        """
        terms = [t for t in tokens(query) if t not in STOPWORDS_EN]
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
