"""A home whose lake is on S3 (`CONSENTRY_LAKE_URI=s3://…`, SeaweedFS in the tests): import,
delivery, revocation, receipts, scraping assessment, the doctor and the lake commands run
against it, and nothing lands in the home's local lake folder."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from consentry.engine import Lake
from consentry.settings import Settings
from tests.delivery.conftest import run_cli
from tests.killed import cli_killed_at

TABLES = ["access_events", "consent_events", "delivery_lineage", "entities", "posts", "users"]


def test_the_demo_cycle_runs_on_an_s3_lake(
    s3_lake_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONSENTRY_LAKE_URI", s3_lake_uri)
    home = tmp_path / "home"
    assert run_cli(home, "init").exit_code == 0
    generated = run_cli(
        home, "demo", "generate", "--users", "300", "--posts", "3000",
        "--access-events", "2000", "--seed", "3",
    )  # fmt: skip
    assert generated.exit_code == 0, generated.output
    cycle = run_cli(home, "demo", "cycle", "--json")
    assert cycle.exit_code == 0, cycle.output
    report = json.loads(cycle.stdout)
    assert report["delivered_posts"] > 0
    assert report["confirmed"] > 0
    assert report["assessment_id"]
    assert report["revocations_new"] > 0
    settings = Settings.from_env(home)
    lake = Lake.of(settings)
    assert lake.remote
    assert lake.tables() == TABLES
    assert not list((home / "lake").rglob("*.parquet")), "nothing in the local lake folder"
    doctor = run_cli(home, "doctor", "--json")
    assert doctor.exit_code == 0, doctor.output
    assert json.loads(doctor.stdout)["ok"]
    refused = run_cli(home, "deliver", "demo-ai-lab", "--engine", "spark")
    assert refused.exit_code == 2
    assert "use --engine duckdb" in refused.stderr
    history = json.loads(run_cli(home, "lake", "history", "delivery_lineage", "--json").stdout)
    assert [v["readable"] for v in history["versions"]] == [True]
    assert run_cli(home, "lake", "optimize", "--json").exit_code == 0
    vacuum = run_cli(home, "lake", "vacuum", "--grace-hours", "0", "--json")
    assert vacuum.exit_code == 0, vacuum.output
    assert run_cli(home, "doctor").exit_code == 0


def test_an_import_killed_between_upload_and_commit_is_committed_once_by_recovery(
    s3_lake_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL (failpoint `lake.uploaded`) after an import's parts reached S3 and before the
    Delta commit: no version lists them; the next command's recovery commits them once, and
    the local staging copy goes."""
    monkeypatch.setenv("CONSENTRY_LAKE_URI", s3_lake_uri)
    home = tmp_path / "home"
    assert run_cli(home, "init").exit_code == 0
    first, second = tmp_path / "users-1.csv", tmp_path / "users-2.csv"
    header = "user_id,created_at,region,birth_date,protected,deactivated_at,deleted_at\n"
    first.write_text(header + "u1,2024-01-01T00:00:00Z,US,1980-01-01,false,,\n", encoding="utf-8")
    second.write_text(header + "u2,2024-02-01T00:00:00Z,FR,1990-01-01,false,,\n", encoding="utf-8")
    assert run_cli(home, "import", "users", str(first)).exit_code == 0
    lake = Lake.of(Settings.from_env(home))
    version = lake.version("users")
    assert version is not None
    cli_killed_at("lake.uploaded", home, "import", "users", str(second))
    assert lake.version("users") == version, "nothing committed"
    (token,) = lake.staged_tokens("users")
    uploaded = lake.filesystem.get_file_info(
        pafs.FileSelector(f"{s3_lake_uri.removeprefix('s3://')}/users/data-{token}")
    )
    assert uploaded, "the parts are on S3, listed by no version"
    assert sorted(lake.read_arrow("users")["user_id"].to_pylist()) == ["u1"]

    recovered = run_cli(home, "recover", "--json")
    assert recovered.exit_code == 0, recovered.output
    assert lake.version("users") == version + 1
    assert sorted(lake.read_arrow("users")["user_id"].to_pylist()) == ["u1", "u2"]
    assert lake.staged_tokens("users") == []
    assert not any((home / "lake").rglob("*.parquet")), "no local copy is left"
    assert run_cli(home, "recover", "--json").exit_code == 0
    assert lake.version("users") == version + 1, "committed once"
    doctor = run_cli(home, "doctor", "--json")
    assert doctor.exit_code == 0, doctor.output
