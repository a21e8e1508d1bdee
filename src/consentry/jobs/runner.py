"""Run a job with a recorded intent, named steps and locks; recover jobs whose process died.

A job's life (docs/invariants.md, "Jobs"):

    running ──(result made visible, one transaction with its audit event)──▶ committed
       │                                                                        │
       ▼ error, or recovery after its process died                              ▼
    rolled_back  (staged files removed: nothing happened)    done  (later steps rolled forward)

Liveness is a lock file: the process running a job holds an exclusive `flock` on
`<home>/jobs/<job id>.lock` until the job ends, and the kernel drops the lock when the process
dies however it dies. A job is recovered only when that lock can be taken, so a live job is
never touched; processes that share a home must share its file system and its locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consentry.errors import ConsentryError
from consentry.faults import failpoint
from consentry.jobs.lineage import emit_run_event
from consentry.settings import Settings
from consentry.store import Store, open_store
from consentry.store.models import JobLockRow, JobRow

__all__ = [
    "JOB_STEPS",
    "Job",
    "JobBusy",
    "JobRecord",
    "Recoverer",
    "owner_alive",
    "pending_jobs",
    "recover_jobs",
    "register_recoverer",
    "resume_job",
    "run_job",
]

JOB_STEPS: dict[str, tuple[str, ...]] = {
    "import": ("import.staged", "import.committed", "import.published"),
    "deliver": (
        "deliver.parts_written",
        "deliver.signed",
        "deliver.lineage_staged",
        "deliver.committed",
        "deliver.lineage_published",
        "deliver.published",
    ),
    "revoke": ("revoke.evaluated", "revoke.committed"),
    "retention": (
        "retention.intent",
        "retention.planned",
        "retention.revoked",
        "retention.lake_staged",
        "retention.lake_published",
        "retention.vacuumed",
        "retention.deliveries_removed",
        "retention.applied",
        "retention.verified",
    ),
    "assess": ("assess.written", "assess.committed"),
    "vacuum": ("vacuum.planned", "vacuum.deleted", "vacuum.recorded"),
}
"""Every job kind and its named steps in order (each is also a failpoint; the fault-injection
tests kill the process at every one). docs/invariants.md lists them (a test checks)."""

_FINAL = ("done", "rolled_back")
_log = logging.getLogger("consentry.jobs")
_POLL_SECONDS = 0.2


class JobBusy(ConsentryError):  # noqa: N818 - reads as the condition, like BadInput
    """A lock the job needs is held by another job that is still running (exit 1)."""


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as stored: what recovery gets."""

    id: str
    kind: str
    subject: str
    state: str
    step: str
    intent: dict[str, Any]
    owner: str
    started_at: datetime


class Recoverer(Protocol):
    """How one kind of job is finished or undone after its process died.

    Both methods must be idempotent: recovery itself may be killed and run again.
    """

    def roll_back(self, settings: Settings, job: JobRecord) -> None:
        """Undo a `running` job: remove what it staged (nothing of it is visible)."""

    def roll_forward(self, settings: Settings, job: JobRecord) -> None:
        """Finish a `committed` job: the steps after its commit, from `job.step` on."""


_RECOVERERS: dict[str, Recoverer] = {}


def register_recoverer(kind: str, recoverer: Recoverer) -> None:
    """Make `recoverer` the one for `kind` (each capability registers its own on import)."""
    if kind not in JOB_STEPS:
        raise ValueError(f"unknown job kind {kind!r}")
    _RECOVERERS[kind] = recoverer


def _lock_path(settings: Settings, job_id: str) -> Path:
    return settings.home / "jobs" / f"{job_id}.lock"


