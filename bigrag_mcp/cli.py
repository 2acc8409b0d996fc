"""The `bigrag-mcp` command: serve, quickstart, and the operator's commands (JSON out).

The store, the services, the policy and the settings are imported where a command uses them, not here, so that `run`
has the garbage collector off while they load.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from bigrag_mcp import __version__, logs
from bigrag_mcp.errors import BigRagError

if TYPE_CHECKING:
    from bigrag_mcp.services.runtime import Runtime
    from bigrag_mcp.settings import Settings


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


class UsageError(Exception):
    """A command line that cannot work as given: printed with the command's usage, exit code 2."""


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default after its help text, unless it has none or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """Every command and subcommand shows its options' defaults in --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def settings_for(args: argparse.Namespace) -> Settings:
    """The settings of one command: BIGRAG_* variables, with the global --data-dir taking precedence."""
    from bigrag_mcp.settings import Settings

    data_dir = getattr(args, "global_data_dir", None)
    return Settings(data_dir=data_dir) if data_dir is not None else Settings()


def confirm(question: str, args: argparse.Namespace) -> None:
    """Ask before destroying data when a person is at a terminal (--yes skips the question; scripts are not asked)."""
    if getattr(args, "yes", False) or not sys.stdin.isatty():
        return
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise UsageError("not confirmed; nothing was changed")


def with_runtime(work: Callable[[Runtime, argparse.Namespace], Awaitable[Any]]) -> Callable[[argparse.Namespace], int]:
    """Run `work` on an opened runtime, print what it returns as JSON, and map errors to exit code 1."""

    def command(args: argparse.Namespace) -> int:
        import anyio

        from bigrag_mcp.policy import PolicyError
        from bigrag_mcp.services.runtime import Runtime

        async def main() -> Any:
            rt = await Runtime.open(settings_for(args))
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


SPAN_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def when(text: str) -> datetime:
    """An ISO-8601 time (UTC unless it names a zone), or a span from now: 30m, 12h, 90d, 2w."""
    unit, amount = text[-1:].lower(), text[:-1]
    if unit in SPAN_UNITS and amount.isdigit():
        return datetime.now(UTC) + timedelta(**{SPAN_UNITS[unit]: int(amount)})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a span (30m, 12h, 90d, 2w) nor an ISO-8601 time (2027-01-31 or 2027-01-31T12:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def command_word(argv: list[str]) -> str | None:
    """The command a command line runs (the first word that is not a global option or its value)."""
    words = iter(argv)
    for word in words:
        if word == "--data-dir":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command line's parser; for `serve` (the first word of `argv`) only serve's, so it loads only what it runs."""
    from bigrag_mcp import commands

    parser = Parser(prog="bigrag-mcp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"bigrag-mcp {__version__}")
    parser.add_argument(
        "--data-dir",
        dest="global_data_dir",
        type=Path,
        help="the data folder (overrides BIGRAG_DATA_DIR; default ./bigrag-data)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_all(cast("argparse._SubParsersAction[argparse.ArgumentParser]", sub), command_word(argv or []))
    return parser


def parse(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Set up logging and parse the command line, which loads the modules of the command it names."""
    from bigrag_mcp.settings import Settings

    settings = Settings()
    logs.configure(settings.log_level, settings.log_format)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    return parser, parser.parse_args(argv)


def execute(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run a parsed command; its exit code."""
    try:
        return int(args.handler(args) or 0)
    except UsageError as exc:
        (getattr(args, "command_parser", None) or parser).error(str(exc))
        return 2  # not reached: error() exits


def main(argv: list[str] | None = None) -> int:
    return execute(*parse(argv))


def run() -> NoReturn:
    """The `bigrag-mcp` program: `main`, with the garbage collector kept off what lives until the process ends.

    Start-up loads the command's modules: hundreds of thousands of objects that all live to the end, so collecting
    among them while they load only costs time (a tenth of an `ingest`'s start-up). The collector is off until they
    are loaded, then they are frozen out of every later collection."""
    gc.disable()
    parser, args = parse()
    gc.freeze()
    gc.enable()
    code = execute(parser, args)
    gc.freeze()  # the process ends now: interpreter shutdown need not walk what the command made for cycles
    sys.exit(code)
