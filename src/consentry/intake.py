"""Imports into a home: a lake table and the control plane committed together, or not at all.

`import_table` is what `consentry import`, `consentry demo load` and the Mastodon connector
run. It is a job (docs/invariants.md, I6): the lake snapshot is staged, then one store
transaction records the import run, brings the consent ledger up to date (for `users` and
`consent_events`) and commits the job, and only then is the snapshot published. A crash
before that transaction leaves nothing (the staged snapshot is discarded); a crash after it is
rolled forward (the snapshot is published). If the ledger cannot take the rows, the import is
bad input (exit 2) and nothing changed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
from sqlalchemy.exc import SQLAlchemyError

from consentry.audit import SqlAuditSink
from consentry.audit.event_types import TableImported
from consentry.engine import Lake
from consentry.errors import BadInput, ConsentryError, Problem
from consentry.jobs import JobRecord, register_recoverer, run_job
from consentry.jobs.lineage import RunLineage, lake_dataset, register_lineage, store_dataset
from consentry.ledger.sync import SYNCED_TABLES, ledger_for
from consentry.schema import TableSpec
from consentry.settings import Settings
from consentry.sources.importer import ImportResult, check_arrow, check_files, stage_merge
from consentry.sources.validate import Conformed
from consentry.store.models import ImportRun

__all__ = ["CheckedImport", "ImportReport", "check_import", "commit_import", "import_table"]


@dataclass(frozen=True, slots=True)
class ImportReport:
    """One import into a home: the lake's counts, its import-log id, the ledger's changes."""

    run_id: int
    result: ImportResult
    ledger: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {
            "run_id": self.run_id,
            "table": r.table,
            "origin": r.origin,
            "rows_read": r.rows_read,
            "rows_new": r.rows_new,
            "rows_replaced": r.rows_replaced,
            "rows_total": r.rows_total,
            "started_at": r.started_at,
            "finished_at": r.finished_at,
            "ledger": self.ledger,
        }


def _lake_lock(table: str) -> str:
    return f"lake:{table}"


class _ImportRecoverer:
    """An import staged its snapshot under the job's token: discard it, or publish it."""

    def roll_back(self, settings: Settings, job: JobRecord) -> None:
        Lake.of(settings).discard(job.intent["table"], job.intent["token"])

    def roll_forward(self, settings: Settings, job: JobRecord) -> None:
        Lake.of(settings).publish(job.intent["table"], job.intent["token"])


register_recoverer("import", _ImportRecoverer())


def _import_lineage(settings: Settings, job: JobRecord, *, detail: bool) -> RunLineage:
    """An import merges into one lake table (with `detail`, the table as published: its
    schema and rows) and records its run; its inputs are named by `origin` in the run's
    audit event, not here."""
    table = job.intent["table"]
    return RunLineage(
        f"import.{table}",
        outputs=(
            lake_dataset(settings, table, detail=detail),
            store_dataset(settings, "import_runs", detail=detail, rows=1 if detail else None),
        ),
    )


register_lineage("import", _import_lineage)


@dataclass(frozen=True, slots=True)
class CheckedImport:
    """Validated rows waiting to be imported (nothing written yet)."""

    table: str
    spec: TableSpec
    rows: pa.Table
    inputs: list[Conformed]
    """Each input as validated (locates the imported rows in later problems)."""
    origin: str
    started_at: datetime


def check_import(
    table: str,
    *,
    files: Sequence[Path] = (),
    data: pa.Table | None = None,
    origin: str | None = None,
) -> CheckedImport:
    """Read and validate `files` (or the Arrow `data` from `origin`) for `table`.

    Every input is read and validated (`FILE:ROW: field: problem`, exit 2); nothing is
    written, so bad input is reported before anything else is looked at.
    """
    started = datetime.now(UTC)
    if data is not None:
        where = origin or "input"
        spec, incoming, inputs = check_arrow(table, data, origin=where)
    else:
        spec, incoming, inputs = check_files(table, files)
        where = origin or ", ".join(str(f) for f in files)
    return CheckedImport(table, spec, incoming, inputs, where, started)


def import_table(
    settings: Settings,
    table: str,
    *,
    files: Sequence[Path] = (),
    data: pa.Table | None = None,
    origin: str | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ImportReport:
    """`check_import`, then `commit_import`."""
    checked = check_import(table, files=files, data=data, origin=origin)
    return commit_import(settings, checked, on_step=on_step)


def commit_import(
    settings: Settings, checked: CheckedImport, *, on_step: Callable[[str], None] | None = None
) -> ImportReport:
    """Import validated rows into the home: the lake and the control plane, or nothing.

    1. A job holding `lake:<table>` stages the merged snapshot (not yet live).
    2. One store transaction: the import run and its `table.imported` audit event, the
       ledger's subjects or events (for `users` and `consent_events`) with theirs, and the
       job's commit. A database refusal here is bad input and the staged snapshot is
       discarded.
    3. The snapshot is published: the lake and the control plane now agree.
    """
    step = on_step or (lambda _message: None)
    table, spec, incoming, where = checked.table, checked.spec, checked.rows, checked.origin
    started = checked.started_at
    token = secrets.token_hex(8)
    lake = Lake.of(settings)
    with run_job(
        settings,
        "import",
        table,
        locks=[_lake_lock(table)],
        intent={"table": table, "token": token, "origin": where[:500]},
    ) as job:
        step(f"merging into {table}")
        fresh, rows_new, rows_replaced, total = stage_merge(
            lake, spec, incoming, token, inputs=checked.inputs
        )
        job.step("import.staged", rows=fresh.num_rows)
        result = ImportResult(
            table=table,
            origin=where,
            rows_read=incoming.num_rows,
            rows_new=rows_new,
            rows_replaced=rows_replaced,
            rows_total=total,
            started_at=started,
            finished_at=datetime.now(UTC),
        )
        step("recording the import" + (" and the ledger" if table in SYNCED_TABLES else ""))
        ledger_report: dict[str, Any] = {}
        ledger = ledger_for(settings)
        try:
            with job.transaction("import.committed", commit=True) as session:
                run = ImportRun(
                    table_name=table,
                    origin=where,
                    rows_read=result.rows_read,
                    rows_new=result.rows_new,
                    rows_total=result.rows_total,
                    started_at=result.started_at,
                    finished_at=result.finished_at,
                )
                session.add(run)
                session.flush()
                run_id = run.id
                SqlAuditSink().append(
                    session,
                    TableImported(
                        table=table,
                        run_id=run_id,
                        rows_read=result.rows_read,
                        rows_new=result.rows_new,
                        rows_replaced=result.rows_replaced,
                        rows_total=result.rows_total,
                        snapshot=token,
                    ),
                )
                if table == "users":
                    read, new, updated = ledger.sync_subjects(fresh, session=session)
                    ledger_report["subjects"] = {"read": read, "new": new, "updated": updated}
                elif table == "consent_events":
                    imported = ledger.import_events(fresh, session=session)
                    ledger_report["consent_events"] = {
                        "read": imported.events_read,
                        "new": imported.events_new,
                        "subjects_affected": imported.subjects_affected,
                    }
        except (SQLAlchemyError, OverflowError, ValueError) as exc:
            reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
            raise BadInput(
                Problem(where, None, None, f"the control plane refused the {table} rows: {reason}")
            ) from None
        finally:
            ledger.store.close()
        step(f"publishing {table}")
        if not lake.publish(table, token):
            raise ConsentryError(f"the staged snapshot of {table} vanished before publishing")
        job.step("import.published")
    return ImportReport(run_id, result, ledger_report)
