"""Logging setup (text or JSON lines on stderr) and the access log: one line per tool call, never a secret."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

access = logging.getLogger("bigrag_mcp.access")
ACCESS_FIELDS = ("key_id", "tool", "collection", "outcome", "ms")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (ISO-8601 UTC), level, logger, message, and the access fields when present."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({name: getattr(record, name) for name in ACCESS_FIELDS if hasattr(record, name)})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure(level: str, fmt: str) -> None:
    """Send logs to stderr (stdout belongs to the stdio transport) as `text` or `json` lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def tool_call(key_id: str | None, tool: str, collection: str | None, outcome: str, ms: float) -> None:
    """The access-log line of one tool call (INFO): who, what, where, how it ended, how long it took."""
    fields = {"key_id": key_id or "-", "tool": tool, "collection": collection or "-", "outcome": outcome, "ms": round(ms, 1)}
    access.info(" ".join(f"{name}={value}" for name, value in fields.items()), extra=fields)


def auth_refused(transport: str, reason: str) -> None:
    """A refused credential, with the reason and never the secret."""
    access.info("auth refused transport=%s reason=%s", transport, reason, extra={"outcome": "unauthenticated"})
