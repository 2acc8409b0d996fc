"""The command line as an operator uses it: quickstart, bootstrap, plugins, policy, operator commands."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import server_env

from bigrag_mcp.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def run(settings: Settings, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bigrag_mcp", *args], env=server_env(settings), capture_output=True, text=True, timeout=300, cwd=cwd, check=False
    )


def test_quickstart_runs_offline_and_shows_isolation(settings: Settings, tmp_path: Path) -> None:
    for attempt in (1, 2):  # a second run reuses the folder: nothing is duplicated
        done = run(settings, "quickstart", "--data-dir", str(tmp_path / "qs"), cwd=REPO)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "5 business days" in out and "30 days" not in out  # acme's answer, never globex's
        assert "permission_denied: This API key is limited to tenant 'acme'" in out
        assert "cannot use collection 'tenant_globex'" in out
        assert ("already there" in out) == (attempt == 2)


def test_bootstrap_admin_key_and_operator_commands(settings: Settings, tmp_path: Path) -> None:
    created = run(settings, "keys", "create", "--admin", "--name", "ops")
    assert created.returncode == 0, created.stderr
    secret = json.loads(created.stdout)["secret"]
    assert secret.startswith("brg_") and "shown this once" in created.stderr
    assert secret not in (settings.data_dir / "bigrag.db").read_bytes().decode("latin-1")
    assert run(settings, "collections", "create", "notes", "--tenant-field", "tenant_id").returncode == 0
    doc = tmp_path / "n.md"
    doc.write_text("Quarterly revenue grew by twelve percent.", encoding="utf-8")
    assert run(settings, "ingest", "notes", str(doc), "--metadata", '{"tenant_id": "acme"}').returncode == 0
    hits = json.loads(run(settings, "query", "notes", "revenue growth", "--filters", '{"tenant_id": "acme"}').stdout)
    assert hits["results"][0]["text"] == "Quarterly revenue grew by twelve percent."
    refused = run(settings, "query", "notes", "revenue growth")
    assert refused.returncode == 1 and "tenant_required" in refused.stderr
    reindexed = json.loads(run(settings, "reindex", "--to", "memory").stdout)
    assert reindexed == {"backend": "memory", "reindexed": {"notes": 1}}
    assert not list(settings.data_dir.glob("reindex-*.json"))  # a finished run leaves no checkpoint behind
    usage = json.loads(run(settings, "usage", "--collection", "notes").stdout)
    assert usage["queries_total"] == 1 and usage["documents_total"] == 1
    keys = json.loads(run(settings, "keys", "list").stdout)
    assert [k["name"] for k in keys] == ["ops"] and "secret" not in keys[0]
    verify = json.loads(run(settings, "audit", "verify").stdout)
    assert verify["ok"] and verify["rows_checked"] >= 3
    with sqlite3.connect(settings.data_dir / "bigrag.db") as raw:  # tamper with the second audit row
        (action,) = raw.execute("SELECT action FROM audit_log WHERE id = 2").fetchone()
        raw.execute("UPDATE audit_log SET action = 'something.else' WHERE id = 2")
    broken = run(settings, "audit", "verify")
    assert broken.returncode == 3 and "row 2" in broken.stderr and json.loads(broken.stdout)["bad_row_id"] == 2
    with sqlite3.connect(settings.data_dir / "bigrag.db") as raw:
        raw.execute("UPDATE audit_log SET action = ? WHERE id = 2", (action,))
    gone = json.loads(run(settings, "tenants", "offboard", "notes", "acme").stdout)
    assert gone["documents_removed"] == 1 and not gone["already_offboarded"]
    again = json.loads(run(settings, "tenants", "offboard", "notes", "acme").stdout)
    assert again["already_offboarded"] and again["documents_removed"] == 0


def test_plugins_lists_builtins_and_their_hooks(settings: Settings) -> None:
    rows = json.loads(run(settings, "plugins").stdout)
    hooks = {row["name"].rsplit(".", 1)[-1]: row["hooks"] for row in rows}
    assert hooks["memory_backend"] == ["register_vector_backends"]
    assert hooks["hash_embedder"] == ["register_embedding_providers"]


def test_policy_check_names_the_bad_line(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text('[operations.query]\nscope = "query:read"\n\n[operations.chat]\nscope = "chat:shout"\n', encoding="utf-8")
    done = run(settings, "policy", "check", str(bad))
    assert done.returncode == 1 and "line 5" in done.stderr and "chat:shout" in done.stderr
    assert run(settings, "policy", "check", str(REPO / "policies" / "saas-example.toml")).returncode == 0


def test_serve_loads_no_other_command() -> None:
    probe = (
        "import sys; from bigrag_mcp.cli import build_parser; build_parser(['serve']).parse_args(['serve']); "
        "print(sorted(m for m in sys.modules if m.startswith('bigrag_mcp.commands.')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['bigrag_mcp.commands.serve']"
