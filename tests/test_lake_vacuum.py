"""`consentry lake vacuum` is a job: a vacuum killed between deleting a table's files and
appending its `lake.vacuumed` event gets that event from recovery, with the files the killed
process deleted (tests/jobs/test_faults.py kills it at every step, on both stores)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import sqlalchemy as sa

from consentry.audit import SqlAuditSink
from consentry.cli.admin import init_home
from consentry.engine import Lake
from consentry.intake import import_table
from consentry.lake_vacuum import vacuum_lake
from consentry.settings import Settings
from consentry.store import open_store
from consentry.store.models import JobRow
from tests.delivery.conftest import run_cli
from tests.killed import cli_killed_at

_T = pa.timestamp("us", tz="UTC")


def _entities(credential: str) -> pa.Table:
    return pa.table(
        {
            "credential": [credential],
            "entity": ["crawler-co"],
            "valid_from": pa.array([None], _T),
            "valid_to": pa.array([None], _T),
        }
    )


def _home(tmp_path: Path) -> Settings:
    """A home whose `entities` table has superseded files (three merges)."""
    settings = Settings(home=tmp_path / "home")
    init_home(settings)
    for n in range(3):
        import_table(settings, "entities", data=_entities(f"key-{n}"), origin="test:entities")
    return settings


def _vacuum_events(settings: Settings) -> list[dict[str, object]]:
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        return [e.payload for e in SqlAuditSink.read(session, event_type="lake.vacuumed")]


def test_a_vacuum_killed_after_deleting_is_recorded_by_recovery(tmp_path: Path) -> None:
    settings = _home(tmp_path)
    lake = Lake.of(settings)
    planned = lake.plan_vacuum("entities").files
    readable = [v.version for v in lake.history("entities") if v.readable]
    assert len(planned) == 2
    cli_killed_at(
        "vacuum.deleted", settings.home, "lake", "vacuum", "entities", "--grace-hours", "0"
    )
    # The files went, the event did not: the gap the job closes.
    assert not lake.plan_vacuum("entities").files
    assert _vacuum_events(settings) == []

    recovered = run_cli(settings.home, "recover", "--json")
    assert recovered.exit_code == 0, recovered.stdout
    (event,) = _vacuum_events(settings)
    assert event["table"] == "entities"
    assert event["files_removed"] == len(planned)
    assert event["versions_removed"] == [v for v in sorted(readable) if v < max(readable)]
    assert event["grace_hours"] == 0
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        (job,) = session.scalars(sa.select(JobRow).where(JobRow.kind == "vacuum")).all()
        assert (job.state, job.step) == ("done", "vacuum.recorded")
    # Recovery is not a second vacuum: running it again records nothing more.
    assert run_cli(settings.home, "recover", "--json").exit_code == 0
    assert len(_vacuum_events(settings)) == 1


def test_a_vacuum_that_removes_nothing_records_no_event(tmp_path: Path) -> None:
    settings = _home(tmp_path)
    (first,) = vacuum_lake(settings, ["entities"], grace_hours=0)
    assert len(first.files_removed) == 2
    (again,) = vacuum_lake(settings, ["entities"], grace_hours=0)
    assert (again.files_removed, again.versions_removed) == ((), ())
    assert len(_vacuum_events(settings)) == 1
    assert vacuum_lake(settings, [], grace_hours=0) == []
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        jobs = session.scalars(sa.select(JobRow.state).where(JobRow.kind == "vacuum")).all()
    assert jobs == ["done", "done"]
