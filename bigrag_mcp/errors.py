"""Errors with the stable codes of the design; tools turn them into MCP tool errors."""

from __future__ import annotations

from typing import Any


class BigRagError(Exception):
    """A failure a caller can act on: a stable `code` and a sentence that says what to change."""

    code = "internal"
    details: dict[str, Any] | None = None  # structured error content (e.g. retry_after_s of limit_exceeded)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidArgument(BigRagError):
    code = "invalid_argument"


class NotFound(BigRagError):
    code = "not_found"


class PermissionDenied(BigRagError):
    code = "permission_denied"


class TenantRequired(BigRagError):
    code = "tenant_required"


class Conflict(BigRagError):
    code = "conflict"


class LimitExceeded(BigRagError):
    code = "limit_exceeded"


class Unavailable(BigRagError):
    code = "unavailable"
