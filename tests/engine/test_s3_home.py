"""A home whose lake is on S3 (`CONSENTRY_LAKE_URI=s3://…`, SeaweedFS in the tests): import,
delivery, revocation, receipts, scraping assessment, the doctor and the lake commands run
against it, and nothing lands in the home's local lake folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consentry.engine import Lake
from consentry.settings import Settings
from tests.delivery.conftest import run_cli

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
