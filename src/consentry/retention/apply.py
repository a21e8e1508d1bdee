"""The retention executor: apply exactly a plan, then prove it by re-querying every store.

A purge moves through `planned -> applied -> verified`, each step recorded on its
`retention_purges` row and in the audit log. The executor refuses a plan whose file was
edited (content hash) or whose inputs changed since it was computed (fingerprints of the
lake snapshots, the control plane, the delivery directories and the policy file), and it
re-derives the candidates with the planner's own expressions and checks they give the
plan's counts before it changes anything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

import ibis
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from consentry.audit import SqlAuditSink
from consentry.delivery.build import LINEAGE_TABLE
from consentry.delivery.pseudonyms import hmac_sql
from consentry.delivery.service import deliveries_dir
from consentry.engine import PARQUET_COMPRESSION, ROWS_PER_PART
from consentry.errors import BadInput, ConsentryError, Problem
from consentry.instants import rfc3339
from consentry.keys import Keyring
from consentry.policy import load_policy
from consentry.policy.model import ANONYMISABLE_FIELDS, RETENTION_CATEGORIES
from consentry.retention.candidates import ANON_PREFIX, LAKE_CATEGORIES
from consentry.retention.plan import (
    PLAN_FORMAT,
    PlanContext,
    audit_due,
    category_candidates,
    compute_plan,
    count_actions,
    inputs_fingerprint,
    open_context,
    plan_sha256,
    planner_backend,
    rule_for,
    sealed_audit_events,
    summarise,
)
from consentry.settings import Settings
from consentry.sources.schema import arrow_schema
from consentry.store import Store, open_store
from consentry.store.models import (
    AuditEventRow,
    ConsentEventRow,
    ConsentStateRow,
    RetentionPurge,
    Subject,
)

__all__ = [
    "PURGE_STATES",
    "Revoker",
    "StalePlanError",
    "anonymisation_key",
    "apply_plan",
    "load_plan",
    "purge_history",
]

PURGE_STATES = ("planned", "applied", "verified")
_CHUNK = 5_000
"""Ids per SQL IN-list: below every backend's bound-parameter limit."""
_COMPARED = ("total", "keep", "delete", "anonymise", "held", "done", "by_trigger", "held_by")
_KEYS = {
    "posts": "post_id",
    "users": "user_id",
    "consent_events": "event_id",
    "access_events": "request_id",
}


class Revoker(Protocol):
    """Tells licensees that delivered posts were purged (`consentry.revocation.revoke_purged`)."""

    def __call__(
        self, settings: Settings, *, post_ids: pa.Array, purged_at: datetime, purge_id: str
    ) -> int: ...


class StalePlanError(ConsentryError):
    """The plan's inputs changed since it was computed: plan again (exit 1)."""


def anonymisation_key(keyring: Keyring) -> bytes:
    """The HMAC key for anonymised values, derived from the home's pseudonym key (a separate
    key, so anonymised values never equal the audit log's pseudonymous references)."""
    return hmac.new(
        keyring.pseudonym_key, b"consentry.retention.anonymise", hashlib.sha256
    ).digest()


def load_plan(path: Path) -> dict[str, Any]:
    """Read a plan file; BadInput (exit 2) when it is not a plan or was edited."""
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(Problem(str(path), None, None, f"not a readable plan file: {exc}")) from None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise BadInput(
            Problem(str(path), None, "format", f"not a retention plan (expected {PLAN_FORMAT})")
        )
    recorded = plan.get("plan_sha256")
    if recorded != plan_sha256(plan):
        raise BadInput(
            Problem(
                str(path),
                None,
                "plan_sha256",
                "the plan's content does not match its hash: the file was changed after "
                "planning; plan again with `consentry retention plan`",
            )
        )
    return plan


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


