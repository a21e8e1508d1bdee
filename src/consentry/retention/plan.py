"""The retention planner: a pure computation of what the rules will delete, keep and hold.

`compute_plan` only reads: lake snapshots (through an in-memory engine), the control plane
(SELECTs), the delivery manifests and the policy file. Its result is plain JSON with a
content hash over the plan *and* fingerprints of every input it read, so `apply` can prove
that nothing changed between planning and execution.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ibis
import pyarrow as pa
import sqlalchemy as sa

from consentry.audit import canonical_json
from consentry.delivery.build import LINEAGE_SCHEMA, LINEAGE_TABLE
from consentry.delivery.service import deliveries_dir, list_deliveries
from consentry.engine import Lake, connect
from consentry.errors import ConsentryError
from consentry.instants import rfc3339
from consentry.policy import PolicyFile, PolicyVersion, describe_retention, load_policy
from consentry.policy.model import RETENTION_CATEGORIES, RetentionRule
from consentry.retention.candidates import (
    LAKE_CATEGORIES,
    Sources,
    candidate_counts,
    candidates,
    hold_tables,
)
from consentry.retention.holds import HoldSet, hold_set, list_holds
from consentry.retention.plan_file import (
    PLAN_FORMAT,
    CategoryPlan,
    PlanGap,
    PlanHold,
    PlanPolicy,
    RetentionPlan,
    plan_sha256,
)
from consentry.retention.rules import Cutoffs, cutoffs_for
from consentry.settings import Settings
from consentry.store import Store, open_store
from consentry.store.models import (
    AuditEventRow,
    AuditLeafRow,
    ConsentEventRow,
    LegalHold,
    Subject,
)

if TYPE_CHECKING:
    import ibis.expr.types as ir

__all__ = [
    "CATEGORY_STORES",
    "CATEGORY_UNITS",
    "RULE_TABLES",
    "SEALED",
    "PlanContext",
    "audit_due",
    "compute_plan",
    "count_actions",
    "delivery_index",
    "inputs_fingerprint",
    "ledger_events",
    "open_context",
    "planner_backend",
    "rule_for",
    "sealed_audit_events",
]

CATEGORY_UNITS = {
    "posts": "posts",
    "profile": "profiles",
    "consent_evidence": "consent events",
    "access_events": "access events",
    "deliveries": "deliveries",
    "audit": "audit events",
}

_SINGULAR = {
    "posts": "post",
    "profiles": "profile",
    "consent events": "consent event",
    "access events": "access event",
    "deliveries": "delivery",
    "audit events": "audit event",
}


def _count_of(count: int, unit: str) -> str:
    """`1 post`, `2 posts`, `1,000 posts`."""
    return f"{count:,} {_SINGULAR[unit] if count == 1 else unit}"


CATEGORY_STORES = {
    "posts": ["lake.posts"],
    "profile": ["lake.users", "store.subjects"],
    "consent_evidence": ["lake.consent_events", "store.consent_events", "store.consent_state"],
    "access_events": ["lake.access_events"],
    "deliveries": ["deliveries/", f"lake.{LINEAGE_TABLE}"],
    "audit": ["store.audit_events"],
}
"""Category -> every place its records live (all are changed by apply and re-queried)."""

RULE_TABLES = ("users", "posts", "consent_events", "access_events", "entities", LINEAGE_TABLE)
"""Lake tables the rules read: their snapshots are inputs of every plan."""

_COVERED_TABLES = frozenset({*LAKE_CATEGORIES.values(), LINEAGE_TABLE})
_LEDGER_EVENTS = pa.schema(
    [("event_id", pa.string()), ("user_id", pa.string()), ("at", pa.timestamp("us", tz="UTC"))]
)
_DELIVERIES = pa.schema(
    [("delivery_id", pa.string()), ("created_at", pa.timestamp("us", tz="UTC"))]
)
_ACTIONS = ("keep", "delete", "anonymise", "held", "done")


def planner_backend(settings: Settings, engine: str | None = None) -> ibis.BaseBackend:
    """An engine for planning that writes nothing into the home.

    DuckDB spills to the system's temporary directory instead of `<home>/tmp` (creating
    that directory would be a write), within the configured memory limit.
    """
    return connect(
        engine or settings.engine,
        spark_master=settings.spark_master,
        memory_limit=settings.duckdb_memory_limit,
        temp_directory=Path(tempfile.gettempdir()) / "consentry-retention",
    )


def delivery_index(settings: Settings) -> pa.Table:
    """One row per visible delivery directory: `delivery_id`, `created_at` (from manifests)."""
    manifests = list_deliveries(settings)
    return pa.table(
        {
            "delivery_id": [m["delivery_id"] for m in manifests],
            "created_at": [
                datetime.fromisoformat(str(m["created_at"]).replace("Z", "+00:00")).astimezone(UTC)
                for m in manifests
            ],
        },
        schema=_DELIVERIES,
    )


def ledger_events(store: Store) -> pa.Table:
    """The control plane's consent events (`event_id`, `user_id`, `at`) as Arrow."""
    with store.session() as session:
        rows = session.execute(
            sa.select(ConsentEventRow.event_id, ConsentEventRow.user_id, ConsentEventRow.at)
        ).all()
    return pa.table(
        {
            "event_id": [r[0] for r in rows],
            "user_id": [r[1] for r in rows],
            "at": [r[2] for r in rows],
        },
        schema=_LEDGER_EVENTS,
    )


def _view(backend: ibis.BaseBackend, name: str, data: pa.Table) -> ir.Table:
    # A view over in-memory data (not create_table: on Spark that writes a managed table).
    return backend.create_view(name, ibis.memtable(data), overwrite=True)


def build_sources(
    backend: ibis.BaseBackend,
    lake: Lake,
    *,
    events: pa.Table,
    deliveries: pa.Table,
    holds: HoldSet,
) -> Sources:
    """Register every table the rules read on `backend` (lake views and in-memory data)."""
    users = lake.table(backend, "users")
    posts = lake.table(backend, "posts")
    lake_events = lake.table(backend, "consent_events").select("event_id", "user_id", "at")
    store_events = _view(backend, "retention_ledger_events", events)
    # Events the ledger recorded itself (pages, API) are not in the lake: add them once.
    consent = lake_events.union(store_events.anti_join(lake_events, "event_id"))
    if lake.exists(LINEAGE_TABLE):
        lineage = lake.table(backend, LINEAGE_TABLE)
    else:
        lineage = _view(backend, "retention_lineage", LINEAGE_SCHEMA.empty_table())
    held_users, held_entities = hold_tables(holds)
    return Sources(
        users=users,
        posts=posts,
        consent=consent,
        access_events=lake.table(backend, "access_events"),
        entities=lake.table(backend, "entities"),
        lineage=lineage,
        deliveries=_view(backend, "retention_deliveries", deliveries),
        held_users=_view(backend, "retention_held_users", held_users),
        held_entities=_view(backend, "retention_held_entities", held_entities),
    )


@dataclass(frozen=True, slots=True)
class PlanContext:
    """Everything one planning run reads, gathered once."""

    at: datetime
    policy: PolicyFile
    version: PolicyVersion
    holds: HoldSet
    cuts: dict[str, Cutoffs]
    sources: Sources
    backend: ibis.BaseBackend
    lake: Lake
    store: Store
    deliveries: pa.Table
    owners: bool = False
    """Also count records whose account is missing from `users` (a join with every account)."""


@contextmanager
def open_context(
    settings: Settings,
    at: datetime,
    *,
    engine: str | None = None,
    backend: ibis.BaseBackend | None = None,
    policy: PolicyFile | None = None,
    owners: bool = False,
) -> Iterator[PlanContext]:
    """Gather the inputs of a plan at `at` and register the sources on an engine; the store
    is closed afterwards.

    1. The rules are the policy version in force at `at`.
    2. Holds are those active at the later of `at` and now: a purge runs now, so a hold
       placed since `at` still wins; a plan for a future instant previews the holds then.
    """
    at = at.astimezone(UTC)
    holds_at = max(at, datetime.now(UTC))
    policy = policy or load_policy(settings.policy_file)
    version = policy.version_at(at)
    if version is None:
        raise ConsentryError(f"no policy version is in force at {rfc3339(at)}")
    store = open_store(settings.resolved_database_url)
    try:
        holds = hold_set(list_holds(store, active_at=holds_at), holds_at)
        lake = Lake.of(settings)
        deliveries = delivery_index(settings)
        backend = backend or planner_backend(settings, engine)
        sources = build_sources(
            backend, lake, events=ledger_events(store), deliveries=deliveries, holds=holds
        )
        cuts = {
            str(category): cutoffs_for(rule, at) for category, rule in version.retention.items()
        }
        yield PlanContext(
            at, policy, version, holds, cuts, sources, backend, lake, store, deliveries, owners
        )
    finally:
        store.close()


def rule_for(version: PolicyVersion, category: str) -> RetentionRule | None:
    """The version's rule for `category`, or None (a gap)."""
    return next((r for c, r in version.retention.items() if c == category), None)


def category_candidates(ctx: PlanContext, category: str) -> ir.Table:
    """The candidate table of a lake or delivery category under the context's rules."""
    return candidates(
        ctx.sources,
        category,
        rule_for(ctx.version, category),
        ctx.cuts.get(category),
        ctx.holds,
        owners=ctx.owners,
    )


def category_counts(ctx: PlanContext, category: str) -> list[dict[str, Any]]:
    """(action, trigger, hold, note) -> records of a category, counted on the engine."""
    return count_actions(
        ctx.backend,
        candidate_counts(
            ctx.sources,
            category,
            rule_for(ctx.version, category),
            ctx.cuts.get(category),
            ctx.holds,
            owners=ctx.owners,
        ),
    )


def count_actions(backend: ibis.BaseBackend, table: ir.Table) -> list[dict[str, Any]]:
    """(action, trigger, hold, note) -> records, as sorted plain rows; `table` is either a
    candidate table or already counted (an `n` column)."""
    if "n" not in table.columns:
        table = table.group_by(["action", "trigger", "hold", "note"]).agg(n=ibis._.count())
    rows: list[dict[str, Any]] = backend.to_pyarrow(table).to_pylist()
    return sorted(
        ({**r, "n": int(r["n"])} for r in rows),
        key=lambda r: tuple(str(r[k]) for k in ("action", "trigger", "hold", "note")),
    )


def audit_due(ctx: PlanContext, session: Any) -> sa.ColumnElement[bool] | None:
    """A SQL condition selecting exactly the audit events the audit rule makes due, or None.

    1. An exact duration: `at <= cut-off`.
    2. With months or years (no cut-off exists, see `consentry.retention.rules`): every
       event at or before `at - duration` is due; the few events in the following four
       days (where month-end clamping can also make them due) are checked one by one with
       `Duration.add_to` and added by sequence number.
    """
    cuts = ctx.cuts.get("audit")
    if cuts is None or cuts.created is None:
        return None
    condition = cuts.created
    if condition.cutoff is not None:
        return AuditEventRow.at <= condition.cutoff
    base = condition.duration.subtract_from(condition.at)
    while not condition.holds_for(base):  # guard: step back into the due prefix
        base -= timedelta(days=1)
    window = session.execute(
        sa.select(AuditEventRow.seq, AuditEventRow.at).where(
            AuditEventRow.at > base, AuditEventRow.at <= base + timedelta(days=4)
        )
    ).all()
    extra = [seq for seq, at in window if condition.holds_for(at)]
    due: sa.ColumnElement[bool] = AuditEventRow.at <= base
    return sa.or_(due, AuditEventRow.seq.in_(extra)) if extra else due


