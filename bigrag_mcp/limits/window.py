"""Calendar windows in UTC: which window an instant falls in, and when it resets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bigrag_mcp.limits.model import Per

TOTAL = "total"


@dataclass(frozen=True, slots=True)
class Window:
    """One window of a limit: `key` names it in the store; `resets_at` is None for a standing `total` cap."""

    key: str
    resets_at: datetime | None

    def retry_after_s(self, now: datetime) -> int | None:
        """Whole seconds until the window resets (at least 1), or None when it never does."""
        if self.resets_at is None:
            return None
        return max(1, math.ceil((self.resets_at - now).total_seconds()))


def window_of(per: Per, now: datetime) -> Window:
    """The window of `per` that holds `now` (UTC calendar minutes, hours, days and months)."""
    now = now.astimezone(UTC)
    if per == "total":
        return Window(TOTAL, None)
    if per == "month":
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
        return Window(start.isoformat(), end)
    if per == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return Window(start.isoformat(), start + timedelta(days=1))
    if per == "hour":
        start = now.replace(minute=0, second=0, microsecond=0)
        return Window(start.isoformat(), start + timedelta(hours=1))
    start = now.replace(second=0, microsecond=0)
    return Window(start.isoformat(), start + timedelta(minutes=1))
