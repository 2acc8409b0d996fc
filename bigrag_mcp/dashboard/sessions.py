"""Server-side dashboard sessions: a random id maps to the key id and a CSRF token, and ends when idle."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Session:
    """One signed-in browser: which key it acts as, the token its forms must carry, when it was last used."""

    key_id: str
    csrf: str
    seen: float


class SessionStore:
    """Sessions of one process, in memory (a restart signs everybody out); idle ones expire."""

    def __init__(self, idle_seconds: float = 1800.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._sessions: dict[str, Session] = {}

    def start(self, key_id: str) -> tuple[str, Session]:
        """A fresh session id (never one the browser brought along) and its session."""
        self._sweep()
        sid = secrets.token_urlsafe(32)
        session = Session(key_id, secrets.token_urlsafe(32), self.clock())
        self._sessions[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        """The live session of `sid`, touched; None when unknown or idle too long (then it is gone)."""
        session = self._sessions.get(sid or "")
        if session is None:
            return None
        now = self.clock()
        if now - session.seen > self.idle_seconds:
            del self._sessions[sid or ""]
            return None
        session.seen = now
        return session

    def end(self, sid: str | None) -> None:
        self._sessions.pop(sid or "", None)

    def _sweep(self) -> None:
        now = self.clock()
        for sid in [s for s, v in self._sessions.items() if now - v.seen > self.idle_seconds]:
            del self._sessions[sid]
