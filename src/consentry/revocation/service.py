"""Revocations for a Consentry home: runs, retention purges, deadlines and per-user views,
wired to the store, the ledger, the lake, the deliveries and the keys."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from consentry.delivery.build import LINEAGE_TABLE
from consentry.delivery.licensees import LicenseeRecord, licensee_named, registry_for
from consentry.delivery.service import list_deliveries, target_for
from consentry.engine import Lake, connect_for
from consentry.errors import BadInput, Problem
from consentry.instants import rfc3339
from consentry.jobs import JobRecord, register_recoverer, run_job
from consentry.jobs.lineage import RunLineage, lake_dataset, register_lineage, store_dataset
from consentry.ledger.sync import ledger_for
from consentry.policy import PolicyFile
from consentry.revocation.job import (
    DELIVERIES_SCHEMA,
    lineage_of_posts,
    revocation_candidates,
)
from consentry.revocation.log import RevocationEntry, RevocationLog
from consentry.revocation.rules import ExtraReason, RevocationStatus, status_of
from consentry.settings import Settings
from consentry.store import Store, open_store
from consentry.store.models import RevocationRow

__all__ = [
    "RunReport",
    "licensee_overview",
    "overdue_revocations",
    "recipients_of",
    "revoke_purged",
    "run_revocations",
    "visible_deliveries",
]

UTC_TS = pa.timestamp("us", tz="UTC")


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def visible_deliveries(
    settings: Settings, *, licensee: str | None = None, until: datetime | None = None
) -> pa.Table:
    """Visible deliveries (a crashed build's lineage names none of them) as Arrow:
    `delivery_id`, `delivered_at` (the manifest's `created_at`), `licensee`, `purpose`,
    optionally of one licensee and made at or before `until`."""
    manifests = [
        m
        for m in list_deliveries(settings)
        if (licensee is None or m["licensee"] == licensee)
        and (until is None or _instant(m["created_at"]) <= until)
    ]
    return pa.table(
        {
            "delivery_id": pa.array([m["delivery_id"] for m in manifests], pa.string()),
            "delivered_at": pa.array([_instant(m["created_at"]) for m in manifests], UTC_TS),
            "licensee": pa.array([m["licensee"] for m in manifests], pa.string()),
            "purpose": pa.array([m["purpose"] for m in manifests], pa.string()),
        }
    )


@dataclass(frozen=True, slots=True)
class RunReport:
    """What one revocation run found and logged."""

    run_id: str
    licensee: str
    licensee_id: str
    as_of: datetime
    deliveries: int
    lineage_rows: int
    new: int
    revocations: list[dict[str, Any]]
    """Every delivered record not eligible at as_of, by record id (see `run_revocations`)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "licensee": self.licensee,
            "as_of": rfc3339(self.as_of),
            "deliveries": self.deliveries,
            "lineage_rows": self.lineage_rows,
            "revoked": len(self.revocations),
            "new": self.new,
            "revocations": self.revocations,
        }


def run_revocations(
    settings: Settings,
    licensee: str,
    *,
    at: datetime | None = None,
    on_progress: Callable[[str], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> RunReport:
    """The revocation job for one licensee at `at` (default now).

    1. `at` may not lie in the future; the licensee must exist (disabled ones included:
       they still hold what they were given).
    2. The licensee's visible deliveries made at or before `at` are joined with the
       eligibility of their posts at `at` (`revocation_candidates`, the delivery's own
       eligibility expression on DuckDB).
    3. A delivered post gone from the lake keeps the reason it was logged with (a retention
       purge's `retention_purged`), else `post_removed`.
    4. A record whose failing checks carry no instant gets the `since` it was first logged
       with, else `at`.
    5. Records not logged for their latest carrying delivery are appended to the log in one
       transaction with a `revocation.issued` audit event (`RevocationLog.append`).
    6. The report lists every such record once: record id, delivery ids, reason, since, its
       revocation id, deadline, status and whether this run logged it.
    """
    now = datetime.now(UTC)
    when = (at or now).astimezone(UTC)
    if when > now:
        raise BadInput(Problem("command line", None, "--at", "the instant is in the future"))
    step = on_progress or (lambda _message: None)
    record = licensee_named(settings, licensee)
    scope = target_for(settings, record).scope
    run_id = f"rvr-{when.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:12]}"
    with run_job(
        settings, "revoke", record.name, locks=[f"revoke:{record.id}"], intent={"run_id": run_id}
    ) as job:
        deliveries = visible_deliveries(settings, licensee=record.name, until=when)
        ledger = ledger_for(settings)
        try:
            step("reading consent events")
            events = ledger.events_arrow(scope.purpose, when)
            policy = ledger.policy
            store = ledger.store
            log = RevocationLog(store, policy)
            step("evaluating lineage")
            backend = connect_for(settings, "duckdb")
            try:
                found = revocation_candidates(
                    backend,
                    Lake.of(settings),
                    policy,
                    events,
                    scope,
                    deliveries.select(DELIVERIES_SCHEMA.names),
                    when,
                )
            finally:
                backend.disconnect()
            step("reading the revocation log")
            logged = log.entries_arrow(record.id)
            rows = _resolve(found.records, logged, when)
            job.step("revoke.evaluated", candidates=rows.num_rows)
            step("logging revocations")
            fresh = rows.filter(pc.invert(rows.column("logged")))
            new = log.append(
                record.id,
                fresh,
                run_id=run_id,
                trigger="run",
                as_of=when,
                lineage_rows=found.lineage_rows,
                revoked=rows.num_rows,
                on_batch=on_batch,
                on_commit=lambda session: job.mark(session, "revoke.committed", commit=True),
            )
            job.passed("revoke.committed")
            before = int(pc.max(logged.column("seq")).as_py() or 0) if logged.num_rows else 0
            listing = _listing(rows, log.entries_arrow(record.id), before, datetime.now(UTC))
        finally:
            ledger.store.close()
    return RunReport(
        run_id=run_id,
        licensee=record.name,
        licensee_id=record.id,
        as_of=when,
        deliveries=deliveries.num_rows,
        lineage_rows=found.lineage_rows,
        new=new,
        revocations=listing,
    )


class _RevocationRecoverer:
    """A revocation run writes one transaction (its log rows, audit event and commit):
    before it nothing is to undo, after it nothing is left to do."""

    def roll_back(self, settings: Settings, job: JobRecord) -> None:
        return None

    def roll_forward(self, settings: Settings, job: JobRecord) -> None:
        return None


register_recoverer("revoke", _RevocationRecoverer())


def _revocation_lineage(settings: Settings, job: JobRecord, *, detail: bool) -> RunLineage:
    """A revocation run reads the delivery lineage, the lake's posts and users, the
    consent ledger and the deliveries; it appends to the revocation log (with `detail`, the
    rows this run logged)."""
    logged = None
    if detail:
        import sqlalchemy as sa

        with open_store(settings.resolved_database_url) as store, store.session() as session:
            logged = session.scalar(
                sa.select(sa.func.count())
                .select_from(RevocationRow)
                .where(RevocationRow.run_id == job.intent["run_id"])
            )
    return RunLineage(
        f"revoke.{job.subject}",
        inputs=(
            lake_dataset(settings, LINEAGE_TABLE, detail=detail),
            lake_dataset(settings, "posts", detail=detail),
            lake_dataset(settings, "users", detail=detail),
            store_dataset(settings, "consent_events", detail=detail),
            store_dataset(settings, "deliveries", detail=detail),
        ),
        outputs=(store_dataset(settings, "revocations", detail=detail, rows=logged),),
    )


register_lineage("revoke", _revocation_lineage)


def _duck_join(query: str, **tables: pa.Table) -> pa.Table:
    """Run `query` on a scratch DuckDB over the given Arrow tables (by name)."""
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        for name, table in tables.items():
            con.register(name, table)
        return con.sql(query).to_arrow_table()
    finally:
        con.close()


def _resolve(candidates: pa.Table, logged: pa.Table, when: datetime) -> pa.Table:
    """Candidates with reason and since settled against the log, and whether each is logged
    for its latest carrying delivery already (one vectorised left join)."""
    table = _duck_join(
        f"""
        SELECT c.record_id, c.delivery_id, c.delivery_ids, c.author_id,
               CASE WHEN c.missing THEN coalesce(g.reason, '{ExtraReason.POST_REMOVED.value}')
                    ELSE c.reason END AS reason,
               coalesce(CASE WHEN c.missing THEN NULL ELSE c.since END, g.since,
                        $when::TIMESTAMPTZ) AS since,
               g.record_id IS NOT NULL AS logged
        FROM candidates AS c
        LEFT JOIN logged AS g USING (record_id, delivery_id)
        ORDER BY c.record_id, c.delivery_id
        """.replace("$when", "'" + when.isoformat() + "'"),
        candidates=candidates,
        logged=logged,
    )
    return table.cast(
        pa.schema(
            [
                ("record_id", pa.string()),
                ("delivery_id", pa.string()),
                ("delivery_ids", pa.list_(pa.string())),
                ("author_id", pa.string()),
                ("reason", pa.string()),
                ("since", UTC_TS),
                ("logged", pa.bool_()),
            ]
        )
    )


def _listing(rows: pa.Table, logged: pa.Table, before: int, now: datetime) -> list[dict[str, Any]]:
    """The report's rows: each revoked record with its log entry (no internal ids)."""
    joined = _duck_join(
        """
        SELECT r.record_id, r.delivery_ids, r.reason, r.since,
               g.seq, g.revoked_at, g.due_at, g.confirmed_at
        FROM rows AS r JOIN logged AS g USING (record_id, delivery_id)
        ORDER BY r.record_id, r.delivery_id
        """,
        rows=rows,
        logged=logged,
    )
    return [
        {
            "record_id": r["record_id"],
            "delivery_ids": r["delivery_ids"],
            "reason": r["reason"],
            "since": rfc3339(r["since"]),
            "revocation_id": f"rv-{r['seq']}",
            "revoked_at": rfc3339(r["revoked_at"]),
            "due_at": rfc3339(r["due_at"]),
            "status": status_of(r["confirmed_at"], r["due_at"], now).value,
            "new": r["seq"] > before,
        }
        for r in joined.to_pylist()
    ]


def revoke_purged(
    settings: Settings, *, post_ids: pa.Array, purged_at: datetime, purge_id: str
) -> int:
    """Log revocations for every delivered record whose post the retention engine purged.

    1. The lineage of `post_ids` in every visible delivery is read (one DuckDB query),
       one row per (licensee, record) with the deliveries that carried it.
    2. Per licensee, each record is logged for its latest carrying delivery with reason
       `retention_purged` and since `purged_at` (`RevocationLog.append` with `purge`:
       a record already logged as `post_removed` is relabelled), in one transaction with
       a `revocation.issued` event (trigger `retention_purge`, run id `purge_id`).
    3. Returns how many new revocations were logged; calling it again with the same posts
       logs nothing more (idempotent).
    """
    purged_at = purged_at.astimezone(UTC)
    deliveries = visible_deliveries(settings)
    lake = Lake.of(settings)
    if not lake.exists(LINEAGE_TABLE) or deliveries.num_rows == 0 or len(post_ids) == 0:
        return 0
    backend = connect_for(settings, "duckdb")
    try:
        rows = lineage_of_posts(
            backend, lake, deliveries.select(["delivery_id", "delivered_at", "licensee"]), post_ids
        )
    finally:
        backend.disconnect()
    if rows.num_rows == 0:
        return 0
    registry = registry_for(settings)
    try:
        ids = {r.name: r.id for r in registry.licensees()}
        log = RevocationLog(registry.store, registry.policy)
        total = 0
        for name in pc.unique(rows.column("licensee")).to_pylist():
            mine = rows.filter(pc.equal(rows.column("licensee"), name))
            mine = mine.append_column(
                "reason", pa.repeat(pa.scalar(ExtraReason.RETENTION_PURGED.value), mine.num_rows)
            ).append_column("since", pa.repeat(pa.scalar(purged_at, UTC_TS), mine.num_rows))
            total += log.append(
                ids[name],
                mine,
                run_id=purge_id,
                trigger="retention_purge",
                as_of=purged_at,
                lineage_rows=mine.num_rows,
                revoked=mine.num_rows,
                purge=True,
            )
        return total
    finally:
        registry.store.close()


# -- deadlines, people and licensees -----------------------------------------------------------


def overdue_revocations(settings: Settings, *, now: datetime | None = None) -> dict[str, Any]:
    """Every revocation past its deadline without a receipt, grouped by licensee."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    registry = registry_for(settings)
    try:
        names = {r.id: r.name for r in registry.licensees()}
        entries = RevocationLog(registry.store, registry.policy).overdue(now)
    finally:
        registry.store.close()
    grouped: dict[str, list[RevocationEntry]] = {}
    for entry in entries:
        grouped.setdefault(names.get(entry.licensee_id, entry.licensee_id), []).append(entry)
    return {
        "at": rfc3339(now),
        "overdue": len(entries),
        "licensees": [
            {
                "licensee": name,
                "overdue": len(items),
                "oldest_due_at": rfc3339(min(e.due_at for e in items)),
                "revocations": [
                    {
                        "revocation_id": f"rv-{e.seq}",
                        "record_id": e.record_id,
                        "reason": e.reason,
                        "revoked_at": rfc3339(e.revoked_at),
                        "due_at": rfc3339(e.due_at),
                        "days_overdue": (now - e.due_at).days,
                    }
                    for e in items
                ],
            }
            for name, items in sorted(grouped.items())
        ],
    }


def _lineage(settings: Settings, con: duckdb.DuckDBPyConnection) -> str | None:
    """SQL for the lineage table's latest version on `con`; None when it has no files."""
    lake = Lake.of(settings)
    paths = lake.files(LINEAGE_TABLE)
    return lake.relation(con, paths, "lineage") if paths else None


def recipients_of(
    settings: Settings,
    store: Store,
    policy: PolicyFile,
    user_id: str,
    *,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Art. 19: every licensee that received the user's posts, and what became of them.

    1. The lineage of the visible deliveries is scanned for the user's posts (DuckDB,
       three columns): per licensee, the deliveries and distinct posts, first and last
       delivery instant and the licence's purpose.
    2. From the revocation log: how many of those records were revoked, and how many are
       pending, overdue and confirmed.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC)
    deliveries = visible_deliveries(settings)
    if deliveries.num_rows == 0:
        return []
    con = duckdb.connect()
    try:
        lineage = _lineage(settings, con)
        if lineage is None:
            return []
        con.execute("SET TimeZone = 'UTC'")
        con.register("deliveries", deliveries)
        found = con.sql(
            f"""
            SELECT d.licensee, any_value(d.purpose) AS purpose,
                   count(DISTINCT l.delivery_id) AS deliveries,
                   count(DISTINCT l.post_id) AS posts,
                   min(d.delivered_at) AS first_delivered_at,
                   max(d.delivered_at) AS last_delivered_at
            FROM {lineage} AS l JOIN deliveries AS d USING (delivery_id)
            WHERE l.author_id = ?
            GROUP BY d.licensee ORDER BY d.licensee
            """,
            params=[user_id],
        ).to_arrow_table()
    finally:
        con.close()
    log = RevocationLog(store, policy)
    registry_names = _licensee_ids(store)
    per_licensee: dict[str, dict[str, int]] = {}
    for entry in log.entries(author_id=user_id):
        name = registry_names.get(entry.licensee_id, entry.licensee_id)
        counts = per_licensee.setdefault(name, {s.value: 0 for s in RevocationStatus})
        counts[entry.status(now).value] += 1
    result = []
    for row in found.to_pylist():
        counts = per_licensee.get(row["licensee"], {s.value: 0 for s in RevocationStatus})
        result.append(
            {
                "licensee": row["licensee"],
                "purpose": row["purpose"],
                "deliveries": int(row["deliveries"]),
                "posts": int(row["posts"]),
                "first_delivered_at": rfc3339(row["first_delivered_at"]),
                "last_delivered_at": rfc3339(row["last_delivered_at"]),
                "revocations": {
                    "total": sum(counts.values()),
                    "pending": counts[RevocationStatus.PENDING.value]
                    + counts[RevocationStatus.OVERDUE.value],
                    "overdue": counts[RevocationStatus.OVERDUE.value],
                    "confirmed": counts[RevocationStatus.CONFIRMED.value],
                },
            }
        )
    return result


def _licensee_ids(store: Store) -> dict[str, str]:
    import sqlalchemy as sa

    from consentry.store.models import Licensee

    with store.session() as session:
        return {str(i): str(n) for i, n in session.execute(sa.select(Licensee.id, Licensee.name))}


def licensee_overview(
    settings: Settings,
    store: Store,
    policy: PolicyFile,
    record: LicenseeRecord,
    *,
    now: datetime | None = None,
    days: int = 30,
) -> dict[str, Any]:
    """One licensee at a glance: records delivered, revoked, confirmed, overdue, and per
    day of the last `days` the revocations issued and confirmed (for the chart)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    deliveries = visible_deliveries(settings, licensee=record.name)
    delivered = 0
    if deliveries.num_rows:
        con = duckdb.connect()
        try:
            lineage = _lineage(settings, con)
            if lineage is not None:
                con.register("deliveries", deliveries)
                row = con.execute(
                    f"SELECT count(DISTINCT record_id) FROM {lineage} AS l "
                    "JOIN deliveries USING (delivery_id)"
                ).fetchone()
                delivered = int(row[0]) if row else 0
        finally:
            con.close()
    log = RevocationLog(store, policy)
    counts = log.counts(record.id, now)
    logged = log.entries_arrow(record.id)
    start = (now - timedelta(days=days - 1)).date()
    per_day: dict[str, dict[Any, int]] = {}
    for column in ("revoked_at", "confirmed_at"):
        dates = pc.cast(logged.column(column), pa.date32()).drop_null()
        tallies = pc.value_counts(dates) if len(dates) else pa.array([], pa.struct([]))
        per_day[column] = {item["values"]: int(item["counts"]) for item in tallies.to_pylist()}
    series = [
        {
            "day": (day := start + timedelta(days=offset)).isoformat(),
            "revoked": per_day["revoked_at"].get(day, 0),
            "confirmed": per_day["confirmed_at"].get(day, 0),
        }
        for offset in range(days)
    ]
    overdue = log.overdue(now, licensee_id=record.id)
    return {
        "licensee": record.name,
        "licensee_id": record.id,
        "purpose": record.purpose,
        "active": record.active,
        "deliveries": deliveries.num_rows,
        "delivered": delivered,
        **counts,
        "series": series,
        "overdue_entries": [e.for_licensee(now) for e in overdue[:100]],
    }
