"""The read-only usage dashboard: sign in with an API key, see usage, cost, keys, audit and outbox within its reach."""

from bigrag_mcp.dashboard.app import PREFIX, Dashboard

__all__ = ["PREFIX", "Dashboard"]
