"""Fault injection: every job is killed (SIGKILL, in a separate process) at every one of its
named steps, on SQLite and on PostgreSQL; the next command recovers it and the doctor finds
every invariant holding (docs/invariants.md).

A killed job is run by a child of a fork server that imported Consentry once, with
`CONSENTRY_FAILPOINTS` naming the step, so each kill costs the job's own work, not an
interpreter start. After the kill the same command runs again in this process: it recovers
the interrupted job first (rolled back before its commit step, forward from it), then does
its own work. Each case also checks which way the job went: its result is visible exactly
when the kill came at or after its commit.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentry.audit import SqlAuditSink
from consentry.doctor import run_doctor
from consentry.intake import import_table
from consentry.jobs import FAILPOINTS_ENV, JOB_STEPS
from consentry.retention import compute_plan
from consentry.schema import arrow_schema
from consentry.settings import Settings
from consentry.store import open_store
from consentry.store.models import ConsentEventRow, JobRow, RetentionPurge, ScrapingAssessmentRow
from tests.delivery.conftest import LakeHome, make_lake_home, run_cli
from tests.services import postgres_schema

COMMIT_STEP = {
    "import": "import.committed",
    "deliver": "deliver.committed",
    "revoke": "revoke.committed",
    "retention": "retention.planned",
    "assess": "assess.committed",
    "vacuum": "vacuum.planned",
}
"""The step at which each kind of job becomes visible (its commit)."""

CASES = [(kind, step) for kind, steps in JOB_STEPS.items() for step in steps] + [
    # A purge rewrites posts, then users: kill it at the second table too.
    ("retention", "retention.lake_staged@2"),
    ("retention", "retention.lake_published@2"),
]
AT = datetime(2026, 1, 1, tzinfo=UTC)
_T = pa.timestamp("us", tz="UTC")


def _forkserver() -> Any:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["consentry.cli.main", "consentry.recovery", "tests.jobs"])
    return context


_CONTEXT = _forkserver()


def _killed_child(home: str, database_url: str | None, args: list[str], point: str) -> None:
    """Run `consentry ARGS` with the failpoint set (in the fork server's child)."""
    os.environ[FAILPOINTS_ENV] = point
    if database_url:
        os.environ["CONSENTRY_DATABASE_URL"] = database_url
    from consentry.cli.main import app

    app(["--home", home, *args], standalone_mode=False)


@dataclass
class FaultHome:
    """A world home (its store on one backend) that the cases keep adding to."""

    home: LakeHome
    scratch: Path
    cases: int = 0

    @property
    def settings(self) -> Settings:
        return self.home.settings

    def cli(self, *args: str) -> Any:
        if self.settings.database_url:
            os.environ["CONSENTRY_DATABASE_URL"] = self.settings.database_url
        try:
            return run_cli(self.settings.home, *args)
        finally:
            os.environ.pop("CONSENTRY_DATABASE_URL", None)

    def scalar(self, query: Any) -> Any:
        with open_store(self.settings.resolved_database_url) as store, store.session() as s:
            return s.scalar(query)


def _world(settings: Settings, scratch: Path) -> FaultHome:
    home = make_lake_home(settings)
    # A scraper for the assessment: 1.2M posts in a day from one credential.
    import_table(
        settings,
        "entities",
        data=pa.table(
            {
                "credential": ["key-1"],
                "entity": ["crawler-co"],
                "valid_from": pa.array([None], _T),
                "valid_to": pa.array([None], _T),
            }
        ),
        origin="test:entities",
    )
    import_table(
        settings,
        "access_events",
        data=pa.table(
            {
                "request_id": [f"r{i}" for i in range(4)],
                "ts": pa.array([datetime(2025, 3, 5, h, tzinfo=UTC) for h in (1, 5, 9, 13)], _T),
                "credential": ["key-1"] * 4,
                "posts": [300_000] * 4,
                "endpoint": ["/timeline"] * 4,
            }
        ),
        origin="test:access_events",
    )
    return FaultHome(home, scratch)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def fault_home(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultHome]:
    """One world per backend; every case of that backend adds to it."""
    root = tmp_path_factory.mktemp(f"faults-{request.param}")
    if request.param == "sqlite":
        yield _world(Settings(home=root / "home"), root)
        return
    with postgres_schema() as url:
        yield _world(Settings(home=root / "home", database_url=url), root)


# --- what each job does, and how to see that it happened -------------------------------------


def _import_args(fh: FaultHome) -> tuple[list[str], Callable[[], bool]]:
    """A new opt-out of u-us in a file: imported when the ledger holds its event."""
    event_id = f"fault-{fh.cases}"
    path = fh.scratch / f"{event_id}.parquet"
    pq.write_table(
        pa.table(
            {
                "event_id": [event_id],
                "user_id": ["u-us"],
                "purpose": ["ai_training_third_party"],
                "choice": ["deny"],
                "at": pa.array([datetime(2025, 2, 1, tzinfo=UTC)], _T),
                "source": ["settings"],
            },
            schema=arrow_schema("consent_events"),
        ),
        path,
    )

    def happened() -> bool:
        found = fh.scalar(
            sa.select(sa.func.count())
            .select_from(ConsentEventRow)
            .where(ConsentEventRow.event_id == event_id)
        )
        in_lake = event_id in fh.home.lake.read_arrow("consent_events")["event_id"].to_pylist()
        assert bool(found) == in_lake, "the lake and the ledger disagree"
        return bool(found)

    return ["import", "consent_events", str(path)], happened


def _counter(fh: FaultHome, count: Callable[[], int]) -> Callable[[], bool]:
    before = count()
    return lambda: count() > before


def _deliver_args(fh: FaultHome) -> tuple[list[str], Callable[[], bool]]:
    def deliveries() -> int:
        return len(fh.home.visible())

    return ["deliver", "open", "--as-of", "2025-03-01"], _counter(fh, deliveries)


def _events_of(fh: FaultHome, event_type: str) -> int:
    with open_store(fh.settings.resolved_database_url) as store, store.session() as session:
        return len(SqlAuditSink.read(session, event_type=event_type))


def _revoke_args(fh: FaultHome) -> tuple[list[str], Callable[[], bool]]:
    return ["revocations", "open"], _counter(fh, lambda: _events_of(fh, "revocation.issued"))


def _assess_args(fh: FaultHome) -> tuple[list[str], Callable[[], bool]]:
    def recorded() -> int:
        return int(fh.scalar(sa.select(sa.func.count()).select_from(ScrapingAssessmentRow)))

    return ["scraping", "assess"], _counter(fh, recorded)


def _retention_args(fh: FaultHome) -> tuple[list[str], Callable[[], bool]]:
    """A new account deleted before AT with two posts (one of them delivered): the plan at
    AT purges its posts and its profile."""
    user = f"gone-{fh.cases}"
    gone = datetime(2025, 2, 15, tzinfo=UTC)
    import_table(
        fh.settings,
        "users",
        data=pa.table(
            {
                "user_id": [user],
                "created_at": pa.array([datetime(2024, 1, 1, tzinfo=UTC)], _T),
                "region": ["US"],
                "birth_date": pa.array([date(1980, 1, 1)], pa.date32()),
                "protected": [False],
                "deactivated_at": pa.array([None], _T),
                "deleted_at": pa.array([gone], _T),
            }
        ),
        origin="test:users",
    )
    import_table(
        fh.settings,
        "posts",
        data=pa.table(
            {
                "post_id": [f"{user}-p1", f"{user}-p2"],
                "author_id": [user, user],
                "created_at": pa.array([datetime(2024, 12, 1, tzinfo=UTC)] * 2, _T),
                "text": ["one", "two"],
                "visibility": ["public", "public"],
                "lang": ["en", "en"],
                "deleted_at": pa.array([None, None], _T),
            }
        ),
        origin="test:posts",
    )
    # Delivered while the account still existed: the purge must revoke it.
    fh.home.deliver("open", as_of=datetime(2025, 2, 1, tzinfo=UTC))
    plan = compute_plan(fh.settings, at=AT)
    path = fh.scratch / f"plan-{fh.cases}.json"
    path.write_text(json.dumps(plan.as_dict()), encoding="utf-8")
    purge_count = int(fh.scalar(sa.select(sa.func.count()).select_from(RetentionPurge)))

    def purged() -> bool:
        rows = int(fh.scalar(sa.select(sa.func.count()).select_from(RetentionPurge)))
        return rows > purge_count

    return ["retention", "apply", str(path)], purged


def _vacuum_args(fh: FaultHome) -> tuple[list[str], Callable[[], bool]]:
    """A new credential merged into `entities` supersedes the table's files: the vacuum
    (grace 0) deletes them. Done when their `lake.vacuumed` event is in the audit log and
    no superseded file is left (recovery may have deleted none: the killed process had)."""
    import_table(
        fh.settings,
        "entities",
        data=pa.table(
            {
                "credential": [f"key-v{fh.cases}"],
                "entity": ["vacuum-co"],
                "valid_from": pa.array([None], _T),
                "valid_to": pa.array([None], _T),
            }
        ),
        origin="test:entities",
    )
    lake = fh.home.lake
    superseded = lake.plan_vacuum("entities").files
    assert superseded, "the merge left no superseded file to vacuum"
    events = _counter(fh, lambda: _events_of(fh, "lake.vacuumed"))

    def vacuumed() -> bool:
        if not events():
            return False
        assert not lake.plan_vacuum("entities").files, "an event without its vacuum"
        return True

    return ["lake", "vacuum", "entities", "--grace-hours", "0"], vacuumed


ARGS = {
    "import": _import_args,
    "deliver": _deliver_args,
    "revoke": _revoke_args,
    "retention": _retention_args,
    "assess": _assess_args,
    "vacuum": _vacuum_args,
}


def _kill_rerun_and_check(fh: FaultHome, kind: str, point: str) -> None:
    fh.cases += 1
    args, happened = ARGS[kind](fh)
    child = _CONTEXT.Process(
        target=_killed_child,
        args=(str(fh.settings.home), fh.settings.database_url, args, point),
    )
    child.start()
    child.join(300)
    assert child.exitcode == -9, f"{point}: the job was not killed (exit {child.exitcode})"
    # The next command recovers the job first, then does its own work.
    step = point.partition("@")[0]
    steps = JOB_STEPS[kind]
    committed = steps.index(step) >= steps.index(COMMIT_STEP[kind])
    # The kill's own outcome, seen by `consentry recover` before anything reruns.
    result = fh.cli("recover", "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    assert happened() == committed, f"{point}: rolled the wrong way"
    if kind != "retention":  # a purge's plan is spent once it ran: there is nothing to rerun
        rerun = fh.cli(*args)
        assert rerun.exit_code == 0, rerun.stdout + rerun.stderr
        assert happened()
    report = run_doctor(fh.settings)
    assert report.ok, f"after a kill at {point}: {report.first_violation}"
    pending = fh.scalar(
        sa.select(sa.func.count())
        .select_from(JobRow)
        .where(JobRow.state.not_in(["done", "rolled_back"]))
    )
    assert pending == 0


@pytest.mark.postgres
@pytest.mark.parametrize(("kind", "point"), CASES, ids=[p for _, p in CASES])
def test_every_job_killed_at_every_step_is_recovered(
    fault_home: FaultHome, kind: str, point: str
) -> None:
    _kill_rerun_and_check(fault_home, kind, point)


@pytest.fixture(scope="module")
def random_home(tmp_path_factory: pytest.TempPathFactory) -> FaultHome:
    root = tmp_path_factory.mktemp("faults-random")
    return _world(Settings(home=root / "home"), root)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(case=st.sampled_from(CASES), repeat=st.integers(min_value=1, max_value=2))
def test_random_kill_points_keep_every_invariant(
    random_home: FaultHome, case: tuple[str, str], repeat: int
) -> None:
    kind, point = case
    if "@" not in point and point.startswith("retention.lake_"):
        point = f"{point}@{repeat}"
    _kill_rerun_and_check(random_home, kind, point)
