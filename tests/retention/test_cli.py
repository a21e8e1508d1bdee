"""`consentry retention …`, `consentry hold …` and `consentry report processing` through the
real Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consentry.cli import common
from tests.delivery.conftest import LakeHome, run_cli


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.console, "width", 250)
    monkeypatch.setattr(common.err_console, "width", 250)


def test_hold_commands(shared_world: LakeHome) -> None:
    home = shared_world.settings.home
    result = run_cli(
        home, "hold", "add", "--matter", "Doe v X", "--reason", "claim", "--user", "u-del", "--json"
    )
    assert result.exit_code == 0, result.output
    hold = json.loads(result.stdout)
    assert (hold["scope"], hold["target"], hold["state"]) == ("user", "u-del", "active")
    # Exactly one of --user, --entity, --category.
    both = run_cli(
        home, "hold", "add", "--matter", "M", "--reason", "R", "--user", "a", "--entity", "b"
    )
    assert both.exit_code == 2
    assert "exactly one" in both.stderr
    none = run_cli(home, "hold", "add", "--matter", "M", "--reason", "R")
    assert none.exit_code == 2
    bad = run_cli(home, "hold", "add", "--matter", "M", "--reason", "R", "--category", "dms")
    assert bad.exit_code == 2
    assert "unknown category 'dms'" in bad.stderr
    until = run_cli(
        home,
        "hold",
        "add",
        "--matter",
        "M",
        "--reason",
        "R",
        "--category",
        "audit",
        "--until",
        "2099-01-01",
    )
    assert until.exit_code == 0, until.output
    listed = json.loads(run_cli(home, "hold", "list", "--active", "--json").stdout)
    assert [h["target"] for h in listed] == ["u-del", "audit"]
    text = run_cli(home, "hold", "list").stdout
    assert "Doe v X" in text
    assert "user u-del" in text
    # The plan now holds u-del's post and profile.
    plan = json.loads(run_cli(home, "retention", "plan", "--at", "2026-01-01", "--json").stdout)
    posts = next(e for e in plan["categories"] if e["category"] == "posts")
    assert posts["held_by"] == {hold["id"]: 1}
    released = run_cli(home, "hold", "release", hold["id"], "--json")
    assert released.exit_code == 0
    assert json.loads(released.stdout)["state"] == "released"
    again = run_cli(home, "hold", "release", hold["id"])
    assert again.exit_code == 1
    assert "not active" in again.stderr
    assert run_cli(home, "hold", "release", "hold-000000000000").exit_code == 2
    assert len(json.loads(run_cli(home, "hold", "list", "--json").stdout)) == 2


def test_plan_apply_status(world: LakeHome, tmp_path: Path) -> None:
    home = world.settings.home
    out = tmp_path / "plan.json"
    result = run_cli(
        home, "retention", "plan", "--at", "2026-01-01", "--out", str(out), "--check-owners"
    )
    assert result.exit_code == 0, result.output
    assert "posts: 3 posts to be deleted: the post was deleted" in result.stdout
    assert "1 post of accounts missing from users" in result.stdout
    assert f"consentry retention apply {out}" in result.stdout
    plan = json.loads(out.read_text())
    assert plan["owners_checked"] is True
    assert run_cli(home, "retention", "plan", "--engine", "sqlite").exit_code == 2
    assert run_cli(home, "retention", "plan", "--at", "yesterday").exit_code == 2
    result = run_cli(home, "retention", "apply", str(out), "--json")
    assert result.exit_code == 0, result.output
    purge = json.loads(result.stdout)
    assert purge["state"] == "verified"
    assert purge["results"]["revocations"] == 1
    status = json.loads(run_cli(home, "retention", "status", "--json").stdout)
    (row,) = status["purges"]
    assert (row["purge_id"], row["state"]) == (purge["purge_id"], "verified")
    assert row["evidence"]["ok"] is True
    text = run_cli(home, "retention", "status", "--limit", "5").stdout
    assert purge["purge_id"] in text
    assert "verified" in text


def test_report_processing(shared_world: LakeHome, tmp_path: Path) -> None:
    home = shared_world.settings.home
    md = run_cli(home, "report", "processing")
    assert md.exit_code == 0, md.output
    assert md.stdout.startswith("# Records of processing activities (GDPR Art. 30)")
    assert "| `posts` |" in md.stdout
    assert "kept while the account is active" in md.stdout
    assert "eu, open" in md.stdout  # the recipients of third-party AI training
    record = json.loads(run_cli(home, "report", "processing", "--format", "json").stdout)
    assert record["controller"] == "X"
    assert {r["name"] for r in record["recipients"]} == {"open", "eu"}
    assert record["time_limits"]["profile"] == "kept while the account is active"
    old = json.loads(
        run_cli(home, "report", "processing", "--format", "json", "--at", "2024-01-01").stdout
    )
    assert old["policy"]["version"] == "2023-09-29"
    assert old["time_limits"]["posts"] == "no time limit stated (gap)"
    assert old["recipients"] == []  # the licensees did not exist yet
    page = tmp_path / "ropa.html"
    result = run_cli(home, "report", "processing", "--format", "html", "--out", str(page))
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert html.startswith("<!doctype html>")
    assert "<script" not in html
    assert "Time limit" in html
    assert "Doe" not in html
    assert run_cli(home, "report", "processing", "--format", "pdf").exit_code == 2
