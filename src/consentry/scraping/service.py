"""Run assessments for a Consentry home: inputs, policy terms, recording and read-back.

1. Inputs: `--events` files (Parquet, CSV, JSON Lines) are validated like imports
   (`FILE:ROW: field: problem`); without them the lake's `access_events` is read. The
   entities come from `--entities` or the lake's `entities` table and are checked
   (`check_owners`). Nothing is written before every input has been accepted.
2. Terms: the policy version named by `--policy-version`, else the one in force at the
   latest access; its `scraping` block gives the threshold, window, rate, currency and
   rounding (`--rounding` overrides the rounding).
3. Recording: the full result goes to `<home>/scraping/assessments/<id>.json` (atomic
   write) and a `scraping_assessments` row plus a `scraping.assessed` audit event are
   committed in one transaction. A home whose store is not initialised is not recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import sqlalchemy as sa

from consentry.audit import SqlAuditSink, canonical_json
from consentry.audit.event_types import ScrapingAssessed
from consentry.engine import Lake, connect_for
from consentry.errors import BadInput, Problem
from consentry.instants import rfc3339
from consentry.jobs import JobRecord, register_recoverer, run_job
from consentry.jobs.lineage import (
    LineageDataset,
    RunLineage,
    lake_dataset,
    register_lineage,
    store_dataset,
)
from consentry.policy import PolicyFile, PolicyVersion, load_policy
from consentry.schema import table_spec
from consentry.scraping.assessment import assess
from consentry.scraping.attribution import Owners, check_owners
from consentry.scraping.results import Assessment
from consentry.scraping.rules import MODES, ROUNDINGS, Terms
from consentry.settings import Settings
from consentry.sources.readers import read_file
from consentry.sources.validate import conform
from consentry.store import open_store
from consentry.store.models import ScrapingAssessmentRow

if TYPE_CHECKING:
    import ibis
    import ibis.expr.types as ir

__all__ = [
    "AssessOptions",
    "latest_assessment",
    "load_events",
    "load_owners",
    "record_assessment",
    "resolve_terms",
    "run_assessment",
    "scraping_dir",
]

TOP_ENTITIES = 50
"""Entities (largest 24 h maxima first) kept in the recorded summary for the console."""


def scraping_dir(settings: Settings) -> Path:
    """`<home>/scraping`: recorded assessments and evidence packs."""
    return settings.home / "scraping"


def _conformed(path: Path, table: str) -> tuple[pa.Table, pa.Array | None]:
    spec = table_spec(table)
    raw = read_file(path, spec)
    result = conform(raw, spec)
    if result.problems:
        raise BadInput(result.problems)
    return result.table, raw.row_numbers


def load_events(paths: Sequence[Path]) -> pa.Table:
    """Validated access events from files, concatenated (first bad file stops)."""
    tables = [_conformed(Path(p), "access_events")[0] for p in paths]
    return pa.concat_tables(tables)


def load_owners(settings: Settings, path: Path | None) -> Owners:
    """Checked entities from `path`, else from the lake (empty when it has none)."""
    if path is not None:
        table, rows = _conformed(Path(path), "entities")
        return check_owners(table, location=str(path), row_numbers=rows)
    lake = Lake.of(settings)
    return check_owners(lake.read_arrow("entities"), location="lake:entities")


def resolve_terms(
    policy: PolicyFile, version: str | None, rounding: str | None, latest: datetime | None
) -> tuple[PolicyVersion, Terms]:
    """The policy version to apply and its scraping terms (see module doc, step 2)."""
    if rounding is not None and rounding not in ROUNDINGS:
        raise BadInput(
            Problem("--rounding", None, None, f"{rounding!r}: use one of {', '.join(ROUNDINGS)}")
        )
    if version is not None:
        chosen = policy.get(version)
    else:
        at = latest or datetime.now(UTC)
        found = policy.version_at(at) or policy.versions[-1]
        chosen = found
    if chosen.scraping is None:
        raise BadInput(
            Problem(
                policy.source,
                None,
                "scraping",
                f"policy version {chosen.version!r} has no scraping block",
            )
        )
    return chosen, Terms.from_policy(chosen.scraping, rounding)


class AssessOptions:
    """What `consentry scraping assess` was asked (all optional, defaults from settings)."""

    def __init__(
        self,
        *,
        events: Sequence[Path] = (),
        entities: Path | None = None,
        policy_file: Path | None = None,
        policy_version: str | None = None,
        rounding: str | None = None,
        mode: str = "earliest",
        engine: str | None = None,
        method: str | None = None,
        only: Sequence[str] | None = None,
    ) -> None:
        if mode not in MODES:
            raise BadInput(Problem("--mode", None, None, f"{mode!r}: use earliest or max_total"))
        self.events = list(events)
        self.entities = entities
        self.policy_file = policy_file
        self.policy_version = policy_version
        self.rounding = rounding
        self.mode = mode
        self.engine = engine
        self.method = method
        self.only = list(only) if only is not None else None


def _events_expr(
    backend: ibis.BaseBackend, settings: Settings, events: pa.Table | None
) -> ir.Table:
    import ibis

    if events is not None:
        return ibis.memtable(events.combine_chunks())
    return Lake.of(settings).table(backend, "access_events")


def run_assessment(
    settings: Settings,
    options: AssessOptions,
    *,
    on_progress: Callable[[str], None] | None = None,
) -> Assessment:
    """Validate the inputs, pick the terms and assess (nothing is written here)."""
    policy = load_policy(options.policy_file or settings.policy_file)
    if options.policy_version is not None:
        policy.get(options.policy_version)
    events = load_events(options.events) if options.events else None
    owners = load_owners(settings, options.entities)
    backend = connect_for(settings, options.engine)
    expr = _events_expr(backend, settings, events)
    latest_ts = backend.to_pyarrow(expr.ts.max().name("latest").as_table())["latest"][0].as_py()
    if latest_ts is not None and latest_ts.tzinfo is None:
        # Spark hands instants back in its session's zone (UTC: `spark_session`) without
        # an offset; DuckDB keeps the lake's UTC offset.
        latest_ts = latest_ts.replace(tzinfo=UTC)
    version, terms = resolve_terms(policy, options.policy_version, options.rounding, latest_ts)
    return assess(
        backend,
        expr,
        owners,
        terms,
        mode=options.mode,
        policy_version=version.version,
        method=options.method,
        only=options.only,
        on_progress=on_progress,
    )


def _summary(assessment: Assessment) -> dict[str, Any]:
    ranked = sorted(assessment.entities, key=lambda e: (-e.max_posts_in_window, e.entity))[
        :TOP_ENTITIES
    ]
    return {
        "threshold_posts": assessment.terms.threshold,
        "window_seconds": assessment.terms.window_us // 1_000_000,
        "series_from": rfc3339(assessment.sparkline_from) if assessment.sparkline_from else None,
        "top": [{**e.to_json(), "series": assessment.sparklines.get(e.entity, [])} for e in ranked],
    }


class _AssessmentRecoverer:
    """An assessment wrote its result file under a temporary name: remove it, or put it in
    place once its row and audit event committed."""

    def roll_back(self, settings: Settings, job: JobRecord) -> None:
        (_assessments_dir(settings) / job.intent["tmp"]).unlink(missing_ok=True)

    def roll_forward(self, settings: Settings, job: JobRecord) -> None:
        tmp = _assessments_dir(settings) / job.intent["tmp"]
        if tmp.exists():
            os.replace(tmp, _assessments_dir(settings) / f"{job.intent['assessment_id']}.json")


register_recoverer("assess", _AssessmentRecoverer())


def _assessment_lineage(settings: Settings, job: JobRecord, *, detail: bool) -> RunLineage:
    """An assessment reads the access events (the lake's, or the files given) and the
    entities; it writes its result file (one record per entity) and its row. With
    `detail`, the row's counts: accesses read (one events file) and entities assessed."""
    entities = accesses = None
    if detail:
        with open_store(settings.resolved_database_url) as store, store.session() as session:
            row = session.get(ScrapingAssessmentRow, job.intent["assessment_id"])
            if row is not None:
                entities, accesses = row.entities, row.accesses
    files = job.intent.get("events") or []
    events = (
        tuple(
            LineageDataset("file", name, rows=accesses if len(files) == 1 else None)
            for name in files
        )
        if files
        else (lake_dataset(settings, "access_events", detail=detail),)
    )
    owners = job.intent.get("entities")
    result = _assessments_dir(settings) / f"{job.intent['assessment_id']}.json"
    return RunLineage(
        "scraping.assess",
        inputs=(
            *events,
            LineageDataset("file", owners)
            if owners
            else lake_dataset(settings, "entities", detail=detail),
        ),
        outputs=(
            LineageDataset("file", str(result.resolve()), rows=entities),
            store_dataset(
                settings, "scraping_assessments", detail=detail, rows=1 if detail else None
            ),
        ),
    )


register_lineage("assess", _assessment_lineage)


def _assessments_dir(settings: Settings) -> Path:
    return scraping_dir(settings) / "assessments"


def record_assessment(
    settings: Settings,
    assessment: Assessment,
    *,
    events: Sequence[Path] = (),
    entities: Path | None = None,
) -> str | None:
    """Record `assessment` (module doc, step 3); returns its id, or None when the home's
    store is not initialised (`consentry init`). `events` and `entities`: the files it
    read instead of the lake's `access_events` and `entities` (its OpenLineage inputs).

    A job (`assess`):
    1. The canonical result is written under a temporary name (`assess.written`).
    2. One transaction holds its `scraping_assessments` row (`_assessment_row`), its
       `scraping.assessed` audit event (`_assessed_event`) and the job's commit.
    3. The file takes its name (rolled forward if the process dies in between).
    """
    with open_store(settings.resolved_database_url) as store:
        if store.current_revision() != store.head_revision():
            return None
    assessment_id = uuid.uuid4().hex
    body = canonical_json(assessment.to_json())
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    target = _assessments_dir(settings)
    tmp = target / f".{assessment_id}.json.tmp"
    intent = {
        "assessment_id": assessment_id,
        "tmp": tmp.name,
        "events": [str(path.resolve()) for path in events],
        "entities": str(entities.resolve()) if entities is not None else None,
    }
    with run_job(settings, "assess", assessment_id, intent=intent) as job:
        target.mkdir(parents=True, exist_ok=True)
        tmp.write_text(body, encoding="utf-8")
        job.step("assess.written")
        with job.transaction("assess.committed", commit=True) as session:
            session.add(_assessment_row(assessment_id, assessment, digest))
            SqlAuditSink().append(session, _assessed_event(assessment_id, assessment, digest))
        os.replace(tmp, target / f"{assessment_id}.json")
    return assessment_id


def _assessment_row(
    assessment_id: str, assessment: Assessment, result_sha256: str
) -> ScrapingAssessmentRow:
    """The `scraping_assessments` row of a recorded assessment (its console summary too)."""
    return ScrapingAssessmentRow(
        id=assessment_id,
        assessed_at=datetime.now(UTC),
        policy_version=assessment.policy_version,
        mode=assessment.mode,
        rounding=assessment.terms.rounding,
        engine=assessment.engine,
        accesses=assessment.accesses,
        entities=len(assessment.entities),
        billed_entities=len(assessment.billed),
        total_amount=f"{assessment.total_amount:.2f}",
        currency=assessment.terms.currency,
        result_sha256=result_sha256,
        summary=_summary(assessment),
    )


def _assessed_event(
    assessment_id: str, assessment: Assessment, result_sha256: str
) -> ScrapingAssessed:
    """The `scraping.assessed` audit event of a recorded assessment."""
    return ScrapingAssessed(
        assessment_id=assessment_id,
        policy_version=assessment.policy_version,
        mode=assessment.mode,
        rounding=assessment.terms.rounding,
        engine=assessment.engine,
        accesses=assessment.accesses,
        entities=len(assessment.entities),
        billed_entities=len(assessment.billed),
        billed_windows=sum(len(e.windows) for e in assessment.entities),
        total_amount=f"{assessment.total_amount:.2f}",
        currency=assessment.terms.currency,
        result_sha256=result_sha256,
    )


def latest_assessment(settings: Settings) -> dict[str, Any] | None:
    """The newest recorded assessment (row fields and summary), or None."""
    with open_store(settings.resolved_database_url) as store:
        if store.current_revision() != store.head_revision():
            return None
        with store.session() as session:
            row = session.scalars(
                sa.select(ScrapingAssessmentRow).order_by(ScrapingAssessmentRow.assessed_at.desc())
            ).first()
            if row is None:
                return None
            return {
                "id": row.id,
                "assessed_at": row.assessed_at,
                "policy_version": row.policy_version,
                "mode": row.mode,
                "rounding": row.rounding,
                "engine": row.engine,
                "accesses": row.accesses,
                "entities": row.entities,
                "billed_entities": row.billed_entities,
                "total_amount": row.total_amount,
                "currency": row.currency,
                "result_sha256": row.result_sha256,
                "summary": row.summary,
            }


def read_recorded(settings: Settings, assessment_id: str) -> dict[str, Any]:
    """The full recorded result of an assessment."""
    path = _assessments_dir(settings) / f"{assessment_id}.json"
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded
