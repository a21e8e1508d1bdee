"""Verifying a purge: every store queried again, every readable lake version scanned.

`verify_purge` is the last step of a purge (`complete_purge`); `finish_awaiting_purges`
verifies later the purges a grace period kept waiting (docs/retention.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from consentry.audit import SqlAuditSink
from consentry.audit.event_types import RetentionVerified
from consentry.delivery.service import deliveries_dir
from consentry.engine import Lake
from consentry.engine.hmac import hmac_sql
from consentry.errors import ConsentryError
from consentry.instants import rfc3339
from consentry.jobs import Job
from consentry.keys import Keyring
from consentry.retention.candidates import LAKE_CATEGORIES
from consentry.retention.plan import compute_plan
from consentry.retention.rewrite import (
    KEYS,
    LAKE_ORDER,
    anonymisation_key,
    chunks,
    duck,
    saved_acts,
    workdir_of,
    write_parquet,
)
from consentry.settings import Settings
from consentry.store import open_store
from consentry.store.models import ConsentEventRow, RetentionPurge, Subject

if TYPE_CHECKING:
    import duckdb

__all__ = ["finish_awaiting_purges", "purged_key_digests", "purged_keys_in", "verify_purge"]


def _keys_left(settings: Settings, workdir: Path, *, latest_only: bool = False) -> dict[str, int]:
    """Per category, how many of the keys the purge deleted are still anywhere: every data
    file that a still-readable version of the lake's table lists (time travel must not
    bring one back; with `latest_only`, the latest version's files) and, for profiles and
    consent evidence, the control plane's copy."""
    lake = Lake.of(settings)
    left: dict[str, int] = {}
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        for category in LAKE_ORDER:
            acts = saved_acts(workdir, category)
            doomed = acts.filter(pc.equal(acts["action"], "delete")).select(["key"])
            table = LAKE_CATEGORIES[category]
            count = 0
            files = lake.files(table) if latest_only else lake.reachable_files(table)
            if doomed.num_rows and files:
                con = duck()
                try:
                    con.register("doomed", doomed)
                    row = con.execute(
                        f"SELECT count(*) FROM {lake.relation(con, files, 'kept', table=table)} t "
                        f"SEMI JOIN doomed d ON t.{KEYS[table]} = d.key"
                    ).fetchall()[0]
                    count = int(row[0]) if row else 0
                finally:
                    con.close()
            column = {"profile": Subject.user_id, "consent_evidence": ConsentEventRow.event_id}
            if doomed.num_rows and category in column:
                for chunk in chunks(doomed["key"].to_pylist()):
                    count += (
                        session.scalar(
                            sa.select(sa.func.count()).where(column[category].in_(chunk))
                        )
                        or 0
                    )
            left[category] = count
    return left


def _record_purged_keys(settings: Settings, purge_id: str, workdir: Path, key: bytes) -> str:
    """Keep keyed digests of every deleted key (never the keys) beside the purge's record,
    so the doctor can later prove none came back; returns the file's name."""
    target = settings.home / "retention" / "purges"
    target.mkdir(parents=True, exist_ok=True)
    parts = []
    for category in LAKE_ORDER:
        acts = saved_acts(workdir, category)
        doomed = acts.filter(pc.equal(acts["action"], "delete"))
        parts.append(
            pa.table(
                {
                    "category": pa.repeat(pa.scalar(category), doomed.num_rows),
                    "key_digest": pa.array(purged_key_digests(key, doomed["key"]), pa.string()),
                }
            )
        )
    name = f"{purge_id}.keys.parquet"
    write_parquet(target / name, pa.concat_tables(parts))
    return name


def purged_key_digests(key: bytes, keys: pa.Array | pa.ChunkedArray) -> pa.Array:
    """HMAC-SHA256 (hex) of each key under the anonymisation key, computed in DuckDB."""
    con = duck()
    try:
        con.register("keys", pa.table({"k": keys}))
        return (
            con.sql(f"SELECT {hmac_sql('k', key, 'duckdb')} AS d FROM keys")
            .to_arrow_table()
            .column("d")
            .combine_chunks()
        )
    finally:
        con.close()


