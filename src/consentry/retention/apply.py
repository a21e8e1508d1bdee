"""The retention executor: apply exactly a plan, then prove it by re-querying every store.

A purge moves through `planned -> applied -> verified`, each step recorded on its
`retention_purges` row and in the audit log. The executor refuses a plan whose file was
edited (content hash) or whose inputs changed since it was computed (fingerprints of the
lake snapshots, the control plane, the delivery directories and the policy file), and it
re-derives the candidates with the planner's own expressions and checks they give the
plan's counts before it changes anything.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from consentry.audit import SqlAuditSink
from consentry.audit.event_types import RetentionApplied, RetentionPlanned
from consentry.delivery.build import LINEAGE_TABLE
from consentry.engine import Lake
from consentry.errors import BadInput, ConsentryError, Problem
from consentry.instants import rfc3339
from consentry.jobs import JOB_STEPS, Job, JobRecord, register_recoverer, resume_job, run_job
from consentry.jobs.lineage import RunLineage, lake_dataset, register_lineage, store_dataset
from consentry.keys import Keyring
from consentry.policy import load_policy
from consentry.policy.model import ANONYMISABLE_FIELDS, RETENTION_CATEGORIES
from consentry.retention.candidates import LAKE_CATEGORIES
from consentry.retention.plan import (
    PlanContext,
    audit_due,
    category_candidates,
    count_actions,
    inputs_fingerprint,
    open_context,
    planner_backend,
    rule_for,
    sealed_audit_events,
    summarise,
)
from consentry.retention.plan_file import CategoryPlan, RetentionPlan
from consentry.retention.rewrite import (
    ACTS_SCHEMA,
    LAKE_ORDER,
    anonymisation_key,
    apply_control_plane,
    apply_external_purge,
    remove_deliveries,
    saved_acts,
    stage_external_purge,
    stage_lineage_without,
    stage_rewrite,
    workdir_of,
    write_parquet,
)
from consentry.retention.verify import verify_purge
from consentry.settings import Settings
from consentry.store import Store, open_store
from consentry.store.models import (
    AuditEventRow,
    RetentionPurge,
)

__all__ = [
    "PURGE_STATES",
    "RetentionRecoverer",
    "Revoker",
    "StalePlanError",
    "apply_plan",
    "complete_purge",
    "load_plan",
    "purge_history",
]

PURGE_STATES = ("planned", "applied", "verified")
"""Ids per SQL IN-list: below every backend's bound-parameter limit."""
_COMPARED = ("total", "keep", "delete", "anonymise", "held", "done", "by_trigger", "held_by")


class Revoker(Protocol):
    """Tells licensees that delivered posts were purged (`consentry.revocation.revoke_purged`)."""

    def __call__(
        self, settings: Settings, *, post_ids: pa.Array, purged_at: datetime, purge_id: str
    ) -> int: ...


class StalePlanError(ConsentryError):
    """The plan's inputs changed since it was computed: plan again (exit 1)."""


