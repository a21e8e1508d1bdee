"""Jobs: locks refuse a second holder while it lives and recover it once it is dead; a failure
before the commit rolls back, after it leaves the job for recovery to roll forward."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import consentry.intake  # noqa: F401 - registers the import jobs' own recoverer
from consentry.cli.admin import init_home
from consentry.jobs import (
    FAILPOINTS_ENV,
    JobBusy,
    JobRecord,
    owner_alive,
    pending_jobs,
    recover_jobs,
    register_recoverer,
    run_job,
    runner,
)
from consentry.settings import Settings
from consentry.store import open_store
from consentry.store.models import JobLockRow, JobRow


class _Marking:
    """Records what recovery did, in files (so a forked child's effects are visible)."""

    def roll_back(self, settings: Settings, job: JobRecord) -> None:
        (settings.home / f"rolled-back-{job.intent['name']}").touch()

    def roll_forward(self, settings: Settings, job: JobRecord) -> None:
        (settings.home / f"rolled-forward-{job.intent['name']}").touch()


@pytest.fixture
def ready(settings: Settings) -> Iterator[Settings]:
    """An initialised home whose import jobs are recovered by `_Marking` (restored after)."""
    init_home(settings)
    original = runner._RECOVERERS["import"]
    register_recoverer("import", _Marking())
    try:
        yield settings
    finally:
        register_recoverer("import", original)


def _fail_in_job(settings: Settings, name: str, *, commit: bool, step: str | None = None) -> None:
    with run_job(settings, "import", "users", locks=["lake:users"], intent={"name": name}) as job:
        if step is not None:
            job.step(step)
        if commit:
            with job.transaction("import.committed", commit=True):
                pass
        raise RuntimeError(f"failed {name}")


def _rows(settings: Settings) -> list[tuple[str, str]]:
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        return [(r.state, r.step) for r in session.scalars(sa.select(JobRow))]


def _locks(settings: Settings) -> list[str]:
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        return list(session.scalars(sa.select(JobLockRow.name)))


def test_a_finished_job_is_done_and_releases_its_locks(ready: Settings) -> None:
    with run_job(ready, "import", "users", locks=["lake:users"], intent={"name": "a"}) as job:
        assert _locks(ready) == ["lake:users"]
        assert owner_alive(ready, job.id)
        job.step("import.staged", rows=3)
        with job.transaction("import.committed", commit=True):
            pass
    assert _rows(ready) == [("done", "import.committed")]
    assert _locks(ready) == []
    assert not owner_alive(ready, job.id)
    assert not (ready.home / "jobs" / f"{job.id}.lock").exists()


def _start(settings: Settings, name: str) -> None:
    with run_job(settings, "import", "users", locks=["lake:users"], intent={"name": name}):
        pass


def test_a_live_holder_is_refused_not_recovered(ready: Settings) -> None:
    with (
        run_job(ready, "import", "users", locks=["lake:users"], intent={"name": "a"}),
        pytest.raises(JobBusy, match="lake:users is held by import job"),
    ):
        _start(ready, "b")
    assert sorted(state for state, _ in _rows(ready)) == ["done", "rolled_back"]
    assert not list(ready.home.glob("rolled-*"))


def test_a_failure_before_the_commit_rolls_back(ready: Settings) -> None:
    with pytest.raises(RuntimeError, match="failed c"):
        _fail_in_job(ready, "c", commit=False, step="import.staged")
    assert (ready.home / "rolled-back-c").exists()
    assert _rows(ready) == [("rolled_back", "import.staged")]
    assert _locks(ready) == []


def test_a_failure_after_the_commit_waits_for_recovery_to_roll_forward(ready: Settings) -> None:
    with pytest.raises(RuntimeError, match="failed d"):
        _fail_in_job(ready, "d", commit=True)
    # Still committed and holding its lock: the result is visible, its last steps are not.
    assert _rows(ready) == [("committed", "import.committed")]
    assert _locks(ready) == ["lake:users"]
    (recovered,) = recover_jobs(ready)
    assert recovered.state == "committed"
    assert (ready.home / "rolled-forward-d").exists()
    assert _rows(ready) == [("done", "import.committed")]
    assert _locks(ready) == []


def _start_and_die(home: str, step: str) -> None:
    os.environ[FAILPOINTS_ENV] = step
    register_recoverer("import", _Marking())
    settings = Settings(home=Path(home))
    with run_job(settings, "import", "users", locks=["lake:users"], intent={"name": "e"}) as job:
        job.step("import.staged")
        with job.transaction("import.committed", commit=True):
            pass
    os.kill(os.getpid(), signal.SIGKILL)  # never reached when the failpoint fires


@pytest.mark.parametrize(
    ("step", "way"), [("import.staged", "back"), ("import.committed", "forward")]
)
def test_a_killed_holder_is_recovered_by_the_next_job_that_needs_its_lock(
    ready: Settings, step: str, way: str
) -> None:
    child = multiprocessing.get_context("spawn").Process(
        target=_start_and_die, args=(str(ready.home), step)
    )
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    (dead,) = pending_jobs(open_store(ready.resolved_database_url))
    assert not owner_alive(ready, dead.id)
    with run_job(ready, "import", "users", locks=["lake:users"], intent={"name": "f"}):
        pass
    assert (ready.home / f"rolled-{way}-e").exists()
    assert sorted(s for s, _ in _rows(ready)) == sorted(
        ["done", "rolled_back" if way == "back" else "done"]
    )


def _wrong_step(settings: Settings) -> None:
    with run_job(settings, "import", "users", intent={"name": "g"}) as job:
        job.step("deliver.committed")


def test_unknown_steps_and_kinds_are_refused(ready: Settings) -> None:
    with pytest.raises(ValueError, match="not a step of import jobs"):
        _wrong_step(ready)
    with pytest.raises(ValueError, match="unknown job kind"):
        register_recoverer("teleport", _Marking())