def verify_purge(settings: Settings, job: Job, key: bytes) -> dict[str, Any]:
    """Re-query every store after a purge and record the evidence (counts only).

    1. Plan again at the plan's instant, on the new state: `remaining` is what is still
       due for deletion or anonymisation per category, `checked` the records examined.
    2. Every delivery directory the plan purged must be gone.
    3. Every key the purge deleted must be gone from the control plane and from every
       data file a readable version of its lake table lists (`keys_left`), whatever the new
       plan says.
    4. Nothing remaining: state `verified`. Deleted keys left only in versions a grace
       period keeps: the purge stays `applied`, `awaiting_vacuum` (the tables, and when the
       grace period ends) in its evidence, until `finish_awaiting_purges`. Otherwise it
       stays `applied`. Digests of the deleted keys are kept for the doctor and for that
       later check (`retention/purges/<id>.keys.parquet`).
    """
    intent = job.intent
    at = datetime.fromisoformat(intent["at"].replace("Z", "+00:00"))
    workdir = workdir_of(settings, job.id)
    again = compute_plan(settings, at=at, engine="duckdb")
    remaining = {e.category: e.delete + e.anonymise for e in again.categories}
    checked = {e.category: e.total for e in again.categories}
    root = deliveries_dir(settings)
    remaining["deliveries"] += len([d for d in intent["delivery_ids"] if (root / d).exists()])
    keys_left = _keys_left(settings, workdir)
    ok = not any(remaining.values()) and not any(keys_left.values())
    evidence: dict[str, Any] = {
        "remaining": remaining,
        "keys_left": keys_left,
        "checked": checked,
        "ok": ok,
        "plan_sha256_after": again.plan_sha256,
    }
    awaiting = (
        not ok
        and settings.purge_grace_hours > 0
        and not any(remaining.values())
        and not any(_keys_left(settings, workdir, latest_only=True).values())
    )
    if awaiting:
        due = datetime.now(UTC) + timedelta(hours=settings.purge_grace_hours)
        evidence["awaiting_vacuum"] = {
            "tables": sorted(intent.get("tables", {})),
            "grace_hours": settings.purge_grace_hours,
            "due_by": rfc3339(due),
        }
    if ok or awaiting:
        evidence["purged_keys"] = _record_purged_keys(settings, intent["purge_id"], workdir, key)
    with job.transaction("retention.verified") as session:
        row = session.get(RetentionPurge, intent["purge_id"])
        if row is None:
            raise ConsentryError(f"no purge {intent['purge_id']!r}")
        row.evidence = evidence
        if ok:
            row.state, row.verified_at = "verified", datetime.now(UTC)
        SqlAuditSink().append(
            session,
            RetentionVerified(
                purge_id=intent["purge_id"],
                plan_sha256=intent["plan_sha256"],
                remaining=remaining,
                checked=checked,
                ok=ok,
            ),
        )
    return evidence


def finish_awaiting_purges(settings: Settings) -> list[dict[str, Any]]:
    """Finish the purges a grace period kept from being verified (`verify_purge`, 4).

    For each purge in state `applied` whose evidence says `awaiting_vacuum`:
    1. each of its tables is vacuumed with the grace period in force;
    2. the keyed digests of its deleted keys are checked against every data file that a
       readable version of each table still lists (the control plane was checked when it
       was applied);
    3. none left: the purge becomes `verified` with a `retention.verified` audit event, in
       one transaction; otherwise it keeps waiting.
    Returns, per such purge, its id, its state now and the keys still in old versions.
    """
    lake = Lake.of(settings)
    key = anonymisation_key(Keyring.for_settings(settings))
    folder = settings.home / "retention" / "purges"
    finished = []
    with open_store(settings.resolved_database_url) as store:
        with store.session() as session:
            waiting = [
                (row.id, row.plan_sha256, dict(row.evidence or {}))
                for row in session.scalars(
                    sa.select(RetentionPurge)
                    .where(RetentionPurge.state == "applied")
                    .order_by(RetentionPurge.planned_at)
                )
                if (row.evidence or {}).get("awaiting_vacuum")
            ]
        for purge_id, plan_sha256, evidence in waiting:
            for table in evidence["awaiting_vacuum"]["tables"]:
                if lake.exists(table):
                    lake.vacuum(table, grace_hours=settings.purge_grace_hours)
            digests = pq.read_table(folder / evidence["purged_keys"])
            left = {
                category: _digests_in_versions(lake, LAKE_CATEGORIES[category], digests, key)
                if category in evidence["keys_left"]
                else 0
                for category in LAKE_ORDER
            }
            state = "applied"
            if not any(left.values()):
                state = "verified"
                with store.session() as session:
                    row = session.get(RetentionPurge, purge_id)
                    assert row is not None
                    evidence = {**evidence, "keys_left": left, "ok": True}
                    evidence.pop("awaiting_vacuum")
                    row.evidence, row.state = evidence, state
                    row.verified_at = datetime.now(UTC)
                    SqlAuditSink().append(
                        session,
                        RetentionVerified(
                            purge_id=purge_id,
                            plan_sha256=plan_sha256,
                            remaining=evidence["remaining"],
                            checked=evidence["checked"],
                            ok=True,
                        ),
                    )
            finished.append({"purge_id": purge_id, "state": state, "keys_left": left})
    return finished


def _digests_in_versions(lake: Lake, table: str, digests: pa.Table, key: bytes) -> int:
    """How many distinct keys of `table` in any readable version have a digest among the
    purge's recorded ones (of the table's category)."""
    files = lake.reachable_files(table)
    category = next(c for c, t in LAKE_CATEGORIES.items() if t == table)
    wanted = digests.filter(pc.equal(digests["category"], category))
    if not files or wanted.num_rows == 0:
        return 0
    con = duck()
    try:
        relation = lake.relation(con, files, "versions", table=table)
        return purged_keys_in(con, relation, KEYS[table], wanted, key)
    finally:
        con.close()


def purged_keys_in(
    con: duckdb.DuckDBPyConnection, relation: str, column: str, wanted: pa.Table, key: bytes
) -> int:
    """How many distinct values of `column` in `relation` (SQL on `con`) have their keyed
    digest (`hmac_sql` under the home's anonymisation `key`) among `wanted["key_digest"]`
    (a purge's record of the keys it deleted): the one query by which a purge's
    verification, and the doctor's I4 after it, find a purged key that is back."""
    con.register("wanted", wanted)
    row = con.execute(
        f"SELECT count(*) FROM (SELECT DISTINCT {hmac_sql(column, key, 'duckdb')} AS d "
        f"FROM {relation}) k SEMI JOIN wanted w ON w.key_digest = k.d"
    ).fetchall()[0]
    return int(row[0])
