"""`consentry revocations LICENSEE`, `revocations list` and `revocations overdue`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from consentry.store import open_store
from consentry.store.models import RevocationRow
from tests.delivery.conftest import run_cli
from tests.revocation.conftest import RevocationHome


def test_licensee_name_runs_the_job_and_lists(
    revocation_home: tuple[RevocationHome, dict[str, Any]],
) -> None:
    home, manifest = revocation_home
    result = run_cli(home.settings.home, "revocations", "open", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["licensee"] == "open"
    assert report["revoked"] == 2
    assert report["new"] == 2
    assert {r["reason"] for r in report["revocations"]} == {"post_deleted", "author_deactivated"}
    for row in report["revocations"]:
        assert set(row) == {
            "record_id", "delivery_ids", "reason", "since", "revocation_id", "revoked_at",
            "due_at", "status", "new",
        }  # fmt: skip
        assert row["delivery_ids"] == [manifest["delivery_id"]]
    again = run_cli(home.settings.home, "revocations", "list", "open", "--json")
    assert json.loads(again.stdout)["new"] == 0
    text = run_cli(home.settings.home, "revocations", "open")
    assert text.exit_code == 0
    assert "2 revoked records (0 new)" in text.stdout


def test_at_in_the_past_sees_no_later_delivery(
    revocation_home: tuple[RevocationHome, dict[str, Any]],
) -> None:
    home, _ = revocation_home
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    result = run_cli(home.settings.home, "revocations", "open", "--at", yesterday, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["revocations"] == []


def test_bad_input_exits_2(revocation_home: tuple[RevocationHome, dict[str, Any]]) -> None:
    home, _ = revocation_home
    bad_at = run_cli(home.settings.home, "revocations", "open", "--at", "soon")
    assert bad_at.exit_code == 2
    assert "--at" in bad_at.stderr
    future = run_cli(home.settings.home, "revocations", "open", "--at", "2199-01-01")
    assert future.exit_code == 2
    assert "future" in future.stderr
    unknown = run_cli(home.settings.home, "revocations", "nobody")
    assert unknown.exit_code == 2
    assert "no licensee named 'nobody'" in unknown.stderr


def test_overdue_lists_revocations_past_their_deadline(
    revocation_home: tuple[RevocationHome, dict[str, Any]],
) -> None:
    home, _ = revocation_home
    assert run_cli(home.settings.home, "revocations", "open").exit_code == 0
    none = json.loads(run_cli(home.settings.home, "revocations", "overdue", "--json").stdout)
    assert none["overdue"] == 0
    assert none["licensees"] == []
    quiet = run_cli(home.settings.home, "revocations", "overdue")
    assert "no overdue revocations" in quiet.stdout
    with open_store(home.settings.resolved_database_url) as store, store.session() as session:
        first = session.scalar(sa.select(sa.func.min(RevocationRow.seq)))
        session.execute(
            sa.update(RevocationRow)
            .where(RevocationRow.seq == first)
            .values(
                revoked_at=datetime.now(UTC) - timedelta(days=35),
                due_at=datetime.now(UTC) - timedelta(days=5),
            )
        )
    report = json.loads(run_cli(home.settings.home, "revocations", "overdue", "--json").stdout)
    assert report["overdue"] == 1
    (entry,) = report["licensees"]
    assert entry["licensee"] == "open"
    assert entry["overdue"] == 1
    assert entry["revocations"][0]["days_overdue"] == 5
    text = run_cli(home.settings.home, "revocations", "overdue")
    assert "1 overdue revocation at" in text.stdout
    assert "open" in text.stdout
