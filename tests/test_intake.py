"""Imports into a home are all or nothing across the lake and the store: rows the control
plane refuses are bad input and change nothing, and a later opt-out always reaches the ledger
(so `consent show`, `explain` and `deliver` honour it)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DataError

from consentry.errors import BadInput
from consentry.intake import import_table
from consentry.ledger.service import ConsentLedger
from consentry.schema import arrow_schema
from consentry.settings import Settings
from consentry.store import open_store
from consentry.store.models import ImportRun, JobRow, Subject
from tests.delivery.conftest import LakeHome, make_lake_home, run_cli
from tests.retention.conftest import store_digest

_T = pa.timestamp("us", tz="UTC")


def _user(user_id: str) -> pa.Table:
    return pa.table(
        {
            "user_id": [user_id],
            "created_at": pa.array([datetime(2024, 1, 1, tzinfo=UTC)], _T),
            "region": ["US"],
            "birth_date": pa.array([date(1980, 1, 1)], pa.date32()),
            "protected": [False],
            "deactivated_at": pa.array([None], _T),
            "deleted_at": pa.array([None], _T),
        },
        schema=arrow_schema("users"),
    )


def _state(settings: Settings) -> tuple[dict[str, str], int, list[str]]:
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        runs = session.scalar(sa.select(sa.func.count()).select_from(ImportRun)) or 0
        jobs = [j.state for j in session.scalars(sa.select(JobRow))]
    return store_digest(settings), runs, jobs


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, home: Path) -> LakeHome:
    if request.param == "sqlite":
        return make_lake_home(Settings(home=home))
    url: str = request.getfixturevalue("postgres_url")
    return make_lake_home(Settings(home=home, database_url=url))


def test_rows_the_ledger_refuses_are_bad_input_and_change_nothing(
    world: LakeHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_digest, before_runs, _ = _state(world.settings)

    def refuse(self: ConsentLedger, users: pa.Table, **_: Any) -> Any:
        raise DataError("INSERT INTO subjects", {}, Exception("value out of range"))

    monkeypatch.setattr(ConsentLedger, "sync_subjects", refuse)
    with pytest.raises(BadInput, match="the control plane refused the users rows"):
        import_table(world.settings, "users", data=_user("u-new"), origin="test")
    after_digest, after_runs, jobs = _state(world.settings)
    # The lake's files (including CURRENT pointers), the database, the import log: as before.
    assert {k: v for k, v in after_digest.items() if not k.startswith("consentry.db")} == {
        k: v for k, v in before_digest.items() if not k.startswith("consentry.db")
    }
    assert after_runs == before_runs
    assert jobs[-1] == "rolled_back"
    assert "u-new" not in world.lake.read_arrow("users")["user_id"].to_pylist()


def test_a_refused_import_does_not_stop_a_later_opt_out(
    world: LakeHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before imports were one job, a users file the ledger could not take left the lake
    ahead of the ledger and every later sync failing: the next opt-out reached the lake but
    never the ledger, and `deliver` shipped that user's post."""
    with monkeypatch.context() as patch:
        patch.setattr(
            ConsentLedger,
            "sync_subjects",
            lambda *a, **k: (_ for _ in ()).throw(OverflowError("date value out of range")),
        )
        with pytest.raises(BadInput):
            import_table(world.settings, "users", data=_user("u-broken"), origin="test")
    opt_out = tmp_path / "opt-out.parquet"
    pq.write_table(
        pa.table(
            {
                "event_id": ["late-out"],
                "user_id": ["u-us"],
                "purpose": ["ai_training_third_party"],
                "choice": ["deny"],
                "at": pa.array([datetime(2025, 2, 1, tzinfo=UTC)], _T),
                "source": ["settings"],
            },
            schema=arrow_schema("consent_events"),
        ),
        opt_out,
    )
    settings = world.settings
    env = {"CONSENTRY_DATABASE_URL": settings.database_url} if settings.database_url else {}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    done = run_cli(settings.home, "import", "consent_events", str(opt_out))
    assert done.exit_code == 0, done.stderr
    shown = run_cli(settings.home, "consent", "show", "u-us", "--at", "2025-03-01", "--json")
    assert '"decision": "deny"' in shown.stdout.replace("'", '"'), shown.stdout
    explained = run_cli(
        settings.home, "explain", "p01", "--licensee", "open", "--as-of", "2025-03-01"
    )
    assert "not eligible: consent_denied" in explained.stdout, explained.stdout
    manifest = world.deliver("open")
    assert "p01" not in {r["post_id"] for r in world.lineage(manifest["delivery_id"])}


def test_postgres_refuses_an_overlong_id_and_nothing_changes(postgres_url: str, home: Path) -> None:
    world = make_lake_home(Settings(home=home, database_url=postgres_url))
    before = _state(world.settings)
    with pytest.raises(BadInput):
        import_table(world.settings, "users", data=_user("u" * 300), origin="test")
    after = _state(world.settings)
    assert after[0] == before[0]
    assert after[1] == before[1]
    with open_store(postgres_url) as store, store.session() as session:
        assert session.get(Subject, "u" * 300) is None
