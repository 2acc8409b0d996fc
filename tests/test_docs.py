"""The README's tour, run as written (in a fresh folder, with the venv's bin on PATH as after `source .venv/bin/activate`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tour_lines() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("## A tour", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def sh(line: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, input="", timeout=300, check=False)


def test_the_readme_tour_works_as_written(tmp_path: Path) -> None:
    lines = tour_lines()
    assert lines[0] == "source .venv/bin/activate"  # stands for the install's venv; the test's own is on PATH
    (tmp_path / "examples").symlink_to(REPO / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIGRAG_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", BIGRAG_EMBEDDING_PROVIDER="hash")
    outputs: list[str] = []
    for line in lines[1:]:
        if line.startswith("export "):
            name, value = line.removeprefix("export ").split("=", 1)
            env[name] = value
            continue
        if "brg_..." in line:  # the stdio server with the tenant key the tour just minted
            line = line.replace("brg_...", json.loads(outputs[-1])["secret"]).split("  #", 1)[0]
        done = sh(line, tmp_path, env)
        assert done.returncode == 0, f"{line}\n{done.stderr}"
        outputs.append(done.stdout)
    admin, collection, ingested, hits, tenant_key, served = outputs
    assert json.loads(admin)["key"]["scopes"] == ["*:*"] and (tmp_path / "data" / "bigrag.db").is_file()
    assert json.loads(collection)["tenant_field"] == "tenant_id"
    summary = json.loads(ingested)
    assert summary["counts"]["ingested"] == len(list((REPO / "examples" / "sample-docs" / "acme").glob("*.md")))
    assert summary["counts"]["failed"] == 0 and all(d["chunks"] > 0 for d in summary["ingested"])
    top = json.loads(hits)["results"][0]
    assert top["metadata"]["tenant_id"] == "acme" and re.search(r"refund", top["text"], re.IGNORECASE)
    key = json.loads(tenant_key)["key"]
    assert (key["collection"], key["tenant"]) == ("support", "acme") and key["expires_at"].endswith("Z")
    assert served == ""  # the stdio server started with the tour's key and ended cleanly when its input closed