SEALED = "merkle-log"
"""The `hold` under which due audit events sealed in the Merkle log are counted (kept)."""


def sealed_audit_events() -> sa.Select[tuple[int]]:
    """Sequence numbers of audit events that are leaves of the tamper-evident Merkle log:
    deleting one would break the log's inclusion and consistency proofs, so they stay."""
    return sa.select(AuditLeafRow.event_seq)


def _audit_counts(ctx: PlanContext) -> list[dict[str, Any]]:
    with ctx.store.session() as session:
        total = session.scalar(sa.select(sa.func.count()).select_from(AuditEventRow)) or 0
        due = sealed = 0
        condition = audit_due(ctx, session)
        if condition is not None:
            due = (
                session.scalar(
                    sa.select(sa.func.count()).select_from(AuditEventRow).where(condition)
                )
                or 0
            )
            sealed = (
                session.scalar(
                    sa.select(sa.func.count())
                    .select_from(AuditEventRow)
                    .where(condition, AuditEventRow.seq.in_(sealed_audit_events()))
                )
                or 0
            )
    rows: list[dict[str, Any]] = []
    hold = ctx.holds.categories.get("audit")
    if due - sealed:
        action = "held" if hold else "delete"
        rows.append(
            {"action": action, "trigger": "max_age", "hold": hold, "note": None, "n": due - sealed}
        )
    if sealed:
        rows.append(
            {"action": "held", "trigger": "max_age", "hold": SEALED, "note": None, "n": sealed}
        )
    if total - due:
        rows.append(
            {"action": "keep", "trigger": None, "hold": None, "note": None, "n": total - due}
        )
    return rows


def _trigger_words(rule: RetentionRule, trigger: str) -> str:
    if trigger == "max_age" and rule.max_age is not None:
        return f"older than {rule.max_age.describe()}"
    if trigger == "while_account_active":
        return "the account was deleted"
    if trigger == "after_account_deleted" and rule.after_account_deleted is not None:
        return f"the account was deleted more than {rule.after_account_deleted.describe()} ago"
    if trigger == "after_post_deleted" and rule.after_post_deleted is not None:
        grace = rule.after_post_deleted
        return "the post was deleted" + (
            "" if grace.is_zero else f" more than {grace.describe()} ago"
        )
    return trigger


def summarise(
    category: str,
    rule: RetentionRule | None,
    counts: list[dict[str, Any]],
    **extra: Any,
) -> CategoryPlan:
    """A category's plan entry from its action counts: totals, reasons and explanations."""
    unit = CATEGORY_UNITS[category]
    totals = dict.fromkeys(_ACTIONS, 0)
    by_trigger: dict[str, int] = {}
    held_by: dict[str, int] = {}
    unknown_owner = 0
    for row in counts:
        totals[row["action"]] += row["n"]
        if row["action"] in ("delete", "anonymise") and row["trigger"]:
            by_trigger[row["trigger"]] = by_trigger.get(row["trigger"], 0) + row["n"]
        if row["action"] == "held" and row["hold"]:
            held_by[row["hold"]] = held_by.get(row["hold"], 0) + row["n"]
        if row["note"] == "unknown_owner":
            unknown_owner += row["n"]
    total = sum(totals.values())
    explanation: list[str] = []
    if rule is None:
        explanation.append(
            f"gap: no retention rule; {_count_of(total, unit)} kept with no stated limit"
        )
    else:
        explanation.append(f"rule: {describe_retention(rule)}")
        verb = "deleted" if rule.action == "delete" else "anonymised"
        for trigger, n in sorted(by_trigger.items()):
            explanation.append(
                f"{_count_of(n, unit)} to be {verb}: {_trigger_words(rule, trigger)}"
            )
        for hold, n in sorted(held_by.items()):
            if hold == SEALED:
                explanation.append(
                    f"{_count_of(n, unit)} due but sealed in the tamper-evident audit log: kept, "
                    "as deleting them would break its proofs (they hold no personal data)"
                )
            else:
                explanation.append(f"{_count_of(n, unit)} due but kept by legal hold {hold}")
        if totals["done"]:
            explanation.append(f"{_count_of(totals['done'], unit)} due and already anonymised")
        if unknown_owner:
            explanation.append(
                f"{_count_of(unknown_owner, unit)} of accounts missing from users: the account "
                "condition cannot apply"
            )
        explanation.append(f"{_count_of(totals['keep'], unit)} not due")
    return CategoryPlan(
        category=category,
        unit=unit,
        rule=None if rule is None else rule.model_dump(mode="json"),
        rule_text=None if rule is None else describe_retention(rule),
        stores=tuple(CATEGORY_STORES[category]),
        total=total,
        delete=totals["delete"],
        anonymise=totals["anonymise"],
        held=totals["held"],
        keep=totals["keep"],
        done=totals["done"],
        unknown_owner=unknown_owner,
        by_trigger=dict(sorted(by_trigger.items())),
        held_by=dict(sorted(held_by.items())),
        explanation=tuple(explanation),
        **extra,
    )


