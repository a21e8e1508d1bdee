"""`consentry policy validate | show | diff` through the real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consentry.cli import common
from consentry.cli.main import app
from consentry.policy import default_policy_path

BAD = """\
versions:
  - version: v1
    effective_from: 2024-01-01T00:00:00Z
    purposes:
      - key: ai_training
        title: AI training
        description: Others train AI models on your posts.
        default: maybe
        minors: deny
        unknown_age: deny
        gpc: true
"""


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep Rich from wrapping lines, and run where short relative file names work."""
    monkeypatch.setattr(common.console, "width", 250)
    monkeypatch.setattr(common.err_console, "width", 250)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CONSENTRY_POLICY_FILE", raising=False)


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_validate_ok_and_json() -> None:
    shipped = str(default_policy_path())
    code, out, _ = _run("policy", "validate", shipped)
    assert code == 0
    assert "2 versions: 2023-09-29 (from 2023-09-29 00:00Z), 2024-11-15" in out
    assert "version 2023-09-29 has no retention rule for posts" in out
    code, out, _ = _run("policy", "validate", shipped, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["ok"] is True
    assert len(report["content_sha256"]) == 64
    assert [v["version"] for v in report["versions"]] == ["2023-09-29", "2024-11-15"]
    assert report["versions"][1] == {
        "version": "2024-11-15",
        "effective_from": "2024-11-15T00:00:00Z",
        "purposes": ["ai_training_third_party", "ai_training_first_party", "business_partners"],
        "retention_gaps": [],
    }


def test_validate_bad_file_exits_2_with_line() -> None:
    Path("bad.yaml").write_text(BAD)
    code, out, err = _run("policy", "validate", "bad.yaml")
    assert code == 2
    assert out == ""
    assert "bad.yaml:8: versions[0].purposes[0].default: Input should be 'allow' or 'deny'" in err
    code, out, _ = _run("policy", "validate", "bad.yaml", "--json")
    assert code == 2
    assert json.loads(out) == {
        "file": "bad.yaml",
        "ok": False,
        "problems": [
            {
                "line": 8,
                "field": "versions[0].purposes[0].default",
                "message": "Input should be 'allow' or 'deny'",
            }
        ],
    }
    code, _, err = _run("policy", "validate", "missing.yaml")
    assert code == 2
    assert "missing.yaml: cannot read" in err


def test_show_version_in_force() -> None:
    code, out, _ = _run("policy", "show", "--at", "2024-01-01")
    assert code == 0
    assert "Policy 2023-09-29 of X" in out
    assert "kept at most 18 months, then deleted" in out
    assert "no rule (gap)" in out
    assert "Scraping: no liquidated-damages clause." in out
    code, out, _ = _run("policy", "show", "--at", "2024-11-15T00:00:00Z")
    assert code == 0
    assert "Policy 2024-11-15 of X" in out
    assert "ai_training_third_party" in out
    assert "Scraping more than 1,000,000 posts in any 24 hours costs USD 15,000" in out
    assert "within 30 days" in out


def test_show_json_shape() -> None:
    code, out, _ = _run("policy", "show", "--at", "2024-11-15T01:00:00+01:00", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["at"] == "2024-11-15T00:00:00Z"
    assert report["version"]["version"] == "2024-11-15"
    assert report["retention_gaps"] == []
    assert report["version"]["scraping"]["window"] == "PT24H"
    assert report["version"]["scraping"]["amount_per_million"] == "15000"
    assert report["version"]["retention"]["profile"]["while_account_active"] is True
    purpose = report["version"]["purposes"][0]
    assert purpose["region_defaults"] == {"EU": "deny", "EEA": "deny", "UK": "deny"}
    assert report["file"] == str(default_policy_path())


def test_show_exit_codes(tmp_path: Path) -> None:
    code, _, err = _run("policy", "show", "--at", "2020-01-01")
    assert code == 1
    assert "no policy version is in force at 2020-01-01T00:00:00Z" in err
    for bad in ("2024-11-15T00:00:00", "yesterday", "2024-13-01"):
        code, _, err = _run("policy", "show", "--at", bad)
        assert code == 2, bad
        assert "--at:" in err
    Path("bad.yaml").write_text(BAD)
    code, _, err = _run("policy", "show", "--file", "bad.yaml")
    assert code == 2
    assert "bad.yaml:8:" in err


def test_show_uses_the_configured_policy_file(monkeypatch: pytest.MonkeyPatch) -> None:
    text = default_policy_path().read_text().replace("platform: X", "platform: Elsewhere")
    Path("mine.yaml").write_text(text)
    monkeypatch.setenv("CONSENTRY_POLICY_FILE", "mine.yaml")
    code, out, _ = _run("policy", "show")
    assert code == 0
    assert "of Elsewhere" in out


def test_diff_sentences_and_json() -> None:
    code, out, _ = _run("policy", "diff", "2023-09-29", "2024-11-15")
    assert code == 0
    assert "Changes from 2023-09-29 to 2024-11-15:" in out
    assert (
        "• Profile data is no longer limited to 18 months; it is now kept while the account "
        "is active." in out
    )
    code, out, _ = _run("policy", "diff", "2024-11-15", "2024-11-15")
    assert code == 0
    assert "No changes." in out
    code, out, _ = _run(
        "policy", "diff", "2023-09-29", "2024-11-15", "--json", "--file", str(default_policy_path())
    )
    assert code == 0
    report = json.loads(out)
    assert (report["from"], report["to"]) == ("2023-09-29", "2024-11-15")
    assert set(report["changes"][0]) == {"kind", "subject", "sentence"}
    assert report["changes"][-1]["kind"] == "scraping_added"


def test_diff_unknown_version_exits_2() -> None:
    code, _, err = _run("policy", "diff", "2023-09-29", "2030-01-01")
    assert code == 2
    assert "no version '2030-01-01'; the file has 2023-09-29, 2024-11-15" in err
