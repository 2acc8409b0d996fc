"""The command line as an operator uses it: quickstart, bootstrap, plugins, policy, operator commands."""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import server_env

from bigrag_mcp.cli import UsageError, confirm
from bigrag_mcp.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def run(settings: Settings, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bigrag_mcp", *args], env=server_env(settings), capture_output=True, text=True, timeout=300, cwd=cwd, check=False
    )


def test_quickstart_runs_offline_and_shows_isolation(settings: Settings, tmp_path: Path) -> None:
    for attempt in (1, 2):  # a second run reuses the folder: nothing is duplicated
        done = run(settings, "--data-dir", str(tmp_path / "qs"), "quickstart", cwd=REPO)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "5 business days" in out and "30 days" not in out  # acme's answer, never globex's
        assert "permission_denied: This API key is limited to tenant 'acme'" in out
        assert "cannot use collection 'tenant_globex'" in out
        assert ("already there" in out) == (attempt == 2)
    with sqlite3.connect(tmp_path / "qs" / "bigrag.db") as raw:  # a re-run replaced its two keys instead of adding two
        live = raw.execute("SELECT name FROM api_keys WHERE revoked_at IS NULL ORDER BY name").fetchall()
    assert live == [("quickstart admin",), ("quickstart tenant app",)]


def test_quickstart_takes_whatever_tenant_folders_it_is_given(settings: Settings, tmp_path: Path) -> None:
    for tenant, fact in (("initech", "Initech ships staplers within two days."), ("umbrella", "Umbrella ships in nine weeks.")):
        (tmp_path / "docs" / tenant).mkdir(parents=True)
        (tmp_path / "docs" / tenant / "shipping.txt").write_text(fact, encoding="utf-8")
    (tmp_path / "docs" / ".git").mkdir()
    done = run(settings, "quickstart", "--docs", str(tmp_path / "docs"), "--data-dir", str(tmp_path / "qs"))
    assert done.returncode == 0, done.stderr
    assert "tenant_initech" in done.stdout and "tenant_umbrella" in done.stdout and "tenant_.git" not in done.stdout
    assert "the initech key sees" in done.stdout and "limited to tenant 'initech'" in done.stdout


def test_cli_basics_a_newcomer_meets(settings: Settings, tmp_path: Path) -> None:
    assert run(settings, "--version").stdout.startswith("bigrag-mcp ")
    elsewhere = tmp_path / "elsewhere"
    made = run(settings, "--data-dir", str(elsewhere), "keys", "create", "--admin", "--expires", "2w")
    assert made.returncode == 0 and (elsewhere / "bigrag.db").is_file()  # the global option beats BIGRAG_DATA_DIR
    expires = datetime.fromisoformat(json.loads(made.stdout)["key"]["expires_at"])
    assert timedelta(days=13, hours=23) < expires - datetime.now(UTC) <= timedelta(days=14)
    assert json.loads(made.stdout)["key"]["created_at"].endswith("Z")
    for span, length in (("30m", timedelta(minutes=30)), ("12h", timedelta(hours=12)), ("90d", timedelta(days=90))):
        key = json.loads(run(settings, "keys", "create", "--scope", "query:read", "--expires", span).stdout)["key"]
        left = datetime.fromisoformat(key["expires_at"]) - datetime.now(UTC)
        assert length - timedelta(minutes=5) < left <= length
    iso = json.loads(run(settings, "keys", "create", "--role", "read-only", "--expires", "2031-01-31T12:00:00Z").stdout)
    assert iso["key"]["expires_at"] == "2031-01-31T12:00:00Z"
    bad = run(settings, "keys", "create", "--scope", "query:read", "--expires", "soon")
    assert bad.returncode == 2 and "30m, 12h, 90d, 2w" in bad.stderr
    nothing = run(settings, "keys", "create", "--name", "idle")
    assert nothing.returncode == 2 and "--admin, --role ROLE or --scope" in nothing.stderr and "Traceback" not in nothing.stderr
    nameless = run(settings, "collections", "create")
    assert nameless.returncode == 2 and "needs the collection's name" in nameless.stderr and "Traceback" not in nameless.stderr
    helped = run(settings, "collections", "--help").stdout
    assert "(default: 1000)" in helped and "(default: recursive)" in helped and "(default: None)" not in helped


