"""The policy's data model: scopes, per-operation rules and roles, validated by pydantic."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from bigrag_mcp.errors import InvalidArgument
from bigrag_mcp.limits.model import EACH, Limit

RESOURCES: frozenset[str] = frozenset(
    {"collection", "document", "query", "chat", "vector", "api_key", "audit", "usage", "webhook"}
)
ACTIONS: frozenset[str] = frozenset({"read", "write", "upload", "delete", "admin"})
WILDCARD = "*"

# The tools the server exposes; a policy may name only these (an operation it leaves out is refused to every key).
OPERATIONS: frozenset[str] = frozenset(
    {
        "collections_create",
        "collections_list",
        "collections_get",
        "collections_update",
        "collections_delete",
        "documents_upload",
        "documents_list",
        "documents_get",
        "documents_delete",
        "documents_batch_delete",
        "vectors_upsert",
        "vectors_delete",
        "query",
        "query_multi",
        "chat",
        "usage_get",
        "audit_list",
        "api_keys_create",
        "api_keys_list",
        "api_keys_revoke",
        "webhooks_create",
        "webhooks_list",
        "webhooks_delete",
        "tenants_offboard",
    }
)

TenantRule = Literal["none", "filter", "metadata", "argument"]
AltersCollection = Literal["never", "always", "without_tenant_field"]


def scope_error(scope: object) -> str | None:
    """Why `scope` is not a valid `resource:action` scope, or None when it is."""
    if not isinstance(scope, str):
        return f"a scope must be a string, not {type(scope).__name__}"
    resource, sep, action = scope.partition(":")
    if not sep:
        return f"unknown scope {scope!r}: write it as resource:action"
    if resource != WILDCARD and resource not in RESOURCES:
        return f"unknown scope {scope!r}: resource must be * or one of {', '.join(sorted(RESOURCES))}"
    if action != WILDCARD and action not in ACTIONS:
        return f"unknown scope {scope!r}: action must be * or one of {', '.join(sorted(ACTIONS))}"
    return None


def _check_scope(scope: str) -> str:
    problem = scope_error(scope)
    if problem:
        raise ValueError(problem)
    return scope


Scope = Annotated[str, AfterValidator(_check_scope)]


def _check_operation(name: str) -> str:
    if name not in OPERATIONS:
        raise ValueError(f"unknown tool {name!r}; the server's tools are {', '.join(sorted(OPERATIONS))}")
    return name


OperationName = Annotated[str, AfterValidator(_check_operation)]


@lru_cache(maxsize=1024)
def covering_scopes(scope: str) -> frozenset[str]:
    """Every held scope that grants `scope`: itself and its wildcard forms."""
    resource, _, action = scope.partition(":")
    return frozenset({scope, f"{resource}:{WILDCARD}", f"{WILDCARD}:{action}", f"{WILDCARD}:{WILDCARD}"})


def holds(scopes: frozenset[str], scope: str) -> bool:
    """True when the held `scopes` grant `scope` (wildcard-aware; an empty set grants nothing)."""
    return not scopes.isdisjoint(covering_scopes(scope))


class OperationPolicy(BaseModel):
    """How one tool is guarded: its scope, which collection it touches, and its tenant rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: Scope = Field(description="The scope a key needs to call the tool.")
    scope_when_tenant_field: Scope | None = Field(
        default=None, description="The scope needed instead when the collection has a tenant_field."
    )
    collection_arg: str | None = Field(default=None, description="The argument that names the collection.")
    all_collections_when_omitted: bool = Field(
        default=False, description="Omitting the collection argument means every collection (a cross-collection call)."
    )
    cross_collection: bool = Field(default=False, description="The tool spans collections; refused to pinned keys.")
    alters_collection: AltersCollection = Field(
        default="never", description="The tool reconfigures or deletes the collection itself; refused to pinned keys."
    )
    tenant_rule: TenantRule = Field(
        default="none", description="How the tenant is named in a tenant-guarded collection."
    )
    tenant_optional: bool = Field(
        default=False, description="argument rule: a key without a tenant pin may omit the tenant (all tenants)."
    )
    filter_arg: str = Field(default="filters", description="filter rule: the argument holding the filter.")
    metadata_arg: str = Field(default="metadata", description="metadata rule: the argument holding the metadata.")
    records_arg: str | None = Field(
        default=None, description="metadata rule: a list argument whose every record carries metadata_arg."
    )
    tenant_arg: str = Field(default="tenant", description="argument rule: the argument naming the tenant.")

    @model_validator(mode="after")
    def _consistent(self) -> OperationPolicy:
        if self.cross_collection and self.collection_arg:
            raise ValueError("a cross_collection operation names no single collection: drop collection_arg")
        if self.all_collections_when_omitted and not self.collection_arg:
            raise ValueError("all_collections_when_omitted needs collection_arg")
        if self.tenant_rule != "none" and not self.collection_arg:
            raise ValueError(f"tenant_rule {self.tenant_rule!r} needs collection_arg")
        if self.alters_collection != "never" and not self.collection_arg:
            raise ValueError("alters_collection needs collection_arg")
        if self.records_arg and self.tenant_rule != "metadata":
            raise ValueError("records_arg only applies to tenant_rule 'metadata'")
        if self.tenant_optional and self.tenant_rule != "argument":
            raise ValueError("tenant_optional only applies to tenant_rule 'argument'")
        return self

    def required_scope(self, tenant_field: str | None) -> str:
        """The scope the call needs on a collection with (or without) a tenant field."""
        if tenant_field and self.scope_when_tenant_field:
            return self.scope_when_tenant_field
        return self.scope

    def alters(self, tenant_field: str | None) -> bool:
        """True when the call reconfigures or deletes the collection it names."""
        return self.alters_collection == "always" or (
            self.alters_collection == "without_tenant_field" and not tenant_field
        )


class Role(BaseModel):
    """A named bundle of scopes to mint keys with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scopes: list[Scope] = Field(description="The scopes a key of this role holds.")
    description: str = ""


class Policy(BaseModel):
    """A whole policy: the guarded operations, the roles, and the limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operations: dict[OperationName, OperationPolicy]
    roles: dict[str, Role] = Field(default_factory=dict)
    limits: list[Limit] = Field(default_factory=list)

    @field_validator("limits")
    @classmethod
    def _unique_names(cls, limits: list[Limit]) -> list[Limit]:
        seen: set[str] = set()
        for limit in limits:
            if limit.name in seen:
                raise ValueError(f"two limits are named {limit.name!r}; names must be unique")
            seen.add(limit.name)
        return limits

    def unknown_limit_roles(self) -> list[tuple[tuple[str | int, ...], str]]:
        """(location, message) of each limit naming a role the policy does not define."""
        return [
            (("limits", index, "applies_to", "role"), f"unknown role {role!r}; roles: {', '.join(sorted(self.roles))}")
            for index, limit in enumerate(self.limits)
            if (role := limit.applies_to.role) not in (None, EACH) and role not in self.roles
        ]

    def role_scopes(self, role: str) -> list[str]:
        """The scopes of a role; InvalidArgument naming the known roles when there is no such role."""
        if role not in self.roles:
            raise InvalidArgument(f"unknown role {role!r}; roles: {', '.join(sorted(self.roles))}")
        return list(self.roles[role].scopes)
