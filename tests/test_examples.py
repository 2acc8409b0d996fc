"""The runnable examples the README points at: they run as shipped and show what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_saas_cookbook_runs_both_patterns_and_a_limit_end_to_end(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "examples" / "saas_cookbook.py"), "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "acme asks about refunds: 'Refunds are paid within 5 business days.'" in out
    assert "cannot use collection 'tenant_globex'" in out and "'kind' is a required property" in out
    assert "acme's key sees only acme: ['Acme ships within 2 days.']" in out
    assert "tenant_required: $in on the tenant field" in out
    assert "limit_exceeded: free: queries per day: queries 3/3 per day; resets at " in out
    retry_after_s = int(out.split("retry_after_s=", 1)[1].split()[0])
    assert 1 <= retry_after_s <= 86_400
    assert "acme's usage_get.limits: 'free: queries per day' queries used 3 of 3, 0 left" in out
    assert "globex still queries, on its own counter: used/max [(1, 3)]" in out
    assert "acme's own usage: [('support', 'acme', 3)]" in out
    assert "the operator sees every tenant: [('support', 'acme'), ('support', 'globex')]" in out
    assert "globex's data is gone from the shared collection" in out
