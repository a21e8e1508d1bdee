"""`consentry lake history|optimize|vacuum` through the real Typer app, on a small lake read
back with delta-rs's own reader as well."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from consentry.audit import SqlAuditSink
from consentry.cli import common
from consentry.engine import Lake
from consentry.settings import Settings
from consentry.store import open_store
from tests.delivery.conftest import run_cli
from tests.engine.test_lake import POSTS


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.console, "width", 250)
    monkeypatch.setattr(common.err_console, "width", 250)


@pytest.fixture
def lake(home: Path) -> Lake:
    """An initialised home whose lake's `posts` has two versions (the second drops p2)."""
    assert run_cli(home, "init").exit_code == 0
    lake = Lake(Settings(home=home).lake_dir)
    lake.write_arrow("posts", POSTS)
    lake.write_arrow("posts", POSTS.slice(1))
    return lake


def _vacuum_events(home: Path) -> list[dict[str, object]]:
    with open_store(Settings(home=home).resolved_database_url) as store, store.session() as s:
        return [e.payload for e in SqlAuditSink.read(s, event_type="lake.vacuumed")]


def test_history_lists_versions_newest_first_and_marks_vacuumed_ones(
    home: Path, lake: Lake
) -> None:
    result = run_cli(home, "lake", "history", "posts", "--json")
    assert result.exit_code == 0, result.output
    history = json.loads(result.stdout)
    assert history["table"] == "posts"
    versions = history["versions"]
    assert [(v["version"], v["operation"], v["readable"]) for v in versions] == [
        (1, "WRITE", True),
        (0, "CREATE TABLE", True),
    ]
    for v in versions:
        assert datetime.fromisoformat(v["committed_at"]).tzinfo is not None
        assert v["committed_at"].endswith("Z")
        assert len(v["token"]) == 32  # write_arrow publishes under a uuid4 hex token
    assert run_cli(home, "lake", "vacuum", "posts", "--grace-hours", "0").exit_code == 0
    after = json.loads(run_cli(home, "lake", "history", "posts", "--json").stdout)["versions"]
    assert [(v["version"], v["readable"]) for v in after] == [(1, True), (0, False)]
    text = run_cli(home, "lake", "history", "posts")
    assert text.exit_code == 0, text.output
    assert "posts: 2 versions" in text.stdout
    assert "CREATE TABLE" in text.stdout
    assert [line.split()[-2] for line in text.stdout.splitlines() if "│ WRITE" in line] == ["yes"]
    assert [line.split()[-2] for line in text.stdout.splitlines() if "CREATE TABLE" in line] == [
        "no"
    ]


def test_optimize_leaves_the_same_rows_in_fewer_files(home: Path, lake: Lake) -> None:
    for index in range(3):
        token = uuid.uuid4().hex
        staged = lake.stage("posts", token, append=True)
        row = POSTS.slice(0, 1).set_column(0, "post_id", pa.array([f"a{index}"]))
        pq.write_table(row, staged / "part-000000.parquet")
        assert lake.publish("posts", token)
    table_dir = lake.root / "posts"
    before = DeltaTable(str(table_dir))
    rows = before.to_pyarrow_table().sort_by("post_id")
    assert len(before.file_uris()) == 4

    result = run_cli(home, "lake", "optimize", "--json")  # every table: here only posts
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "tables": [{"table": "posts", "files_added": 1, "files_removed": 4, "version": 5}]
    }
    after = DeltaTable(str(table_dir))
    assert after.version() == 5
    assert len(after.file_uris()) == 1
    assert after.to_pyarrow_table().sort_by("post_id").equals(rows)
    assert lake.read_arrow("posts", version=4).num_rows == 4, "time travel still reaches it"

    again = run_cli(home, "lake", "optimize", "posts")
    assert again.exit_code == 0, again.output
    assert "Optimized" in again.stdout
    assert "posts" in again.stdout


def test_vacuum_removes_the_superseded_files_and_records_one_audit_event(
    home: Path, lake: Lake
) -> None:
    old = {Path(f) for f in lake.files("posts", version=0)}
    live = {Path(f) for f in lake.files("posts")}
    assert old
    assert not old & live
    kept = run_cli(home, "lake", "vacuum", "posts", "--json")  # the default grace: 7 days
    assert kept.exit_code == 0, kept.output
    assert json.loads(kept.stdout)["tables"] == [
        {"table": "posts", "files_removed": 0, "versions_removed": []}
    ]
    assert all(path.exists() for path in old)
    assert _vacuum_events(home) == [], "a vacuum that removed nothing is not audited"

    result = run_cli(home, "lake", "vacuum", "--grace-hours", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "grace_hours": 0,
        "tables": [{"table": "posts", "files_removed": len(old), "versions_removed": [0]}],
        "purges": [],
    }
    assert not any(path.exists() for path in old)
    assert all(path.exists() for path in live)
    assert DeltaTable(str(lake.root / "posts")).to_pyarrow_table()["post_id"].to_pylist() == ["p1"]
    events = _vacuum_events(home)
    assert len(events) == 1
    event = {k: v for k, v in events[0].items() if k != "request_id"}
    assert event == {
        "table": "posts",
        "files_removed": len(old),
        "versions_removed": [0],
        "grace_hours": 0,
    }
    assert run_cli(home, "audit", "verify").exit_code == 0

    text = run_cli(home, "lake", "vacuum", "posts", "--grace-hours", "0")
    assert text.exit_code == 0, text.output
    assert "Vacuumed" in text.stdout
    assert len(_vacuum_events(home)) == 1, "nothing left to remove, nothing recorded"


def test_unknown_or_bad_tables_and_a_negative_grace_are_bad_input(home: Path, lake: Lake) -> None:
    for args in (
        ("history", "post"),
        ("optimize", "posts", "nope"),
        ("vacuum", "nope", "--grace-hours", "0"),
    ):
        result = run_cli(home, "lake", *args)
        assert result.exit_code == 2, (args, result.output)
        missing = args[1] if args[0] != "optimize" else "nope"
        assert f"no table {missing!r}" in result.stderr
    hint = run_cli(home, "lake", "history", "post")
    assert "did you mean 'posts'?" in hint.stderr
    bad = run_cli(home, "lake", "vacuum", "Posts", "../posts")
    assert bad.exit_code == 2
    assert "bad table name 'Posts'" in bad.stderr
    assert "bad table name '../posts'" in bad.stderr
    negative = run_cli(home, "lake", "vacuum", "--grace-hours", "-1")
    assert negative.exit_code == 2
    assert "--grace-hours" in negative.stderr
    assert len(lake.files("posts", version=0)) == 1
    assert all(Path(path).exists() for path in lake.files("posts", version=0))
    assert _vacuum_events(home) == []
