"""Reading a policy file: TOML, validated by the pydantic model, errors that name the file and line."""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from pydantic import ValidationError

from bigrag_mcp.policy.model import Policy

_KEY = r'(?:[A-Za-z0-9_-]+|"[^"]*"|\'[^\']*\')'
_DOTTED = rf"{_KEY}(?:\s*\.\s*{_KEY})*"
_HEADER = re.compile(rf"^\s*\[\s*({_DOTTED})\s*\]\s*(?:#.*)?$")
_ARRAY_HEADER = re.compile(rf"^\s*\[\[\s*({_DOTTED})\s*\]\]\s*(?:#.*)?$")
_ASSIGN = re.compile(rf"^\s*({_DOTTED})\s*=")
_PART = re.compile(_KEY)


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file, the line and what to change."""


def _parts(dotted: str) -> tuple[str, ...]:
    return tuple(p.strip("\"'") for p in _PART.findall(dotted))


def key_lines(source: str) -> dict[tuple[str, ...], int]:
    """Map each table header and key in a TOML text to the (1-based) line that declares it.

    The n-th `[[name]]` of an array of tables is the table (name, "n"), as pydantic locates its errors.
    """
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    arrays: dict[tuple[str, ...], int] = {}
    for number, line in enumerate(source.splitlines(), start=1):
        array = _ARRAY_HEADER.match(line)
        if array:
            name = _parts(array.group(1))
            arrays[name] = arrays.get(name, -1) + 1
            table = (*name, str(arrays[name]))
            lines.setdefault(name, number)
            lines.setdefault(table, number)
            continue
        header = _HEADER.match(line)
        if header:
            table = _parts(header.group(1))
            for depth in range(1, len(table) + 1):
                lines.setdefault(table[:depth], number)
            continue
        assign = _ASSIGN.match(line)
        if assign:
            key = table + _parts(assign.group(1))
            for depth in range(len(table) + 1, len(key) + 1):
                lines.setdefault(key[:depth], number)
    return lines


def _where(loc: tuple[str | int, ...], lines: dict[tuple[str, ...], int]) -> tuple[int | None, str]:
    path = tuple(str(p) for p in loc if p != "[key]")
    for depth in range(len(path), 0, -1):
        if path[:depth] in lines:
            return lines[path[:depth]], ".".join(path)
    return None, ".".join(path) or "(top level)"


def parse_policy(source: str, name: str = "<policy>") -> Policy:
    """Validate a policy given as TOML text; PolicyError naming the line of the first fault."""
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{name}: not valid TOML: {exc}") from exc
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        faults = [(error["loc"], str(error["msg"]).removeprefix("Value error, ")) for error in exc.errors()]
        raise PolicyError(_located(name, source, faults)) from exc
    faults = policy.unknown_limit_roles()
    if faults:
        raise PolicyError(_located(name, source, faults))
    return policy


def _located(name: str, source: str, faults: list[tuple[tuple[str | int, ...], str]]) -> str:
    """One message naming the file, line and key of each fault."""
    lines = key_lines(source)
    problems = []
    for loc, message in faults:
        line, path = _where(loc, lines)
        problems.append(f"{name}, {f'line {line}' if line else 'no line'}: {path}: {message}")
    return "; ".join(problems)


@lru_cache(maxsize=1)
def _default_policy() -> Policy:
    source = files("bigrag_mcp.policy").joinpath("default.toml").read_text(encoding="utf-8")
    return parse_policy(source, "built-in default.toml")


def load_policy(path: Path | None = None) -> Policy:
    """The policy in `path`, or the built-in default policy when `path` is None."""
    if path is None:
        return _default_policy()
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file: {exc.strerror or exc}") from exc
    return parse_policy(source, str(path))