def _ids(backend: ibis.BaseBackend, sql: str) -> list[str]:
    column = backend.con.sql(sql).to_arrow_table().column(0)
    return [str(v) for v in column.to_pylist()]


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _rewrite(
    ctx: PlanContext,
    table: str,
    acts: str,
    fields: Mapping[str, str],
    key: bytes,
) -> int:
    """Write a new snapshot of lake `table` without its `delete` rows and with the named
    fields of its `anonymise` rows replaced; returns the rows removed.

    1. The rows come from the live snapshot joined to the materialised candidates (DuckDB
       streams them: memory stays bounded by the engine's limit).
    2. `null` fields become null; `hash` fields become `anon:` + 32 hex digits of
       HMAC-SHA256 under the anonymisation key (a value already `anon:` is kept).
    3. `Lake.writing` makes the snapshot live atomically, or leaves the table as it was.
    """
    schema = arrow_schema(table)
    key_column = _KEYS[table]
    columns = []
    for name in schema.names:
        how = fields.get(name)
        if how == "null":
            columns.append(
                f"CASE WHEN a.action = 'anonymise' THEN NULL ELSE t.{name} END AS {name}"
            )
        elif how == "hash":
            digest = hmac_sql(f"t.{name}", key, "duckdb")
            columns.append(
                f"CASE WHEN a.action = 'anonymise' AND NOT starts_with(t.{name}, '{ANON_PREFIX}') "
                f"THEN '{ANON_PREFIX}' || substr({digest}, 1, 32) ELSE t.{name} END AS {name}"
            )
        else:
            columns.append(f"t.{name}")
    query = (
        f"SELECT {', '.join(columns)} FROM {table} AS t LEFT JOIN "
        f"(SELECT key, action FROM {acts} WHERE action IN ('delete', 'anonymise')) AS a "
        f"ON t.{key_column} = a.key WHERE a.action IS DISTINCT FROM 'delete'"
    )
    before = ctx.lake.row_count(table)
    _write_stream(ctx, table, ctx.backend.con.sql(query).to_arrow_reader(), schema)
    return before - ctx.lake.row_count(table)


def _write_stream(ctx: PlanContext, table: str, reader: Any, schema: pa.Schema) -> None:
    """Stream record batches into parts of at most ROWS_PER_PART rows in a new snapshot."""
    with ctx.lake.writing(table) as staging:
        writer: pq.ParquetWriter | None = None
        rows_in_part = 0
        index = 0
        for batch in reader:
            data = pa.Table.from_batches([batch]).cast(schema)
            offset = 0
            while offset < data.num_rows:
                if writer is None:
                    writer = pq.ParquetWriter(
                        staging / f"part-{index:06d}.parquet",
                        schema,
                        compression=PARQUET_COMPRESSION,
                    )
                take = min(ROWS_PER_PART - rows_in_part, data.num_rows - offset)
                writer.write_table(data.slice(offset, take))
                offset += take
                rows_in_part += take
                if rows_in_part == ROWS_PER_PART:
                    writer.close()
                    writer, rows_in_part, index = None, 0, index + 1
        if writer is not None:
            writer.close()
        elif index == 0:
            # Every row purged: an empty part keeps the schema for readers.
            pq.write_table(
                schema.empty_table(),
                staging / "part-000000.parquet",
                compression=PARQUET_COMPRESSION,
            )


def _rewrite_lineage(ctx: PlanContext, delivery_ids: list[str]) -> int:
    """A new lineage snapshot without the rows of the purged deliveries; rows removed."""
    listed = ", ".join("'" + d.replace("'", "''") + "'" for d in delivery_ids)
    query = f"SELECT * FROM {LINEAGE_TABLE} WHERE delivery_id NOT IN ({listed})"
    before = ctx.lake.row_count(LINEAGE_TABLE)
    reader = ctx.backend.con.sql(query).to_arrow_reader()
    _write_stream(ctx, LINEAGE_TABLE, reader, reader.schema)
    return before - ctx.lake.row_count(LINEAGE_TABLE)


def _remove_deliveries(settings: Settings, delivery_ids: list[str]) -> int:
    """Remove delivery directories: each is renamed out of sight first (one atomic step),
    then deleted, so a reader never sees half a delivery."""
    root = deliveries_dir(settings)
    removed = 0
    for delivery_id in delivery_ids:
        directory = root / delivery_id
        if directory.parent != root or not directory.is_dir():
            continue
        hidden = root / f".purging-{delivery_id}-{secrets.token_hex(4)}"
        os.rename(directory, hidden)
        shutil.rmtree(hidden)
        removed += 1
    return removed


def _control_plane(
    ctx: PlanContext,
    session: Any,
    key: bytes,
    plan: dict[str, Any],
) -> tuple[dict[str, int], dict[str, int]]:
    """Delete and anonymise the control plane's copies (inside the caller's transaction)."""
    deleted: dict[str, int] = {}
    anonymised: dict[str, int] = {}
    backend = ctx.backend
    # Consent evidence: the ledger's events, then the current-state rows they backed.
    doomed = _ids(
        backend, "SELECT key FROM retention_acts_consent_evidence WHERE action = 'delete'"
    )
    affected = _ids(
        backend,
        "SELECT DISTINCT e.user_id FROM retention_ledger_events e JOIN "
        "retention_acts_consent_evidence a ON e.event_id = a.key "
        "WHERE a.action IN ('delete', 'anonymise')",
    )
    count = 0
    for chunk in _chunks(doomed):
        result = session.execute(
            sa.delete(ConsentEventRow).where(ConsentEventRow.event_id.in_(chunk))
        )
        count += result.rowcount or 0
    deleted["store.consent_events"] = count
    digest = hmac_sql("e.user_id", key, "duckdb")
    changes = (
        backend.con.sql(
            f"SELECT e.event_id AS event_id, '{ANON_PREFIX}' || substr({digest}, 1, 32) AS user_id "
            "FROM retention_ledger_events e JOIN retention_acts_consent_evidence a "
            "ON e.event_id = a.key WHERE a.action = 'anonymise' "
            f"AND NOT starts_with(e.user_id, '{ANON_PREFIX}')"
        )
        .to_arrow_table()
        .to_pylist()
    )
    if changes:
        table = cast(sa.Table, ConsentEventRow.__table__)
        session.execute(
            sa.update(table)
            .where(table.c.event_id == sa.bindparam("b_event_id"))
            .values(user_id=sa.bindparam("b_user_id")),
            [{"b_event_id": c["event_id"], "b_user_id": c["user_id"]} for c in changes],
        )
    anonymised["store.consent_events"] = len(changes)
    state_removed = 0
    for chunk in _chunks(affected):
        backing = sa.select(ConsentEventRow.event_id).where(
            ConsentEventRow.event_id == ConsentStateRow.event_id,
            ConsentEventRow.user_id == ConsentStateRow.user_id,
        )
        result = session.execute(
            sa.delete(ConsentStateRow).where(
                ConsentStateRow.user_id.in_(chunk), ~sa.exists(backing)
            )
        )
        state_removed += result.rowcount or 0
    deleted["store.consent_state"] = state_removed
    # Profiles: the subjects mirror of the lake's users.
    gone = _ids(backend, "SELECT key FROM retention_acts_profile WHERE action = 'delete'")
    count = 0
    for chunk in _chunks(gone):
        result = session.execute(sa.delete(Subject).where(Subject.user_id.in_(chunk)))
        count += result.rowcount or 0
    deleted["store.subjects"] = count
    rule = rule_for(ctx.version, "profile")
    blanked = _ids(backend, "SELECT key FROM retention_acts_profile WHERE action = 'anonymise'")
    count = 0
    if rule is not None and blanked:
        # subjects.region is a 2-letter column: every anonymised profile field is nulled here.
        values = {name: None for name in rule.fields if name in ("region", "birth_date")}
        for chunk in _chunks(blanked):
            result = session.execute(
                sa.update(Subject).where(Subject.user_id.in_(chunk)).values(**values)
            )
            count += result.rowcount or 0
    anonymised["store.subjects"] = count
    # The audit log: events older than the cut-off (none when held or without a rule).
    audit = next(e for e in plan["categories"] if e["category"] == "audit")
    count = 0
    condition = audit_due(ctx, session)
    if audit["delete"] and condition is not None:
        result = session.execute(
            sa.delete(AuditEventRow).where(
                condition, AuditEventRow.seq.not_in(sealed_audit_events())
            )
        )
        count = result.rowcount or 0
        if count != audit["delete"]:
            raise StalePlanError(
                f"the audit log changed while applying: {count} events to delete, "
                f"the plan says {audit['delete']}"
            )
    deleted["store.audit_events"] = count
    return deleted, anonymised


def _materialise(ctx: PlanContext) -> list[dict[str, Any]]:
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


