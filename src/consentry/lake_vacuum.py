"""`consentry lake vacuum` as a job: what it will delete is recorded before any file goes,
and each table's `lake.vacuumed` audit event is committed with the step that says its files
are gone, so a vacuum killed anywhere is finished by recovery, its events included
(docs/invariants.md, "Jobs").

A purge's own vacuum is a step of its retention job (`retention.vacuumed`), not this.
"""

from __future__ import annotations

from collections.abc import Sequence

from consentry.audit import SqlAuditSink
from consentry.audit.event_types import LakeVacuumed
from consentry.engine import Lake
from consentry.engine.lake import Vacuumed, VacuumPlan
from consentry.jobs import Job, JobRecord, register_recoverer, resume_job, run_job
from consentry.jobs.lineage import RunLineage, lake_dataset, register_lineage
from consentry.settings import Settings

__all__ = ["JOB_KIND", "vacuum_lake"]

JOB_KIND = "vacuum"


def vacuum_lake(settings: Settings, tables: Sequence[str], *, grace_hours: int) -> list[Vacuumed]:
    """Vacuum `tables` (`Lake.vacuum`'s rule, with `grace_hours`) as one job.

    1. The job holds each table's lake lock (`lake:<table>`, as imports and purges do), so
       no commit changes a table between its plan and its vacuum.
    2. Every table's plan (`Lake.plan_vacuum`: the files to delete, the versions readable
       before) is recorded in the job's commit, `vacuum.planned`, before any file is
       deleted: from then on the vacuum is finished, by this process or by recovery.
    3. Table by table: its planned files are deleted (`vacuum.deleted`), then its
       `lake.vacuumed` event (when it removed a file or a version) is appended in the
       transaction that records `vacuum.recorded` for it, so the event is written once,
       and only once the files are gone.
    4. No tables: nothing is done (no job).
    """
    if not tables:
        return []
    lake = Lake.of(settings)
    with run_job(
        settings,
        JOB_KIND,
        ", ".join(tables),
        # The lock names imports and purges take for a lake table.
        locks=[f"lake:{t}" for t in tables],
        intent={"tables": list(tables), "grace_hours": grace_hours},
    ) as job:
        plans = [lake.plan_vacuum(t, grace_hours=grace_hours) for t in tables]
        with job.transaction(
            "vacuum.planned", commit=True, plans=[p.to_json() for p in plans], recorded=[]
        ):
            pass
        return [_vacuum_table(job, lake, plan) for plan in plans]


def _vacuum_table(job: Job, lake: Lake, plan: VacuumPlan) -> Vacuumed:
    """Carry out one table's plan, then record it with its audit event (step 3 above)."""
    vacuumed = lake.carry_out(plan)
    job.step("vacuum.deleted")
    recorded = [*job.intent["recorded"], plan.table]
    with job.transaction("vacuum.recorded", recorded=recorded) as session:
        if vacuumed.files_removed or vacuumed.versions_removed:
            SqlAuditSink().append(
                session,
                LakeVacuumed(
                    table=plan.table,
                    files_removed=len(vacuumed.files_removed),
                    versions_removed=list(vacuumed.versions_removed),
                    grace_hours=int(job.intent["grace_hours"]),
                ),
            )
    return vacuumed


class _VacuumRecoverer:
    """A vacuum deletes nothing before its plan is committed, and finishes it after."""

    def roll_back(self, settings: Settings, job: JobRecord) -> None:
        """Before `vacuum.planned` nothing was deleted or recorded: nothing to undo."""

    def roll_forward(self, settings: Settings, job: JobRecord) -> None:
        """Every planned table not yet recorded is vacuumed (its files still there are
        deleted) and recorded with its event: a table whose files a killed process had
        already deleted gets its event now."""
        lake = Lake.of(settings)
        with resume_job(settings, job) as resumed:
            for data in job.intent["plans"]:
                if data["table"] not in resumed.intent["recorded"]:
                    _vacuum_table(resumed, lake, VacuumPlan.from_json(data))


register_recoverer(JOB_KIND, _VacuumRecoverer())


def _vacuum_lineage(settings: Settings, job: JobRecord, *, detail: bool) -> RunLineage:
    """A vacuum rewrites no row: it removes files of the tables it names (with `detail`,
    each table as it is afterwards)."""
    return RunLineage(
        "lake.vacuum",
        outputs=tuple(lake_dataset(settings, t, detail=detail) for t in job.intent["tables"]),
    )


register_lineage(JOB_KIND, _vacuum_lineage)
