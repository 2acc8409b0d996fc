"""Misbehaving document loaders for the bound tests; a small module, so the loader host imports it quickly."""

from __future__ import annotations

import os
import signal


def spin(data: bytes, *, filename: str | None, mime_type: str | None) -> str:
    while True:
        pass


def hog(data: bytes, *, filename: str | None, mime_type: str | None) -> str:
    return str(len(bytearray(2 << 30)))


def crash(data: bytes, *, filename: str | None, mime_type: str | None) -> str:
    os.kill(os.getpid(), signal.SIGSEGV)
    return ""
