"""The `bigrag-mcp` command: serve, quickstart, and the operator's commands (JSON out)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from bigrag_mcp.errors import BigRagError
from bigrag_mcp.policy import PolicyError
from bigrag_mcp.services.runtime import Runtime
from bigrag_mcp.settings import Settings

log = logging.getLogger("bigrag_mcp")


def emit(value: Any) -> None:
    """Print a JSON document: pydantic models, lists of them, or plain data."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if hasattr(v, "model_dump") else v for v in value]
    print(json.dumps(value, indent=2, default=str, ensure_ascii=False))


@dataclass(frozen=True)
class Outcome:
    """A command's JSON result together with its exit code (a failed verification is not an error, but not 0)."""

    value: Any
    exit_code: int


def with_runtime(work: Callable[[Runtime, argparse.Namespace], Awaitable[Any]]) -> Callable[[argparse.Namespace], int]:
    """Run `work` on an opened runtime, print what it returns as JSON, and map errors to exit code 1."""

    def command(args: argparse.Namespace) -> int:
        async def main() -> Any:
            rt = await Runtime.open(Settings())
            try:
                return await work(rt, args)
            finally:
                await rt.close()

        try:
            result = anyio.run(main)
        except (BigRagError, PolicyError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        if isinstance(result, Outcome):
            emit(result.value)
            return result.exit_code
        if result is not None:
            emit(result)
        return 0

    return command


def json_arg(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def when(text: str) -> datetime:
    """An ISO time, or a span from now such as 30d or 12h."""
    if text[-1:] in ("d", "h") and text[:-1].isdigit():
        span = timedelta(days=int(text[:-1])) if text.endswith("d") else timedelta(hours=int(text[:-1]))
        return datetime.now(UTC) + span
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    from bigrag_mcp import commands

    parser = argparse.ArgumentParser(prog="bigrag-mcp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    commands.add_all(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)