def lake_fingerprint(lake: Lake) -> dict[str, Any]:
    """Table -> latest version and its data files (path in the table, size) for every table
    rules read."""
    found: dict[str, Any] = {}
    for name in RULE_TABLES:
        if not lake.exists(name):
            found[name] = None
            continue
        found[name] = {
            "version": lake.version(name),
            "files": [[part.relative, part.size] for part in lake.parts(name)],
        }
    return found


def store_fingerprint(ctx: PlanContext) -> dict[str, Any]:
    """What the plan read from the control plane, as counts, maxima and hashes (no ids)."""
    with ctx.store.session() as session:
        holds = session.execute(
            sa.select(
                LegalHold.id,
                LegalHold.scope,
                LegalHold.target,
                LegalHold.created_at,
                LegalHold.until,
                LegalHold.released_at,
            ).order_by(LegalHold.id)
        ).all()
        events = session.execute(sa.select(sa.func.count(), sa.func.max(ConsentEventRow.seq))).one()
        subjects = session.scalar(sa.select(sa.func.count()).select_from(Subject)) or 0
        audit: list[int] = [0, 0]
        condition = audit_due(ctx, session)
        if condition is not None:
            row = session.execute(
                sa.select(sa.func.count(), sa.func.max(AuditEventRow.seq)).where(condition)
            ).one()
            audit = [int(row[0] or 0), int(row[1] or 0)]
    hold_text = canonical_json(
        {"holds": [[str(v) if v is not None else None for v in h] for h in holds]}
    )
    return {
        "holds_sha256": hashlib.sha256(hold_text.encode()).hexdigest(),
        "active_holds": [h.id for h in ctx.holds.active],
        "consent_events": [int(events[0] or 0), int(events[1] or 0)],
        "subjects": int(subjects),
        "audit_due": audit,
    }


