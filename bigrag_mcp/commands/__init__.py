"""The subcommands of `bigrag-mcp`, one module per group; each `add(sub)` adds its parsers."""

from __future__ import annotations

import argparse

from bigrag_mcp.commands import data, ingest, operator, quickstart, security, serve


def add_all(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for group in (serve, quickstart, data, ingest, security, operator):
        group.add(sub)
