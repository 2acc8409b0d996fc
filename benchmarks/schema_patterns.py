"""Regex engines for metadata_schema `pattern`: RE2 (linear time) against `regex` with a timeout and Python's `re`.

Usage: python benchmarks/schema_patterns.py [--length 30] [--timeout 0.1]
Prints JSON: seconds per search of each engine on catastrophic patterns (a value that almost matches), and each
figure as a ratio to the floor (RE2 on a benign pattern with the same value), all measured in this run. `re` is run
on a shorter value (it doubles per character); `regex` is stopped by its timeout when it backtracks.
Needs `pip install regex` (google-re2 is a dependency of bigrag-mcp).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable

import re2
import regex

CATASTROPHIC = [r"^(a+)+$", r"^(a|a)*$", r"^(a|aa)+$", r"^(\w+\s?)*$"]
BENIGN = r"^[a-z]+$"
RE_LENGTH = 18  # Python's re needs seconds from ~22 characters on


def _seconds(search: Callable[[], object], repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        search()
    return (time.perf_counter() - start) / repeat


def _regex_search(pattern: str, value: str, timeout: float) -> Callable[[], object]:
    compiled = regex.compile(pattern)

    def search() -> object:
        try:
            return compiled.search(value, timeout=timeout)
        except TimeoutError:
            return None

    return search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=0.1)
    a = parser.parse_args()
    value = "a" * a.length + "!"
    short = "a" * RE_LENGTH + "!"
    benign = re2.compile(BENIGN)
    floor = _seconds(lambda: benign.search(value), 2000)
    rows = []
    for pattern in CATASTROPHIC:
        compiled = re2.compile(pattern)
        row = {
            "pattern": pattern,
            "re2_s": _seconds(lambda c=compiled: c.search(value), 2000),  # type: ignore[misc]
            "regex_timeout_s": _seconds(_regex_search(pattern, value, a.timeout), 3),
            f"re_{RE_LENGTH}_chars_s": _seconds(lambda p=pattern: re.search(p, short), 1),  # type: ignore[misc]
        }
        row.update({k.removesuffix("_s") + "_x_floor": round(v / floor, 1) for k, v in list(row.items()) if k.endswith("_s")})
        rows.append(row)
    print(json.dumps({"value_length": a.length, "floor_re2_benign_s": floor, "patterns": rows}, indent=2))


if __name__ == "__main__":
    main()