def test_destructive_commands_ask_at_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[str] = []
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda question: answers.pop(0))
    answers.append("n")
    with pytest.raises(UsageError, match="nothing was changed"):
        confirm("Delete?", argparse.Namespace(yes=False))
    answers.append("y")
    confirm("Delete?", argparse.Namespace(yes=False))
    confirm("Delete?", argparse.Namespace(yes=True))  # --yes asks nothing (input would fail on an empty list)
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    confirm("Delete?", argparse.Namespace(yes=False))  # scripts are not asked


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


def test_installed_plugins_load_without_their_client_libraries() -> None:
    """Loading the entry points registers every installed plugin's names but imports none of their client libraries
    (they took ≈ 1.4 s of every process's start, the Weaviate client ≈ 1 s of it); a factory imports its own when it
    runs. Fails if a plugin's entry module or package imports its implementation again."""
    probe = (
        "import sys; from bigrag_mcp.plugins import build_registry, plugin_manager\n"
        "libraries = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'weaviate', 'grpc', 'cohere', 'httpx', 'psycopg'})\n"
        "r = build_registry(plugin_manager())\n"
        "print(sorted(r.vector_backends), sorted(r.chat_providers), sorted(r.rerankers), sorted(r.billing_exporters))\n"
        "print('loaded', libraries())\n"
        "chat = r.chat_provider('openai')(model=None)\n"
        "print(type(chat).__name__, 'loaded', libraries())\n"
    )
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env).stdout
    assert out.splitlines() == [
        "['memory', 'pgvector', 'weaviate'] ['cohere', 'openai'] ['cohere'] ['jsonl', 'lago', 'openmeter', 'stripe']",
        "loaded []",
        "OpenAIChat loaded ['httpx']",
    ]


def test_policy_check_names_the_bad_line(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text('[operations.query]\nscope = "query:read"\n\n[operations.chat]\nscope = "chat:shout"\n', encoding="utf-8")
    done = run(settings, "policy", "check", str(bad))
    assert done.returncode == 1 and "line 5" in done.stderr and "chat:shout" in done.stderr
    assert run(settings, "policy", "check", str(REPO / "policies" / "saas-example.toml")).returncode == 0


def test_the_collector_is_off_while_a_command_loads_and_its_modules_are_frozen_after(tmp_path: Path) -> None:
    """`run` keeps the garbage collector off while start-up loads the command's modules (the command line itself loads
    none of the heavy ones, so they all load then) and freezes them out of later collections; the command runs with
    the collector on. Fails if `bigrag_mcp.cli` imports the store or pydantic again, or if `run` stops doing this."""
    probe = (
        "import gc, sys; import bigrag_mcp.cli as cli\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'pydantic', 'numpy', 'anyio') "
        "or m.startswith(('bigrag_mcp.services', 'bigrag_mcp.store', 'bigrag_mcp.policy', 'bigrag_mcp.settings')))\n"
        "build = cli.build_parser\n"
        "def build_parser(argv): print('loading with the collector', gc.isenabled()); return build(argv)\n"
        "def execute(parser, args): print('running with the collector', gc.isenabled(), 'frozen', gc.get_freeze_count() > 100_000, "
        "'store loaded', 'sqlalchemy' in sys.modules); return 0\n"
        "cli.build_parser, cli.execute = build_parser, execute\n"
        "print('the command line alone loads', heavy)\n"
        "sys.argv = ['bigrag-mcp', 'ingest', 'docs', '.']; cli.run()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert done.stdout.splitlines() == [
        "the command line alone loads []",
        "loading with the collector False",
        "running with the collector True frozen True store loaded True",
    ]


def test_serve_loads_no_other_command() -> None:
    probe = (
        "import sys; from bigrag_mcp.cli import build_parser; build_parser(['serve']).parse_args(['serve']); "
        "print(sorted(m for m in sys.modules if m.startswith('bigrag_mcp.commands.')), "
        "sorted(m for m in sys.modules if m.split('.')[0] == 'jinja2' or m.startswith('bigrag_mcp.dashboard')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['bigrag_mcp.commands.serve'] []"  # the dashboard loads only when an HTTP server starts
