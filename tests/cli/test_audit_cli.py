"""`consentry audit …`, `consentry report transparency` and `consentry policy publish|impact`
through the CLI, on a SQLite home."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from consentry.audit.merkle import verify_consistency, verify_inclusion
from consentry.cli.main import app

runner = CliRunner()


def cli(home: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--home", str(home), *args])
    return result.exit_code, result.stdout, result.stderr


def _b(text: str) -> bytes:
    return base64.b64decode(text)


def test_checkpoint_prove_consistency_verify_and_tampering(home: Path, tmp_path: Path) -> None:
    assert cli(home, "init")[0] == 0
    assert cli(home, "policy", "publish")[0] == 0
    assert cli(home, "licensee", "add", "acme", "--purpose", "ai_training_third_party")[0] == 0
    saved = tmp_path / "cp.txt"
    code, out, _ = cli(home, "audit", "checkpoint", "--out", str(saved), "--json")
    assert code == 0
    cp = json.loads(out)
    assert cp["size"] == 3
    assert saved.read_text() == cp["note"]
    code, out, _ = cli(home, "audit", "prove", "2", "--json")
    proof = json.loads(out)
    assert code == 0
    assert proof["event_type"] == "policy.published"
    assert proof["leaf_index"] == 1
    assert verify_inclusion(
        1, 3, _b(proof["leaf_hash"]), [_b(p) for p in proof["path"]], _b(cp["root_hash"])
    )
    code, out, _ = cli(home, "audit", "consistency", "1", "3", "--json")
    c = json.loads(out)
    assert verify_consistency(
        1, 3, [_b(p) for p in c["path"]], _b(c["first_root"]), _b(c["second_root"])
    )
    assert cli(home, "audit", "prove", "99")[0] == 1
    assert cli(home, "audit", "consistency", "4")[0] == 1
    code, _, err = cli(home, "audit", "consistency", "0", "3")
    assert code == 1
    assert "no consistency proof from size 0" in err
    code, out, _ = cli(home, "audit", "verify", "--from-checkpoint", str(saved))
    assert code == 0
    assert out.startswith("ok: 3 leaves")
    with sqlite3.connect(home / "consentry.db") as db:
        db.execute(
            "UPDATE audit_events SET payload = replace(payload, 'acme', 'evil') WHERE seq = 3"
        )
    code, _, err = cli(home, "audit", "verify", "--from-checkpoint", str(saved))
    assert code == 1
    assert "first bad leaf 2 (audit event 3)" in err
    code, out, _ = cli(home, "audit", "verify", "--json")
    assert code == 1
    assert json.loads(out)["first_bad_leaf"] == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("not a checkpoint")
    assert cli(home, "audit", "verify", "--from-checkpoint", str(bad))[0] == 2


def test_report_transparency_formats(home: Path, tmp_path: Path) -> None:
    assert cli(home, "init")[0] == 0
    code, out, _ = cli(home, "report", "transparency", "--format", "json", "--from", "2020-01-01")
    assert code == 0
    assert json.loads(out)["from"] == "2020-01-01T00:00:00Z"
    assert set(json.loads(out)) >= {"revocation_times", "purges", "scraping_damages"}
    code, out, _ = cli(home, "report", "transparency")
    assert code == 0
    assert out.startswith("# Transparency report")
    assert "## Headline figures" in out
    target = tmp_path / "report.html"
    code, _, _ = cli(home, "report", "transparency", "--format", "html", "--out", str(target))
    assert code == 0
    page = target.read_text()
    assert "<h1>Transparency report</h1>" in page
    assert "Policy versions published" in page
    assert "policy.published" not in page
    assert cli(home, "report", "transparency", "--format", "pdf")[0] == 2
    assert cli(home, "report", "transparency", "--from", "2025-01-02", "--to", "2025-01-01")[0] == 2


def test_policy_publish_and_impact(home: Path) -> None:
    code, out, _ = cli(home, "init", "--json")
    assert code == 0
    # init publishes the shipped policy's versions; publishing again adds nothing.
    assert json.loads(out)["policy_published"] == ["2023-09-29", "2024-11-15"]
    code, out, _ = cli(home, "policy", "publish", "--json")
    assert code == 0
    assert json.loads(out)["published"] == []
    assert "already published" in cli(home, "policy", "publish")[1]
    code, out, _ = cli(home, "policy", "impact", "2023-09-29", "2024-11-15", "--json", "--users")
    assert code == 0
    report = json.loads(out)
    assert report["subjects"] == 0
    assert report["cells"] == []
    assert report["users"] == []
    assert cli(home, "policy", "impact", "2023-09-29", "nope")[0] == 2