def inputs_fingerprint(ctx: PlanContext, settings: Settings) -> dict[str, Any]:
    """Fingerprints of every input: policy, lake snapshots, store state, delivery dirs."""
    ids = sorted(ctx.deliveries.column("delivery_id").to_pylist())
    return {
        "policy": {"content_sha256": ctx.policy.content_sha256, "version": ctx.version.version},
        "lake": lake_fingerprint(ctx.lake),
        "store": store_fingerprint(ctx),
        "deliveries": {
            "dir": str(deliveries_dir(settings)),
            "count": len(ids),
            "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        },
    }


def _gaps(ctx: PlanContext, entries: list[CategoryPlan]) -> list[PlanGap]:
    gaps = [
        PlanGap(
            "category",
            e.category,
            e.total,
            f"no retention rule for {e.category} in version {ctx.version.version}",
        )
        for e in entries
        if e.rule is None
    ]
    for table in ctx.lake.tables():
        if table not in _COVERED_TABLES:
            gaps.append(
                PlanGap(
                    "table",
                    f"lake.{table}",
                    ctx.lake.row_count(table),
                    f"lake table {table} belongs to no retention category",
                )
            )
    return gaps


def compute_plan(
    settings: Settings,
    *,
    at: datetime | None = None,
    engine: str | None = None,
    backend: ibis.BaseBackend | None = None,
    policy: PolicyFile | None = None,
    owners: bool = False,
) -> RetentionPlan:
    """Plan retention at `at` (default now): counts per category and rule, holds, gaps.

    1. The policy version in force at `at` gives the rules; holds active at `at` apply.
    2. Each lake category's candidates are counted on the engine (DuckDB or Spark, one
       expression); deliveries by their manifests' creation instant; the audit log in SQL.
    3. Categories without a rule and lake tables outside every category are gaps.
    4. The plan carries fingerprints of every input and its own content hash.
    Nothing is written anywhere.
    """
    started = datetime.now(UTC)
    when = (at or started).astimezone(UTC)
    with open_context(
        settings, when, engine=engine, backend=backend, policy=policy, owners=owners
    ) as ctx:
        entries: list[CategoryPlan] = []
        delivery_ids: list[str] = []
        lineage_rows = 0
        for category in RETENTION_CATEGORIES:
            rule = rule_for(ctx.version, category)
            if category == "audit":
                counts = _audit_counts(ctx)
            else:
                counts = category_counts(ctx, category)
                if category == "deliveries":
                    table = category_candidates(ctx, category)
                    doomed = table.filter(table.action == "delete").select("key")
                    delivery_ids = sorted(ctx.backend.to_pyarrow(doomed).column("key").to_pylist())
                    if delivery_ids:
                        lineage = ctx.sources.lineage
                        lineage_rows = int(
                            ctx.backend.to_pyarrow(
                                lineage.filter(lineage.delivery_id.isin(delivery_ids)).aggregate(
                                    n=ibis._.count()
                                )
                            )
                            .column("n")[0]
                            .as_py()
                        )
            extra: dict[str, Any] = {}
            if category == "deliveries":
                extra = {"delivery_ids": tuple(delivery_ids), "lineage_rows": lineage_rows}
            conditions = ctx.cuts[category].as_dict() if rule else {}
            entries.append(summarise(category, rule, counts, conditions=conditions, **extra))
        gaps = _gaps(ctx, entries)
        body: dict[str, Any] = {
            "format": PLAN_FORMAT,
            "at": rfc3339(when),
            "owners_checked": owners,
            "policy": {
                "file": ctx.policy.source,
                "content_sha256": ctx.policy.content_sha256,
                "version": ctx.version.version,
            },
            "holds": [{"id": h.id, "scope": h.scope, "matter": h.matter} for h in ctx.holds.active],
            "categories": [e.as_dict() for e in entries],
            "gaps": [asdict(g) for g in gaps],
            "totals": {
                action: sum(getattr(e, action) for e in entries)
                for action in ("delete", "anonymise", "held", "keep", "done")
            },
            "inputs": inputs_fingerprint(ctx, settings),
        }
        engine_name = ctx.backend.name
    return RetentionPlan(
        at=body["at"],
        owners_checked=owners,
        policy=PlanPolicy(**body["policy"]),
        holds=tuple(PlanHold(**h) for h in body["holds"]),
        categories=tuple(entries),
        gaps=tuple(gaps),
        totals=body["totals"],
        inputs=body["inputs"],
        plan_sha256=plan_sha256(body),
        meta={
            "engine": engine_name,
            "computed_at": rfc3339(started),
            "seconds": round((datetime.now(UTC) - started).total_seconds(), 3),
        },
    )
