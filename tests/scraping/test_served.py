"""The evidence pack states the signals served during each billed window: robots.txt rules
in force and the share of authors who refused AI training at the window's start."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
from typer.testing import CliRunner

from consentry.cli.admin import init_home
from consentry.cli.main import app
from consentry.ledger.service import Evidence
from consentry.ledger.sync import ledger_for
from consentry.policy import Choice
from consentry.scraping.served import signals_served
from consentry.settings import Settings
from tests.factories import users_table

runner = CliRunner()
CHARLIE_WINDOW = datetime(2025, 3, 7, 18, tzinfo=UTC)  # the demo's one billed window


def _population(settings: Settings) -> None:
    """Five accounts; at the window start four exist and two refuse AI training:
    `out` opted out before, `fr` is opted out by the EU region default; `late` opts out
    after the window started (not counted), `new` signs up after it (not an author yet)."""
    init_home(settings)
    users = users_table(
        [
            ("out", "US", date(1980, 1, 1)),
            ("fr", "FR", date(1980, 1, 1)),
            ("ok", "US", date(1980, 1, 1)),
            ("late", "US", date(1980, 1, 1)),
            ("new", "US", date(1980, 1, 1)),
        ]
    )
    created = users["created_at"].to_pylist()
    created[-1] = datetime(2025, 3, 10, tzinfo=UTC)
    users = users.set_column(
        users.schema.get_field_index("created_at"),
        "created_at",
        pa.array(created, pa.timestamp("us", tz="UTC")),
    )
    ledger = ledger_for(settings)
    try:
        ledger.sync_subjects(users)
        for user, at in (("out", datetime(2025, 1, 1)), ("late", datetime(2025, 3, 8))):
            ledger.record(
                user,
                "ai_training_third_party",
                Choice.DENY,
                source="settings",
                evidence=Evidence(),
                at=at.replace(tzinfo=UTC),
            )
    finally:
        ledger.store.close()


def test_the_pack_states_robots_rules_and_the_share_at_the_window_start(
    settings: Settings, demo_dir: Path, tmp_path: Path
) -> None:
    _population(settings)
    out = tmp_path / "pack"
    result = runner.invoke(
        app,
        [
            "--home",
            str(settings.home),
            "scraping",
            "evidence",
            "scraper-charlie",
            "--events",
            str(demo_dir / "access_events.parquet"),
            "--entities",
            str(demo_dir / "entities.parquet"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.stderr
    document = json.loads((out / "evidence.json").read_text())
    (served,) = document["signals_served"]
    assert served["window_start"] == "2025-03-07T18:00:00Z"
    assert served["policy_version"] == "2024-11-15"
    assert (served["authors"], served["refused_ai_training"]) == (4, 2)
    assert served["share_refused"] == 0.5
    assert "Content-Usage: / train-ai=n, search=y" in served["robots_txt"]
    html = (out / "report.html").read_text()
    assert "Signals served during the billed windows" in html
    assert '<td class="share">50.0%</td>' in html
    assert "Content-Usage: / train-ai=n, search=y" in html
    assert "# Policy version in force: 2024-11-15" in html


def test_one_resolution_per_distinct_start_in_the_order_asked(settings: Settings) -> None:
    _population(settings)
    later = datetime(2025, 3, 9, tzinfo=UTC)
    ledger = ledger_for(settings)
    try:
        served = signals_served(ledger, [later, CHARLIE_WINDOW, later], "https://x.example")
    finally:
        ledger.store.close()
    assert [s.window_start for s in served] == [later, CHARLIE_WINDOW, later]
    # By 2025-03-09 `late` has opted out too; `new` has not signed up yet.
    assert [(s.authors, s.refused) for s in served] == [(4, 3), (4, 2), (4, 3)]
    assert served[0].robots_txt is not None
    assert "License: https://x.example/license.xml" in served[0].robots_txt
