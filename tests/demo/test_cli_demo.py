"""`consentry demo generate` and `consentry demo load` against a real home (lake + SQLite)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from consentry.cli.main import app
from consentry.demo import TABLE_ORDER, read_facts
from consentry.engine import Lake
from consentry.store import open_store

SIZES = ["--users", "400", "--posts", "3000", "--access-events", "1500", "--seed", "3"]


def run(home: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--home", str(home), *args])
    return result.exit_code, result.stdout, result.stderr


def test_generate_loads_the_lake_and_logs_each_import(home: Path) -> None:
    assert run(home, "init")[0] == 0
    code, out, err = run(home, "demo", "generate", *SIZES, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert Path(report["out"]) == home / "demo"
    facts = read_facts(home / "demo")
    assert report["facts"]["rows"] == facts.rows
    assert [r["table"] for r in report["loaded"]] == list(TABLE_ORDER)
    lake = Lake(home / "lake")
    for table in TABLE_ORDER:
        assert lake.row_count(table) == facts.rows[table], table
    with open_store(f"sqlite:///{home / 'consentry.db'}") as store:
        runs = store.recent_imports(limit=10)
    assert sorted(r.table for r in runs) == sorted(TABLE_ORDER)
    assert {r.id for r in runs} == {r["run_id"] for r in report["loaded"]}

    # Loading again replaces every row by key and adds none.
    code, out, err = run(home, "demo", "load", "--json")
    assert code == 0, err
    again = json.loads(out)
    assert [r["rows_new"] for r in again] == [0] * 5
    assert [r["rows_total"] for r in again] == [facts.rows[t] for t in TABLE_ORDER]


def test_generate_refuses_an_existing_directory_unless_forced(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(home, "demo", "generate", *SIZES, "--out", str(out), "--no-load")[0] == 0
    before = (out / "posts.parquet").read_bytes()
    code, _, err = run(home, "demo", "generate", *SIZES, "--out", str(out), "--no-load")
    assert code == 2
    assert "alreadyexists" in "".join(err.split())
    code, out_text, err = run(
        home, "demo", "generate", "--users", "400", "--posts", "3000", "--access-events",
        "1500", "--seed", "4", "--out", str(out), "--no-load", "--force", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out_text)["loaded"] == []
    assert (out / "posts.parquet").read_bytes() != before
    assert read_facts(out).seed == 4


def test_generate_without_an_initialised_store_fails_before_writing(home: Path) -> None:
    code, _, err = run(home, "demo", "generate", *SIZES)
    assert code == 1
    assert "consentryinit" in "".join(err.split())
    assert not (home / "demo").exists()


def test_bad_sizes_exit_2(home: Path) -> None:
    code, _, err = run(home, "demo", "generate", "--users", "5", "--no-load")
    assert code == 2
    assert "--users" in err


def test_load_names_every_missing_file(home: Path, tmp_path: Path) -> None:
    assert run(home, "init")[0] == 0
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "users.parquet").write_bytes(b"")
    code, _, err = run(home, "demo", "load", "--from", str(tmp_path / "partial"))
    assert code == 2
    flat = "".join(err.split())  # Rich wraps long lines on stderr
    for table in TABLE_ORDER[1:]:
        assert f"partial/{table}.parquet:missingdemofile" in flat
    assert Lake(home / "lake").row_counts() == {}


def test_human_output_summarises_rows_and_scrapers(home: Path, tmp_path: Path) -> None:
    code, out, err = run(
        home, "demo", "generate", *SIZES, "--out", str(tmp_path / "d"), "--no-load"
    )
    assert code == 0, err
    assert "scraper-charlie" in out
    assert "only across midnight" in out
    assert "access_events" in out
