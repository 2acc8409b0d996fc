"""Turning uploaded bytes into text: the type from the bytes, then the registered loader under bounds."""

from __future__ import annotations

from bigrag_mcp.loading.run import Bounds, extract, extract_here
from bigrag_mcp.loading.sniff import resolve_type

__all__ = ["Bounds", "extract", "extract_here", "resolve_type"]
