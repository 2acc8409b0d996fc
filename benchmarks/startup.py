"""Process start with the installed plugins: `bigrag-mcp collections list` with every installed entry point against
built-ins only (`BIGRAG_LOAD_PLUGINS=`), alternating, best of `--repeats` each, in one run.

Every process loads every installed entry point as it starts (`serve`, each `--workers` process, each stdio session
a client spawns, each CLI command), so this is what an installed plugin costs each of them.
Run by hand: `python benchmarks/startup.py [--repeats 5]`; prints one JSON object. To measure another checkout, put
it (and its `plugins/*` folders) first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from serving import scratch_folder


def started(env: dict[str, str]) -> float:
    """Wall time of one `bigrag-mcp collections list`, process start included."""
    begun = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bigrag_mcp", "collections", "list"], env=env, check=True, capture_output=True)
    return time.perf_counter() - begun


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    a = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith("BIGRAG_")}
    base.update(BIGRAG_DATA_DIR=str(scratch_folder()), BIGRAG_EMBEDDING_PROVIDER="hash")
    envs = {"with_installed_plugins": base, "built_ins_only": {**base, "BIGRAG_LOAD_PLUGINS": ""}}
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.dirname(__import__("bigrag_mcp").__file__)], check=True)
    started(base)  # creates the store
    best = dict.fromkeys(envs, float("inf"))
    for _ in range(a.repeats):
        for name, env in envs.items():
            best[name] = min(best[name], started(env))
    out = {name: round(seconds, 3) for name, seconds in best.items()}
    out["ratio"] = round(best["with_installed_plugins"] / best["built_ins_only"], 2)
    out["load_average"] = os.getloadavg()[0]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
