"""`bigrag-mcp reindex --to pgvector` moves a deployment's vectors from the memory backend to Postgres, per tenant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "bigrag_mcp", *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return done


def test_reindex_to_pgvector_then_serve_from_it(postgres_url: str, tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BIGRAG_", "WEAVIATE_"))},
        "BIGRAG_DATA_DIR": str(tmp_path / "data"),
        "BIGRAG_EMBEDDING_PROVIDER": "hash",
        "BIGRAG_VECTOR_BACKEND": "memory",
        "BIGRAG_LOAD_PLUGINS": "pgvector",
        "BIGRAG_PGVECTOR_URL": postgres_url,
        "BIGRAG_PGVECTOR_SCHEMA_NAME": "reindex_test",
    }
    cli(env, "collections", "create", "notes", "--tenant-field", "tenant_id")
    for tenant, sentence in (
        ("acme", "Acme refunds take five business days."),
        ("globex", "Globex refunds take thirty days."),
    ):
        doc = tmp_path / f"{tenant}.md"
        doc.write_text(sentence, encoding="utf-8")
        cli(env, "ingest", "notes", str(doc), "--metadata", json.dumps({"tenant_id": tenant}))
    assert json.loads(cli(env, "reindex", "--to", "pgvector").stdout) == {
        "backend": "pgvector",
        "reindexed": {"notes": 2},
    }
    served = {**env, "BIGRAG_VECTOR_BACKEND": "pgvector"}
    for tenant, expected in (("acme", "five business days"), ("globex", "thirty days")):
        out = json.loads(
            cli(
                served, "query", "notes", "how long do refunds take", "--filters", json.dumps({"tenant_id": tenant})
            ).stdout
        )
        assert [expected in r["text"] for r in out["results"]] == [True], out
