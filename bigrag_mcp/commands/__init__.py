"""The subcommands of `bigrag-mcp`, one module per group; each `add(sub)` adds its parsers."""

from __future__ import annotations

import argparse
import importlib

GROUPS = ("serve", "quickstart", "data", "security", "operator")


def add_all(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None = None) -> None:
    """Add every group's parsers, or only serve's when `command` is serve: a server imports no other command."""
    for group in ("serve",) if command == "serve" else GROUPS:
        importlib.import_module(f"bigrag_mcp.commands.{group}").add(sub)
