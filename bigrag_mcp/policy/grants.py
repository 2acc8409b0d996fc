"""Key grants: a key mints, lists and revokes only keys within its own reach, as the engine evaluates reach.

A key's reach has four dimensions: its scopes, its collection pin, its tenant pin and its expiry. Another key is
within it when its scopes are held (wildcard-aware), its pins are at least as narrow (the same collection and the
same tenant wherever the outer key is pinned), every collection slice it can touch (`reach_in`, the rule the
engine guards calls with) is covered, and, for minting, it expires no later.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bigrag_mcp.policy.engine import CollectionFacts, Decision, DenyCode, Principal, reach_in
from bigrag_mcp.policy.model import holds, scope_error

KEY_GRANT_OPERATION = "api_keys_create"
# Probes for a key with no collection pin: it reaches every collection, so compare on one of each kind.
# The name cannot be a collection's (names start with a letter or digit), so it matches no pin.
_ANY_COLLECTION = (CollectionFacts("*any*", True, None), CollectionFacts("*any*", True, "tenant"))


def reach_gap(outer: Principal, inner: Principal, facts: CollectionFacts | None, *, minting: bool = False) -> str | None:
    """Why `inner` reaches beyond `outer` in scopes, pins or collections (a sentence), or None when it does not.

    `facts` describe `inner.collection` (needed when it is set). Expiry is not compared here: see `check_key_grant`.
    """
    beyond = [s for s in sorted(inner.scopes) if not holds(outer.scopes, s)]
    if beyond:
        what = "grant scopes" if minting else "manage keys with scopes"
        return f"This API key cannot {what} it does not hold: {', '.join(beyond)}."
    verb = "mint" if minting else "manage"
    if outer.collection is not None and inner.collection != outer.collection:
        return f"This API key is pinned to collection {outer.collection!r} and can only {verb} keys pinned to it."
    if outer.tenant is not None and inner.tenant != outer.tenant:
        return f"This API key is pinned to tenant {outer.tenant!r} and can only {verb} keys pinned to it."
    if inner.collection is not None:
        if facts is None or facts.name != inner.collection:
            raise ValueError(f"reach_gap() needs the CollectionFacts of {inner.collection!r}")
        probes: Sequence[CollectionFacts] = (facts,)
    else:
        probes = _ANY_COLLECTION
    for probe in probes:
        theirs = reach_in(inner, probe)
        mine = reach_in(outer, probe)
        if theirs is not None and (mine is None or not mine.covers(theirs)):
            return (
                f"This API key is limited to tenant {outer.tenant!r} in collections shared by tenants and cannot "
                f"{verb} a key that reaches all of collection {probe.name!r}."
            )
    return None


def check_key_grant(
    creator: Principal,
    scopes: Sequence[str],
    collection: str | None,
    tenant: str | None,
    expires_at: datetime | None = None,
    facts: CollectionFacts | None = None,
) -> Decision:
    """May `creator` mint a key with these scopes, pins and expiry? Omitted pins and expiry are the creator's.

    `facts` describe the new key's collection (the creator's pin when `collection` is omitted).
    """

    def deny(code: DenyCode, reason: str) -> Decision:
        return Decision(KEY_GRANT_OPERATION, creator.key_id, False, reason, code, collection=collection)

    for scope in scopes:
        problem = scope_error(scope)
        if problem:
            return deny("invalid_argument", problem[0].upper() + problem[1:] + ".")
    for label, value in (("collection", collection), ("tenant", tenant)):
        if value is not None and (not isinstance(value, str) or not value):
            return deny("invalid_argument", f"The {label} pin must be a non-empty string.")
    scopes = list(dict.fromkeys(scopes))
    collection = creator.collection if collection is None else collection
    tenant = creator.tenant if tenant is None else tenant
    if creator.expires_at is not None:
        if expires_at is None:
            expires_at = creator.expires_at
        elif expires_at > creator.expires_at:
            return deny(
                "permission_denied",
                f"This API key expires at {creator.expires_at.isoformat()} and cannot mint a key that outlives it.",
            )
    child = Principal("(new key)", frozenset(scopes), collection, tenant, expires_at=expires_at)
    gap = reach_gap(creator, child, facts, minting=True)
    if gap is not None:
        return deny("permission_denied", gap)
    return Decision(
        KEY_GRANT_OPERATION,
        creator.key_id,
        True,
        "Allowed: the new key's scopes, pins and expiry are within the creator's.",
        collection=collection,
        tenant=tenant,
        args={"scopes": scopes, "collection": collection, "tenant": tenant, "expires_at": expires_at},
    )
