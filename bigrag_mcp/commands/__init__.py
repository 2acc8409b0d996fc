"""The subcommands of `bigrag-mcp`, one module per group; each `add(sub)` adds its parsers."""

from __future__ import annotations

import argparse
from pathlib import Path

from bigrag_mcp.commands import dashboard, data, operator, quickstart, security, serve


def add_all(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for group in (serve, dashboard, quickstart, data, security, operator):
        group.add(sub)
    for parser in sub.choices.values():
        parser.set_defaults(command_parser=parser)  # a usage error names the command it belongs to
        parser.add_argument(  # also accepted after the command; SUPPRESS keeps a value given before it
            "--data-dir", dest="global_data_dir", type=Path, default=argparse.SUPPRESS, help="the data folder (overrides BIGRAG_DATA_DIR)"
        )