def apply_plan(
    settings: Settings,
    plan: dict[str, Any],
    *,
    revoker: Revoker | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Execute `plan` (as `load_plan` returned it) and verify it; return the purge record.

    1. Refuse a plan for a future instant, or whose inputs (policy file, lake snapshots,
       control plane, delivery directories) changed since it was computed (exit 1).
    2. Re-derive every candidate with the planner's expressions (on DuckDB) and refuse when
       the counts differ from the plan's.
    3. Record the purge as `planned` (audit `retention.planned`).
    4. Tell licensees about the posts to delete that they received (`revoker`, first: no
       deletion without its revocation); rewrite each affected lake table as one new
       snapshot; remove expired deliveries (lineage rows, then directories); delete and
       anonymise the control plane's copies in one transaction with the `applied` state
       and the `retention.applied` audit event.
    5. Verify: plan again at the same instant on the new state; every category must have
       nothing left to delete or anonymise and every purged delivery directory must be
       gone. Then the purge is `verified` (audit `retention.verified`).
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    at = datetime.fromisoformat(str(plan["at"]).replace("Z", "+00:00")).astimezone(UTC)
    if at > now:
        raise BadInput(
            Problem("plan", None, "at", f"{plan['at']} is in the future: nothing is due yet")
        )
    policy = load_policy(settings.policy_file)
    if policy.content_sha256 != plan["inputs"]["policy"]["content_sha256"]:
        raise _stale("the policy file", ["inputs.policy.content_sha256"])
    keyring = Keyring.for_settings(settings)
    key = anonymisation_key(keyring)
    backend = planner_backend(settings, "duckdb")
    purge_id = _new_purge_id()
    totals = {
        a: {e["category"]: e[a] for e in plan["categories"]}
        for a in ("delete", "anonymise", "held")
    }
    owners = bool(plan.get("owners_checked", False))
    with open_context(settings, at, backend=backend, policy=policy, owners=owners) as ctx:
        inputs = inputs_fingerprint(ctx, settings)
        changed = list(_differences(plan["inputs"], inputs))
        if changed:
            raise _stale("its inputs", changed)
        entries = _materialise(ctx)
        for entry in entries:
            planned = next(e for e in plan["categories"] if e["category"] == entry["category"])
            diff = [f"{entry['category']}.{k}" for k in _COMPARED if planned[k] != entry[k]]
            if diff:
                raise _stale("the candidates", diff)
        delivered = (
            ctx.backend.con.sql(
                "SELECT DISTINCT a.key AS post_id FROM retention_acts_posts a JOIN "
                f"{LINEAGE_TABLE if ctx.lake.exists(LINEAGE_TABLE) else 'retention_lineage'} l "
                "ON l.post_id = a.key WHERE a.action = 'delete' ORDER BY 1"
            )
            .to_arrow_table()
            .column("post_id")
            .combine_chunks()
        )
        if len(delivered) and revoker is None:
            raise ConsentryError(
                f"{len(delivered)} posts to delete were delivered to licensees, and revocations "
                "are not available in this installation: refusing to delete them silently"
            )
        store = open_store(settings.resolved_database_url)
        try:
            with store.session() as session:
                session.add(
                    RetentionPurge(
                        id=purge_id,
                        plan_sha256=plan["plan_sha256"],
                        policy_version=ctx.version.version,
                        at=at,
                        state="planned",
                        planned_at=now,
                        planned={"totals": plan["totals"], **totals},
                        results=None,
                        evidence=None,
                    )
                )
                SqlAuditSink().append(
                    session,
                    "retention.planned",
                    {
                        "purge_id": purge_id,
                        "plan_sha256": plan["plan_sha256"],
                        "policy_version": ctx.version.version,
                        "at": rfc3339(at),
                        "to_delete": totals["delete"],
                        "to_anonymise": totals["anonymise"],
                        "held": totals["held"],
                        "gaps": [g["subject"] for g in plan["gaps"]],
                    },
                )
            # Revocations first: a deletion never happens without them (if a later step
            # fails, the next plan deletes the rest; revoking again logs nothing new).
            revocations = 0
            if len(delivered) and revoker is not None:
                revocations = revoker(
                    settings, post_ids=delivered, purged_at=now, purge_id=purge_id
                )
            deleted: dict[str, int] = {}
            anonymised: dict[str, int] = {}
            by_category = {e["category"]: e for e in entries}
            for category in ("posts", "consent_evidence", "access_events", "profile"):
                entry = by_category[category]
                table = LAKE_CATEGORIES[category]
                if not (entry["delete"] or entry["anonymise"]):
                    continue
                rule = ctx.version.retention[category]
                fields = {f: ANONYMISABLE_FIELDS[category][f] for f in rule.fields}
                if entry["anonymise"]:
                    # Counted before the rewrite: afterwards the view's files are gone.
                    anonymised[f"lake.{table}"] = int(
                        ctx.backend.con.sql(
                            f"SELECT count(*) FROM {table} t JOIN retention_acts_{category} a "
                            f"ON t.{_KEYS[table]} = a.key WHERE a.action = 'anonymise'"
                        ).fetchall()[0][0]
                    )
                removed = _rewrite(ctx, table, f"retention_acts_{category}", fields, key)
                deleted[f"lake.{table}"] = removed
            delivery_ids = list(
                next(e for e in plan["categories"] if e["category"] == "deliveries")["delivery_ids"]
            )
            dirs_removed = 0
            if delivery_ids:
                if ctx.lake.exists(LINEAGE_TABLE):
                    deleted[f"lake.{LINEAGE_TABLE}"] = _rewrite_lineage(ctx, delivery_ids)
                dirs_removed = _remove_deliveries(settings, delivery_ids)
            with store.session() as session:
                store_deleted, store_anonymised = _control_plane(ctx, session, key, plan)
                deleted.update(store_deleted)
                anonymised.update(store_anonymised)
                results = {
                    "deleted": dict(sorted(deleted.items())),
                    "anonymised": dict(sorted(anonymised.items())),
                    "delivery_dirs_removed": dirs_removed,
                    "revocations": revocations,
                }
                row = session.get(RetentionPurge, purge_id)
                assert row is not None
                row.state, row.applied_at, row.results = "applied", datetime.now(UTC), results
                SqlAuditSink().append(
                    session,
                    "retention.applied",
                    {"purge_id": purge_id, "plan_sha256": plan["plan_sha256"], **results},
                )
        finally:
            store.close()
    evidence = verify_purge(settings, plan, purge_id=purge_id, policy_at=at)
    return {
        "purge_id": purge_id,
        "plan_sha256": plan["plan_sha256"],
        "results": results,
        "evidence": evidence,
        "state": "verified" if evidence["ok"] else "applied",
    }


def verify_purge(
    settings: Settings, plan: dict[str, Any], *, purge_id: str, policy_at: datetime
) -> dict[str, Any]:
    """Re-query every store after a purge and record the evidence (counts only).

    1. Plan again at the plan's instant, on the new state: `remaining` is what is still
       due for deletion or anonymisation per category, `checked` the records examined.
    2. Every delivery directory the plan purged must be gone.
    3. Nothing remaining: state `verified`; otherwise the purge stays `applied`.
    """
    again = compute_plan(
        settings, at=policy_at, engine="duckdb", owners=bool(plan.get("owners_checked", False))
    )
    remaining = {e["category"]: e["delete"] + e["anonymise"] for e in again["categories"]}
    checked = {e["category"]: e["total"] for e in again["categories"]}
    root = deliveries_dir(settings)
    planned_dirs = next(e for e in plan["categories"] if e["category"] == "deliveries")[
        "delivery_ids"
    ]
    left = [d for d in planned_dirs if (root / d).exists()]
    remaining["deliveries"] += len(left)
    ok = not any(remaining.values())
    evidence = {
        "remaining": remaining,
        "checked": checked,
        "ok": ok,
        "plan_sha256_after": again["plan_sha256"],
    }
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        row = session.get(RetentionPurge, purge_id)
        if row is None:
            raise ConsentryError(f"no purge {purge_id!r}")
        row.evidence = evidence
        if ok:
            row.state, row.verified_at = "verified", datetime.now(UTC)
        SqlAuditSink().append(
            session,
            "retention.verified",
            {
                "purge_id": purge_id,
                "plan_sha256": plan["plan_sha256"],
                "remaining": remaining,
                "checked": checked,
                "ok": ok,
            },
        )
    return evidence


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