def load_plan(path: Path) -> RetentionPlan:
    """Read a plan file; BadInput (exit 2) when it is not a plan or was edited."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(Problem(str(path), None, None, f"not a readable plan file: {exc}")) from None
    return RetentionPlan.from_dict(data, source=str(path))


def _differences(old: Any, new: Any, path: str = "") -> Iterator[str]:
    """Dotted paths where two JSON values differ (for the stale-plan message)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            yield from _differences(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    elif old != new:
        yield path or "(all)"


def _stale(what: str, differences: Sequence[str]) -> StalePlanError:
    shown = ", ".join(differences[:6]) + (" …" if len(differences) > 6 else "")
    return StalePlanError(
        f"the plan is stale: {what} changed since it was computed ({shown}); "
        "plan again with `consentry retention plan`"
    )


def _materialise(ctx: PlanContext) -> list[CategoryPlan]:
    """Materialise every category's candidates as DuckDB temp tables; return the entries
    they summarise to (compared with the plan's before anything changes)."""
    entries = []
    for category in RETENTION_CATEGORIES:
        if category == "audit":
            continue
        expr = category_candidates(ctx, category)
        table = ctx.backend.create_table(
            f"retention_acts_{category}", expr, temp=True, overwrite=True
        )
        entries.append(
            summarise(category, rule_for(ctx.version, category), count_actions(ctx.backend, table))
        )
    return entries


def _new_purge_id() -> str:
    return f"purge-{secrets.token_hex(8)}"


_LOCKS = (*(f"lake:{t}" for t in (*LAKE_CATEGORIES.values(), LINEAGE_TABLE)), "retention")
"""A purge holds every table it may rewrite, so no import or delivery interleaves."""


def apply_plan(
    settings: Settings,
    plan: RetentionPlan,
    *,
    revoker: Revoker | None = None,
    now: datetime | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Execute `plan` (as `load_plan` returned it) and verify it; return the purge record.
    `on_progress` is told each step as it starts (a progress bar's description).

    A retention job (docs/invariants.md, I3) holding every lake table it may rewrite:
    1. Refuse a plan for a future instant, or whose inputs (policy file, lake snapshots,
       control plane, delivery directories) changed since it was computed (exit 1).
    2. Re-derive every candidate with the planner's expressions (on DuckDB) and refuse when
       the counts differ from the plan's (`_check_candidates`).
    3. Save the decisions (each category's keys to delete or anonymise, the delivered posts
       among them) in the job's directory (`_save_decisions`): its intent
       (`retention.intent`).
    4. Record the purge as `planned` with its audit event, in the job's commit
       (`_record_planned`, `retention.planned`): from here on the purge is finished, never
       undone.
    5. The remaining steps (`complete_purge`) read only the saved decisions and are
       idempotent, so a crash anywhere is rolled forward by recovery to the same result.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    at = plan.instant
    if at > now:
        raise BadInput(
            Problem("plan", None, "at", f"{plan.at} is in the future: nothing is due yet")
        )
    policy = load_policy(settings.policy_file)
    if policy.content_sha256 != plan.inputs["policy"]["content_sha256"]:
        raise _stale("the policy file", ["inputs.policy.content_sha256"])
    _check_external_sources(settings, plan)
    step = on_progress or _quiet
    purge_id = _new_purge_id()
    with run_job(
        settings,
        "retention",
        purge_id,
        locks=_LOCKS,
        intent={"purge_id": purge_id, "plan_sha256": plan.plan_sha256, "at": rfc3339(at)},
    ) as job:
        workdir = workdir_of(settings, job.id)
        backend = planner_backend(settings, "duckdb")
        with open_context(
            settings, at, backend=backend, policy=policy, owners=plan.owners_checked
        ) as ctx:
            step("re-deriving the plan's candidates")
            _check_candidates(ctx, settings, plan)
            step("saving the decisions")
            audit_seqs = _save_decisions(ctx, plan, workdir, revoker=revoker)
            version = ctx.version
        profile_rule = rule_for(version, "profile")
        job.step(
            "retention.intent",
            workdir=workdir.name,
            policy_version=version.version,
            delivery_ids=list(plan.category("deliveries").delivery_ids or ()),
            audit_seqs=audit_seqs,
            profile_fields=list(profile_rule.fields) if profile_rule is not None else [],
            lake_fields={
                category: {f: ANONYMISABLE_FIELDS[category][f] for f in rule.fields}
                for category in LAKE_ORDER
                if (rule := rule_for(version, category)) is not None
            },
        )
        _record_planned(job, plan, purge_id, version.version, now)
        return complete_purge(settings, job, revoker=revoker, on_progress=on_progress)


def _check_external_sources(settings: Settings, plan: RetentionPlan) -> None:
    """Refuse, before anything changes, a plan that must delete or anonymise rows of an
    external source that does not allow purges (registered without `--purge`, or a Parquet
    folder): the platform must purge those rows at their source."""
    external = Lake.of(settings).external
    problems = []
    for category, table in LAKE_CATEGORIES.items():
        source = external.get(table)
        entry = plan.category(category)
        if source is None or source.purge or not (entry.delete or entry.anonymise):
            continue
        problems.append(
            Problem(
                "plan",
                None,
                f"categories.{category}",
                f"{entry.delete + entry.anonymise:,} {table} rows are due, but {table} is read "
                f"in place from {source.location}, registered without --purge: purge them at "
                f"the source, or register it with `consentry source add {table} --delta … "
                "--purge` to let retention purge it",
            )
        )
    if problems:
        raise BadInput(problems)


def _quiet(_step: str) -> None:
    """The progress callback when nobody watches."""


def _check_candidates(ctx: PlanContext, settings: Settings, plan: RetentionPlan) -> None:
    """Refuse (StalePlanError) when the inputs or the re-derived candidates differ from the
    plan's; leaves every category's candidates as a DuckDB temp table."""
    changed = list(_differences(plan.inputs, inputs_fingerprint(ctx, settings)))
    if changed:
        raise _stale("its inputs", changed)
    for entry in _materialise(ctx):
        planned = plan.category(entry.category)
        diff = [
            f"{entry.category}.{k}" for k in _COMPARED if getattr(planned, k) != getattr(entry, k)
        ]
        if diff:
            raise _stale("the candidates", diff)


def _save_decisions(
    ctx: PlanContext, plan: RetentionPlan, workdir: Path, *, revoker: Revoker | None
) -> list[int]:
    """Write each lake category's keys to delete or anonymise and the delivered posts among
    them into `workdir`; return the audit events due (refusing when they are not the plan's
    count, or when delivered posts would be deleted with no way to revoke them)."""
    delivered = ctx.backend.con.sql(
        "SELECT DISTINCT a.key AS post_id FROM retention_acts_posts a JOIN "
        f"{LINEAGE_TABLE if ctx.lake.exists(LINEAGE_TABLE) else 'retention_lineage'} l "
        "ON l.post_id = a.key WHERE a.action = 'delete' ORDER BY 1"
    ).to_arrow_table()
    if delivered.num_rows and revoker is None:
        raise ConsentryError(
            f"{delivered.num_rows} posts to delete were delivered to licensees, and "
            "revocations are not available in this installation: refusing to delete "
            "them silently"
        )
    workdir.mkdir(parents=True, exist_ok=True)
    for category in LAKE_ORDER:
        write_parquet(
            workdir / f"acts-{category}.parquet",
            ctx.backend.con.sql(
                f"SELECT key::VARCHAR AS key, action FROM retention_acts_{category} "
                "WHERE action IN ('delete', 'anonymise')"
            )
            .to_arrow_table()
            .cast(ACTS_SCHEMA),
        )
    write_parquet(workdir / "delivered.parquet", delivered)
    audit = plan.category("audit")
    with ctx.store.session() as session:
        condition = audit_due(ctx, session)
        if not audit.delete or condition is None:
            return []
        audit_seqs = list(
            session.scalars(
                sa.select(AuditEventRow.seq).where(
                    condition, AuditEventRow.seq.not_in(sealed_audit_events())
                )
            )
        )
    if len(audit_seqs) != audit.delete:
        raise _stale("the audit log", ["categories.audit.delete"])
    return audit_seqs


def _record_planned(
    job: Job, plan: RetentionPlan, purge_id: str, policy_version: str, now: datetime
) -> None:
    """The purge's row in state `planned` and its `retention.planned` event, committed with
    the job's step: the point after which the purge is rolled forward, never back."""
    totals = {
        a: {e.category: getattr(e, a) for e in plan.categories}
        for a in ("delete", "anonymise", "held")
    }
    with job.transaction("retention.planned", commit=True) as session:
        session.add(
            RetentionPurge(
                id=purge_id,
                plan_sha256=plan.plan_sha256,
                policy_version=policy_version,
                at=plan.instant,
                state="planned",
                planned_at=now,
                planned={"totals": plan.totals, **totals},
                results=None,
                evidence=None,
            )
        )
        SqlAuditSink().append(
            session,
            RetentionPlanned(
                purge_id=purge_id,
                plan_sha256=plan.plan_sha256,
                policy_version=policy_version,
                at=rfc3339(plan.instant),
                to_delete=totals["delete"],
                to_anonymise=totals["anonymise"],
                held=totals["held"],
                gaps=[g.subject for g in plan.gaps],
            ),
        )


def complete_purge(
    settings: Settings,
    job: Job,
    *,
    revoker: Revoker | None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every step of a planned purge that has not happened yet, from its saved decisions
    (`on_progress` is told each step as it starts).

    Each step records itself in the job (so a crash repeats nothing) and is idempotent (so
    a crash inside one repeats it harmlessly):
    1. `retention.revoked`: licensees are told about the delivered posts to delete (first:
       no deletion without its revocation; revoking again logs nothing new).
    2. Per lake table, `retention.lake_staged` (the rewritten version is staged, with its
       counts and the versions readable before it) then `retention.lake_published`; the
       lineage of purged deliveries likewise.
    3. `retention.vacuumed`: every rewritten table is vacuumed (with the grace period
       `CONSENTRY_PURGE_GRACE_HOURS`, 0 by default), so no version from before the purge can
       be read again (time travel would return the purged rows); the versions that became
       unreadable are recorded per table. With a grace period the versions still within it
       stay until `consentry lake vacuum` finishes the purge (`finish_awaiting_purges`).
       Legal holds need no exception here: a held row is never rewritten out, so it is in
       the latest version, which no vacuum touches.
    4. `retention.deliveries_removed`: the purged delivery directories are removed.
    5. `retention.applied`: one transaction deletes and anonymises the control plane's copies
       (subjects, ledger events and state, sealed-free audit events, purged deliveries' rows),
       records the results (the versions vacuumed too) and the `retention.applied` audit
       event.
    6. `retention.verified`: `verify_purge` re-queries every store, every version still
       readable included; the saved decisions are
       then removed (the purge's record keeps only keyed digests of the purged keys).
    """
    step = on_progress or _quiet
    intent = job.intent
    purge_id = intent["purge_id"]
    workdir = workdir_of(settings, job.id)
    lake = Lake.of(settings)
    key = anonymisation_key(Keyring.for_settings(settings))
    if "revocations" not in intent:
        step("revoking delivered posts")
        delivered = pq.read_table(workdir / "delivered.parquet").column("post_id")
        revocations = 0
        if len(delivered):
            if revoker is None:
                raise ConsentryError("revocations are not available: the purge cannot go on")
            revocations = revoker(
                settings,
                post_ids=delivered.combine_chunks(),
                purged_at=datetime.fromisoformat(intent["at"].replace("Z", "+00:00")),
                purge_id=purge_id,
            )
        job.step("retention.revoked", revocations=revocations)
    tables: dict[str, Any] = dict(job.intent.get("tables", {}))
    work = [(c, LAKE_CATEGORIES[c]) for c in LAKE_ORDER if c in intent["lake_fields"]]
    if intent["delivery_ids"]:
        work.append(("deliveries", LINEAGE_TABLE))
    for category, table in work:
        entry = tables.get(table)
        if entry is None:
            if category == "deliveries":
                acts = None
            else:
                acts = saved_acts(workdir, category)
                if acts.num_rows == 0:
                    continue
            if not lake.exists(table):
                continue
            step(f"rewriting {table}")
            token = secrets.token_hex(8)
            readable = [v.version for v in lake.history(table) if v.readable]
            external = table in lake.external
            if acts is None:
                removed, blurred = stage_lineage_without(lake, intent["delivery_ids"], token), 0
            elif external:
                fields = intent["lake_fields"][category]
                changes = workdir / f"external-{table}.parquet"
                removed, blurred = stage_external_purge(lake, table, acts, fields, key, changes)
            else:
                fields = intent["lake_fields"][category]
                removed, blurred = stage_rewrite(lake, table, acts, fields, key, token)
            entry = {
                "token": token,
                "deleted": removed,
                "anonymised": blurred,
                "live": False,
                "readable_before": readable,
                "external": external,
            }
            tables[table] = entry
            job.step("retention.lake_staged", tables=tables)
        if not entry["live"]:
            step(f"publishing {table}")
            if entry.get("external"):
                # The source's own Delta commit (a MERGE), idempotent by its transaction.
                changes = workdir / f"external-{table}.parquet"
                apply_external_purge(lake, table, changes, entry["token"])
            else:
                lake.publish(table, entry["token"])
            tables[table] = {**entry, "live": True}
            job.step("retention.lake_published", tables=tables)
    if "versions_vacuumed" not in job.intent:
        versions_vacuumed: dict[str, list[int]] = {}
        for table, entry in sorted(tables.items()):
            step(f"vacuuming {table}")
            lake.vacuum(table, grace_hours=settings.purge_grace_hours)
            # Idempotent across a crash: what was readable before the rewrite and is not now.
            still = {v.version for v in lake.history(table) if v.readable}
            versions_vacuumed[table] = sorted(set(entry["readable_before"]) - still)
        job.step("retention.vacuumed", versions_vacuumed=versions_vacuumed)
    if "dirs_removed" not in job.intent:
        step("removing delivery directories")
        job.step(
            "retention.deliveries_removed",
            dirs_removed=remove_deliveries(settings, intent["delivery_ids"]),
        )
    if not _reached(job, "retention.applied"):
        step("purging the control plane")
        with job.transaction("retention.applied") as session:
            store_deleted, store_anonymised, sums = apply_control_plane(
                settings, session, workdir, job.intent, key
            )
            deleted = {f"lake.{t}": e["deleted"] for t, e in tables.items()} | store_deleted
            anonymised = {
                f"lake.{t}": e["anonymised"] for t, e in tables.items() if t != LINEAGE_TABLE
            } | store_anonymised
            results = {
                "deleted": dict(sorted(deleted.items())),
                "anonymised": dict(sorted(anonymised.items())),
                "delivery_dirs_removed": job.intent["dirs_removed"],
                "revocations": job.intent["revocations"],
                "versions_vacuumed": job.intent["versions_vacuumed"],
            }
            row = session.get(RetentionPurge, purge_id)
            assert row is not None
            row.state, row.applied_at, row.results = "applied", datetime.now(UTC), results
            SqlAuditSink().append(
                session,
                RetentionApplied(
                    purge_id=purge_id,
                    plan_sha256=intent["plan_sha256"],
                    deleted=results["deleted"],
                    anonymised=results["anonymised"],
                    delivery_dirs_removed=results["delivery_dirs_removed"],
                    revocations=results["revocations"],
                    versions_vacuumed={
                        f"lake.{t}": v for t, v in results["versions_vacuumed"].items()
                    },
                    consent_anchor_removed=sums["removed"],
                    consent_anchor_added=sums["added"],
                ),
            )
    if not _reached(job, "retention.verified"):
        step("verifying every store")
        verify_purge(settings, job, key)
    shutil.rmtree(workdir, ignore_errors=True)
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        row = session.get(RetentionPurge, purge_id)
        assert row is not None
        return {
            "purge_id": purge_id,
            "plan_sha256": intent["plan_sha256"],
            "results": row.results,
            "evidence": row.evidence,
            "state": row.state,
        }


def _reached(job: Job, step: str) -> bool:
    """Whether the job already recorded `step` (steps are recorded in order)."""
    order = JOB_STEPS["retention"]
    return job.step_name in order and order.index(job.step_name) >= order.index(step)


class RetentionRecoverer:
    """A purge not yet planned is undone (its saved decisions removed); a planned one is
    finished from its saved decisions (`complete_purge`)."""

    def __init__(self, revoker: Revoker | None) -> None:
        self.revoker = revoker

    def roll_back(self, settings: Settings, job: JobRecord) -> None:
        shutil.rmtree(workdir_of(settings, job.id), ignore_errors=True)

    def roll_forward(self, settings: Settings, job: JobRecord) -> None:
        with resume_job(settings, job) as resumed:
            complete_purge(settings, resumed, revoker=self.revoker)


# Without revocations a planned purge that delivered posts cannot be finished; the home's
# recovery (`consentry.recovery`) registers the recoverer with them.
register_recoverer("retention", RetentionRecoverer(revoker=None))


def _retention_lineage(settings: Settings, job: JobRecord, *, detail: bool) -> RunLineage:
    """A purge reads and rewrites every lake table it may purge (with `detail`, each table
    as it is afterwards: its schema and rows) and records the purge."""
    tables = (*LAKE_CATEGORIES.values(), LINEAGE_TABLE)
    return RunLineage(
        "retention.apply",
        inputs=tuple(lake_dataset(settings, t, detail=False) for t in tables),
        outputs=(
            *(lake_dataset(settings, t, detail=detail) for t in tables),
            store_dataset(settings, "retention_purges", detail=detail, rows=1 if detail else None),
        ),
    )


register_lineage("retention", _retention_lineage)


def purge_history(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    """The newest purges first, as plain data (state, counts, results, evidence)."""
    with store.session() as session:
        rows = session.scalars(
            sa.select(RetentionPurge)
            .order_by(RetentionPurge.planned_at.desc(), RetentionPurge.id)
            .limit(limit)
        ).all()
        return [
            {
                "purge_id": r.id,
                "state": r.state,
                "plan_sha256": r.plan_sha256,
                "policy_version": r.policy_version,
                "at": rfc3339(r.at),
                "planned_at": rfc3339(r.planned_at),
                "applied_at": None if r.applied_at is None else rfc3339(r.applied_at),
                "verified_at": None if r.verified_at is None else rfc3339(r.verified_at),
                "planned": r.planned,
                "results": r.results,
                "evidence": r.evidence,
            }
            for r in rows
        ]
