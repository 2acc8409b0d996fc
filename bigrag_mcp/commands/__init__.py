"""The subcommands of `bigrag-mcp`, one module per group; each `add(sub)` adds its parsers."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

GROUPS = ("serve", "dashboard", "quickstart", "data", "ingest", "security", "operator")


SOLO = frozenset({"serve", "dashboard", "quickstart", "ingest"})  # groups of one command, named after it


def add_all(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None = None) -> None:
    """Add every group's parsers, or only the command's own group when it is one of SOLO: a server or an ingest
    imports no other command (and none of what they import)."""
    for group in (command,) if command in SOLO else GROUPS:
        importlib.import_module(f"bigrag_mcp.commands.{group}").add(sub)
    for parser in sub.choices.values():
        parser.set_defaults(command_parser=parser)  # a usage error names the command it belongs to
        parser.add_argument(  # also accepted after the command; SUPPRESS keeps a value given before it
            "--data-dir", dest="global_data_dir", type=Path, default=argparse.SUPPRESS, help="the data folder (overrides BIGRAG_DATA_DIR)"
        )