def _claim(path: Path) -> int | None:
    """Take the exclusive lock on `path` without waiting; the open fd, or None if held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def owner_alive(settings: Settings, job_id: str) -> bool:
    """Whether the process running job `job_id` is alive (it holds the job's lock file)."""
    path = _lock_path(settings, job_id)
    if not path.exists():
        return False
    fd = _claim(path)
    if fd is None:
        return True
    os.close(fd)
    return False


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _record(row: JobRow) -> JobRecord:
    return JobRecord(
        id=row.id,
        kind=row.kind,
        subject=row.subject,
        state=row.state,
        step=row.step,
        intent=dict(row.intent),
        owner=row.owner,
        started_at=row.started_at,
    )


@dataclass
class Job:
    """A running job, as its own process sees it (returned by `run_job`)."""

    settings: Settings
    store: Store
    id: str
    kind: str
    subject: str
    intent: dict[str, Any]
    state: str = "running"
    step_name: str = ""
    locks: list[str] = field(default_factory=list)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def record(self) -> JobRecord:
        """This job as recovery would see it."""
        return JobRecord(
            self.id,
            self.kind,
            self.subject,
            self.state,
            self.step_name,
            dict(self.intent),
            _owner(),
            self.started_at,
        )

    def _check(self, name: str) -> None:
        if name not in JOB_STEPS[self.kind]:
            raise ValueError(f"{name!r} is not a step of {self.kind} jobs")

    def _write(self, session: Session, name: str, state: str, intent: Mapping[str, Any]) -> None:
        merged = {**self.intent, **intent}
        session.execute(
            sa.update(JobRow)
            .where(JobRow.id == self.id)
            .values(step=name, state=state, intent=merged, updated_at=datetime.now(UTC))
        )
        self.intent, self.step_name, self.state = merged, name, state
        _observe_step(self)

    def step(self, name: str, **intent: Any) -> None:
        """Record that the job reached step `name` (merging `intent`), then pass its failpoint.

        1. Written in its own transaction, so recovery sees the step and its intent.
        2. The state does not change: before its commit a job is rolled back, after it
           rolled forward.
        """
        self._check(name)
        with self.store.session() as session:
            self._write(session, name, self.state, intent)
        failpoint(name)

    @contextlib.contextmanager
    def transaction(self, name: str, *, commit: bool = False, **intent: Any) -> Iterator[Session]:
        """A store transaction that also records step `name`; `commit=True` makes it the
        job's commit point (state `committed`). The failpoint runs after it commits."""
        with self.store.session() as session:
            yield session
            self.mark(session, name, commit=commit, **intent)
        failpoint(name)

    def mark(self, session: Session, name: str, *, commit: bool = False, **intent: Any) -> None:
        """Record step `name` inside the caller's transaction (for code that owns its
        transaction, such as the revocation log); call `passed(name)` after it commits."""
        self._check(name)
        self._write(session, name, "committed" if commit else self.state, intent)

    def passed(self, name: str) -> None:
        """The failpoint of a step recorded with `mark`, once its transaction committed."""
        self._check(name)
        failpoint(name)

    def acquire(self, *names: str, wait: float = 0.0) -> None:
        """Take more locks (waiting up to `wait` seconds for live holders to finish)."""
        _take_locks(self, names, wait=wait)
        self.locks.extend(names)


def _insert_locks(session: Session, job_id: str, names: Sequence[str]) -> None:
    now = datetime.now(UTC)
    for name in names:
        session.add(JobLockRow(name=name, job_id=job_id, taken_at=now))
    session.flush()


def _holders(store: Store, names: Sequence[str]) -> list[tuple[str, JobRecord]]:
    with store.session() as session:
        rows = session.execute(
            sa.select(JobLockRow.name, JobRow)
            .join(JobRow, JobRow.id == JobLockRow.job_id)
            .where(JobLockRow.name.in_(list(names)))
        ).all()
        return [(name, _record(row)) for name, row in rows]


def _take_locks(job: Job, names: Sequence[str], *, wait: float) -> None:
    """Insert lock rows for `names`; recover dead holders; wait for or refuse live ones."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with job.store.session() as session:
                _insert_locks(session, job.id, names)
            return
        except IntegrityError:
            pass
        busy = []
        for name, holder in _holders(job.store, names):
            if not _recover_one(job.settings, job.store, holder):
                busy.append((name, holder))
        if not busy:
            continue
        if time.monotonic() >= deadline:
            name, holder = busy[0]
            raise JobBusy(
                f"{name} is held by {holder.kind} job {holder.id} ({holder.subject}), "
                f"running since {holder.started_at.isoformat()} in process {holder.owner}; "
                "try again when it has finished"
            )
        time.sleep(_POLL_SECONDS)


def _finish(settings: Settings, store: Store, job: JobRecord, state: str, outcome: str) -> None:
    """End `job` as `state` (done or rolled_back), release its locks, emit its last
    OpenLineage event (COMPLETE when done, FAIL otherwise), log and alert."""
    with store.session() as session:
        session.execute(sa.delete(JobLockRow).where(JobLockRow.job_id == job.id))
        session.execute(
            sa.update(JobRow)
            .where(JobRow.id == job.id)
            .values(state=state, outcome=outcome[:4000], finished_at=datetime.now(UTC))
        )
    done = state == "done"
    emit_run_event(
        settings, job, "COMPLETE" if done else "FAIL", error=None if done else outcome[:4000]
    )
    _observe_end(settings, job, state, outcome)


@contextlib.contextmanager
def run_job(
    settings: Settings,
    kind: str,
    subject: str,
    *,
    locks: Sequence[str] = (),
    intent: Mapping[str, Any] | None = None,
) -> Iterator[Job]:
    """Run the block as one job of `kind` holding `locks`.

    1. The job's lock file is taken and its row inserted (`running`, with `intent`), then
       its locks, all in one transaction. A lock held by a dead job's process makes that job
       recovered first; one held by a live job is refused (`JobBusy`, exit 1) and the job
       ends `rolled_back` without having done anything.
    2. The block records steps (`Job.step`) and commits its result (`Job.transaction`
       with `commit=True`).
    3. The block ends normally: the job is `done` and its locks are released. Its
       OpenLineage START event was sent once its row was inserted, its COMPLETE or FAIL
       event is sent when it ends (`consentry.jobs.lineage`).
    4. It raises while still `running`: the kind's recoverer rolls back what was staged
       and the job is `rolled_back`. It raises after its commit: the job stays `committed`
       (holding its locks) and the next recovery rolls it forward.
    """
    if kind not in _RECOVERERS:
        raise ValueError(f"no recoverer registered for {kind!r} jobs")
    store = open_store(settings.resolved_database_url)
    job_id = f"job-{secrets.token_hex(8)}"
    path = _lock_path(settings, job_id)
    fd = _claim(path)
    assert fd is not None, "a new job's lock file cannot be held by anyone else"
    job = Job(settings, store, job_id, kind, subject, dict(intent or {}))
    final = False
    try:
        now = datetime.now(UTC)
        with store.session() as session:
            session.add(
                JobRow(
                    id=job_id,
                    kind=kind,
                    subject=subject[:255],
                    state="running",
                    step=f"{kind}.started",
                    intent=job.intent,
                    owner=_owner(),
                    started_at=now,
                    updated_at=now,
                )
            )
        job.step_name = f"{kind}.started"
        emit_run_event(settings, job.record(), "START")
        _observe_step(job)
        try:
            job.acquire(*locks)
        except BaseException:
            _finish(settings, store, job.record(), "rolled_back", "refused: a lock was busy")
            final = True
            raise
        try:
            yield job
        except BaseException as exc:
            if job.state == "running":
                _RECOVERERS[kind].roll_back(settings, job.record())
                failed = f"failed: {type(exc).__name__}: {exc}"
                _finish(settings, store, job.record(), "rolled_back", failed)
                final = True
            raise
        _finish(settings, store, job.record(), "done", "ok")
        final = True
    finally:
        if final:
            path.unlink(missing_ok=True)
        os.close(fd)
        store.close()


@contextlib.contextmanager
def resume_job(settings: Settings, record: JobRecord) -> Iterator[Job]:
    """The job `record` as a `Job` again, for a recoverer that finishes it step by step
    (the caller holds its lock file: `recover_jobs` claimed it)."""
    store = open_store(settings.resolved_database_url)
    try:
        yield Job(
            settings,
            store,
            record.id,
            record.kind,
            record.subject,
            dict(record.intent),
            state=record.state,
            step_name=record.step,
            started_at=record.started_at,
        )
    finally:
        store.close()


def pending_jobs(store: Store) -> list[JobRecord]:
    """Jobs not yet `done` or `rolled_back` (live or not), oldest first."""
    with store.session() as session:
        rows = session.scalars(
            sa.select(JobRow).where(JobRow.state.not_in(_FINAL)).order_by(JobRow.started_at)
        ).all()
        return [_record(r) for r in rows]


def _recover_one(settings: Settings, store: Store, job: JobRecord) -> bool:
    """Recover `job` if its process is gone; True when it is now final (or already was).

    1. Its lock file is claimed without waiting: held means its process lives (False).
    2. The row is read again under the claim: another recoverer may have finished it.
    3. `running`: rolled back; `committed`: rolled forward; then final, locks released.
    """
    path = _lock_path(settings, job.id)
    fd = _claim(path)
    if fd is None:
        return False
    try:
        with store.session() as session:
            row = session.get(JobRow, job.id)
            current = _record(row) if row is not None else None
        if current is None or current.state in _FINAL:
            return True
        recoverer = _RECOVERERS.get(current.kind)
        if recoverer is None:
            raise ConsentryError(
                f"{current.kind} job {current.id} was interrupted and nothing here can "
                "recover it; run `consentry recover`"
            )
        if current.state == "running":
            recoverer.roll_back(settings, current)
            _finish(
                settings, store, current, "rolled_back", f"recovered: rolled back at {current.step}"
            )
        else:
            recoverer.roll_forward(settings, current)
            _finish(
                settings, store, current, "done", f"recovered: rolled forward from {current.step}"
            )
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def recover_jobs(
    settings: Settings, *, on_job: Callable[[JobRecord], None] | None = None
) -> list[JobRecord]:
    """Recover every pending job whose process is gone; return the jobs recovered.

    Live jobs (their lock file is held) are left alone. Each recovered job is rolled back
    (`running`) or forward (`committed`) by its kind's recoverer.
    """
    recovered: list[JobRecord] = []
    with open_store(settings.resolved_database_url) as store:
        if store.current_revision() != store.head_revision():
            return recovered
        for job in pending_jobs(store):
            if on_job is not None:
                on_job(job)
            if _recover_one(settings, store, job):
                recovered.append(job)
    return recovered


# --- observability: one log line per step, one at the end, an alert when a job fails ---------


def _observe_step(job: Job) -> None:
    from consentry.observe.logs import log_event

    log_event(_log, "job.step", job_id=job.id, kind=job.kind, subject=job.subject,
              step=job.step_name, state=job.state)  # fmt: skip


def _observe_end(settings: Settings, job: JobRecord, state: str, outcome: str) -> None:
    """Log the job's end with its duration; a rolled-back job is a `job.failed` alert (the
    jobs table keeps durations and outcomes for /metrics, `consentry.observe.state`)."""
    from consentry.observe.alerts import push_alert
    from consentry.observe.logs import log_event

    seconds = round((datetime.now(UTC) - job.started_at).total_seconds(), 3)
    # Info either way: a command already says why it failed on stderr; the line is for logs.
    log_event(_log, "job.finished", job_id=job.id, kind=job.kind, subject=job.subject,
              state=state, outcome=outcome, seconds=seconds)  # fmt: skip
    if state == "rolled_back":
        push_alert(
            settings,
            "job.failed",
            {"job_id": job.id, "kind": job.kind, "subject": job.subject, "step": job.step,
             "outcome": outcome, "seconds": seconds},
        )  # fmt: skip
