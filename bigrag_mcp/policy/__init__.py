"""Declarative policy: the file format, its loader, and the pure decision engine."""

from bigrag_mcp.policy.engine import (
    CROSS_COLLECTION,
    CollectionFacts,
    Decision,
    DenyCode,
    Principal,
    Slice,
    evaluate,
    reach_in,
    target_collection,
    visible_tools,
)
from bigrag_mcp.policy.grants import check_key_grant, reach_gap
from bigrag_mcp.policy.loader import PolicyError, load_policy, parse_policy
from bigrag_mcp.policy.model import (
    ACTIONS,
    OPERATIONS,
    RESOURCES,
    OperationPolicy,
    Policy,
    Role,
    holds,
    scope_error,
)

__all__ = [
    "ACTIONS",
    "CROSS_COLLECTION",
    "OPERATIONS",
    "RESOURCES",
    "CollectionFacts",
    "Decision",
    "DenyCode",
    "OperationPolicy",
    "Policy",
    "PolicyError",
    "Principal",
    "Role",
    "Slice",
    "check_key_grant",
    "evaluate",
    "holds",
    "load_policy",
    "parse_policy",
    "reach_gap",
    "reach_in",
    "scope_error",
    "target_collection",
    "visible_tools",
]
