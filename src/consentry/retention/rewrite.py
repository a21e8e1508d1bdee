"""How a purge rewrites what it deletes or anonymises: staged lake snapshots (the table
without the purged keys, or with anonymised fields), the lineage without removed deliveries,
the removed delivery directories and the control plane's rows, all from the decisions a
plan saved (`acts-<category>.parquet` in the job's work directory). `apply` sequences these
as the steps of a retention job."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.orm import Session

from consentry.delivery.build import LINEAGE_TABLE
from consentry.delivery.service import deliveries_dir
from consentry.engine import PARQUET_COMPRESSION, ROWS_PER_PART, Lake
from consentry.engine.hmac import hmac_sql
from consentry.keys import Keyring
from consentry.ledger.anchor import (
    ANCHOR_FIELDS,
    ANCHOR_SCHEMA,
    add_digests,
    anchor_key,
    digest_sums_by,
    event_rows,
)
from consentry.retention.candidates import ANON_PREFIX
from consentry.retention.plan import (
    sealed_audit_events,
)
from consentry.schema import arrow_schema
from consentry.settings import Settings
from consentry.store.models import (
    AuditEventRow,
    ConsentEventRow,
    ConsentStateRow,
    DeliveryRow,
    Subject,
)

__all__ = [
    "ACTS_SCHEMA",
    "KEYS",
    "LAKE_ORDER",
    "anonymisation_key",
    "apply_control_plane",
    "apply_external_purge",
    "chunks",
    "duck",
    "remove_deliveries",
    "saved_acts",
    "stage_external_purge",
    "stage_lineage_without",
    "stage_rewrite",
    "workdir_of",
    "write_parquet",
]

_CHUNK = 5_000

KEYS = {
    "posts": "post_id",
    "users": "user_id",
    "consent_events": "event_id",
    "access_events": "request_id",
}


LAKE_ORDER = ("posts", "consent_evidence", "access_events", "profile")
"""The lake categories in the order a purge rewrites their tables."""

ACTS_SCHEMA = pa.schema([("key", pa.string()), ("action", pa.string())])


def chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def write_parquet(path: Path, table: pa.Table) -> None:
    """Write `table` to `path` atomically (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    pq.write_table(table, tmp, compression=PARQUET_COMPRESSION)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def anonymisation_key(keyring: Keyring) -> bytes:
    """The HMAC key for anonymised values, derived from the home's pseudonym key (a separate
    key, so anonymised values never equal the audit log's pseudonymous references)."""
    return hmac.new(
        keyring.pseudonym_key, b"consentry.retention.anonymise", hashlib.sha256
    ).digest()


def workdir_of(settings: Settings, job_id: str) -> Path:
    """Where a purge keeps what it decided (its intent), until it is verified."""
    return settings.home / "jobs" / job_id


def saved_acts(workdir: Path, category: str) -> pa.Table:
    path = workdir / f"acts-{category}.parquet"
    return pq.read_table(path) if path.exists() else ACTS_SCHEMA.empty_table()


def duck() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")
    return con


def stage_rewrite(
    lake: Lake, table: str, acts: pa.Table, fields: Mapping[str, str], key: bytes, token: str
) -> tuple[int, int]:
    """Stage (under `token`) a snapshot of lake `table` (which exists) without its `delete`
    rows and with the named fields of its `anonymise` rows replaced; returns (rows removed,
    rows anonymised).

    1. DuckDB streams the live snapshot joined to the acts (memory stays bounded).
    2. `null` fields become null; `hash` fields become `anon:` + 32 hex digits of
       HMAC-SHA256 under the anonymisation key (a value already `anon:` is kept), so
       rewriting a table a second time changes nothing more (recovery may repeat it).
    """
    schema = arrow_schema(table)
    key_column = KEYS[table]
    columns = _rewritten_columns(schema.names, fields, key)
    files = lake.files(table)
    staged = lake.stage(table, token)
    con = duck()
    try:
        con.register("acts", acts)
        source = lake.relation(con, files, "rewrite_source", table=table)
        anonymised = con.execute(
            f"SELECT count(*) FROM {source} AS t JOIN acts AS a "
            f"ON t.{key_column} = a.key WHERE a.action = 'anonymise'"
        ).fetchall()[0]
        reader = con.sql(
            f"SELECT {', '.join(columns)} FROM {source} AS t LEFT JOIN acts AS a "
            f"ON t.{key_column} = a.key WHERE a.action IS DISTINCT FROM 'delete'"
        ).to_arrow_reader()
        kept = _write_stream(staged, reader, schema)
    finally:
        con.close()
    before = sum(lake.parquet_file(f).metadata.num_rows for f in files)
    return before - kept, int(anonymised[0]) if anonymised else 0


def _rewritten_columns(names: Sequence[str], fields: Mapping[str, str], key: bytes) -> list[str]:
    """DuckDB select items over `t` (the table) left-joined to `a` (its acts): each column as
    it is after the purge (see `stage_rewrite`)."""
    columns = []
    for name in names:
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
    return columns


EXTERNAL_KEY = "__consentry_key"
EXTERNAL_ACTION = "__consentry_action"


def stage_external_purge(
    lake: Lake,
    table: str,
    acts: pa.Table,
    fields: Mapping[str, str],
    key: bytes,
    changes: Path,
) -> tuple[int, int]:
    """For an external Delta source that allows purges: write to `changes` (a local Parquet
    file) the source's rows the purge deletes or anonymises — their key, the action and,
    for anonymised rows, each anonymised field as it will be — and return (rows to delete,
    rows to anonymise). Nothing in the source changes here (`apply_external_purge` does).
    """
    schema = arrow_schema(table)
    key_column = KEYS[table]
    changed = [n for n in schema.names if n in fields]
    rewritten = dict(zip(schema.names, _rewritten_columns(schema.names, fields, key), strict=True))
    con = duck()
    try:
        con.register("acts", acts)
        source = lake.relation(con, lake.files(table), "purge_source", table=table)
        selected = ", ".join(
            [f"t.{key_column} AS {EXTERNAL_KEY}", f"a.action AS {EXTERNAL_ACTION}"]
            + [rewritten[n] for n in changed]
        )
        found = con.sql(
            f"SELECT {selected} FROM {source} AS t JOIN acts AS a ON t.{key_column} = a.key "
            "WHERE a.action IN ('delete', 'anonymise')"
        ).to_arrow_table()
    finally:
        con.close()
    write_parquet(changes, found)
    actions = found.column(EXTERNAL_ACTION)
    deleted = int(pc.sum(pc.equal(actions, "delete")).as_py() or 0)
    return deleted, found.num_rows - deleted


def apply_external_purge(lake: Lake, table: str, changes: Path, token: str) -> None:
    """Apply `stage_external_purge`'s changes to the external Delta source as one Delta
    MERGE: matched keys are deleted or have their anonymised fields replaced. The commit
    carries the app transaction `consentry.purge.<token>`, so a repeated call (recovery
    after a crash) finds it done and changes nothing."""
    from deltalake.transaction import CommitProperties, Transaction

    source = lake.external[table]
    delta = lake.delta_table(table)
    app = f"consentry.purge.{token}"
    if delta.transaction_version(app) is not None:
        return
    data = pq.read_table(changes)
    key_column = source.source_column(KEYS[table])
    merge = delta.merge(
        source=data,
        predicate=f"t.`{key_column}` = s.{EXTERNAL_KEY}",
        source_alias="s",
        target_alias="t",
        commit_properties=CommitProperties(app_transactions=[Transaction(app, 1)]),
    ).when_matched_delete(predicate=f"s.{EXTERNAL_ACTION} = 'delete'")
    updates = {
        f"`{source.source_column(n)}`": f"s.`{n}`"
        for n in data.column_names
        if n not in (EXTERNAL_KEY, EXTERNAL_ACTION)
    }
    if updates:
        merge = merge.when_matched_update(
            updates=updates, predicate=f"s.{EXTERNAL_ACTION} = 'anonymise'"
        )
    merge.execute()


def stage_lineage_without(lake: Lake, delivery_ids: Sequence[str], token: str) -> int:
    """Stage a lineage snapshot without the rows of the purged deliveries; rows removed."""
    files = lake.files(LINEAGE_TABLE)
    staged = lake.stage(LINEAGE_TABLE, token)
    con = duck()
    try:
        con.register("purged", pa.table({"delivery_id": pa.array(delivery_ids, pa.string())}))
        reader = con.sql(
            f"SELECT * FROM {lake.relation(con, files, 'lineage_source')} "
            "WHERE delivery_id NOT IN (SELECT delivery_id FROM purged)"
        ).to_arrow_reader()
        kept = _write_stream(staged, reader, reader.schema)
    finally:
        con.close()
    before: int = sum(lake.parquet_file(f).metadata.num_rows for f in files)
    return before - kept


def _write_stream(staging: Path, reader: Any, schema: pa.Schema) -> int:
    """Stream record batches into parts of at most ROWS_PER_PART rows; rows written."""
    writer: pq.ParquetWriter | None = None
    rows_in_part = 0
    index = 0
    written = 0
    try:
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
                written += take
                if rows_in_part == ROWS_PER_PART:
                    writer.close()
                    writer, rows_in_part, index = None, 0, index + 1
    finally:
        if writer is not None:
            writer.close()
    if written == 0:
        # Every row purged: an empty part keeps the schema for readers.
        pq.write_table(
            schema.empty_table(), staging / "part-000000.parquet", compression=PARQUET_COMPRESSION
        )
    return written


def remove_deliveries(settings: Settings, delivery_ids: Sequence[str]) -> int:
    """Remove delivery directories: each is renamed out of sight first (one atomic step),
    then deleted, so a reader never sees half a delivery. Directories already gone count
    nothing (recovery may repeat this)."""
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
    for hidden in root.glob(".purging-*") if root.is_dir() else []:
        shutil.rmtree(hidden, ignore_errors=True)  # a removal a crash interrupted
    return removed


def _ledger_rows(session: Session, event_ids: Sequence[str]) -> pa.Table:
    """The ledger's rows of these events with the columns their anchor digests cover."""
    parts = [
        event_rows(session, ConsentEventRow.event_id.in_(chunk)).select(list(ANCHOR_FIELDS))
        for chunk in chunks(event_ids)
    ]
    return pa.concat_tables(parts) if parts else ANCHOR_SCHEMA.empty_table()


def _anonymised_ids(rows: pa.Table, key: bytes) -> pa.Table:
    """`rows` with `user_id` replaced by `anon:` + 32 hex digits of its keyed hash (rows whose
    user_id is already anonymised are dropped: nothing changes for them)."""
    con = duck()
    try:
        con.register("rows", rows)
        digest = hmac_sql("user_id", key, "duckdb")
        names = ", ".join(
            f"'{ANON_PREFIX}' || substr({digest}, 1, 32) AS user_id" if n == "user_id" else f'"{n}"'
            for n in rows.column_names
        )
        return con.sql(
            f"SELECT {names} FROM rows WHERE NOT starts_with(user_id, '{ANON_PREFIX}')"
        ).to_arrow_table()
    finally:
        con.close()


def apply_control_plane(
    settings: Settings,
    session: Any,
    workdir: Path,
    intent: Mapping[str, Any],
    key: bytes,
) -> tuple[dict[str, int], dict[str, int], dict[str, str]]:
    """Delete and anonymise the control plane's copies (inside the caller's transaction);
    returns (deleted, anonymised, the anchor sums taken out of and put into the ledger).

    Every change is read from the purge's saved decisions, so repeating it changes nothing.
    """
    deleted: dict[str, int] = {}
    anonymised: dict[str, int] = {}
    anchor = anchor_key(Keyring.for_settings(settings).pseudonym_key)
    consent = saved_acts(workdir, "consent_evidence")
    doomed = pc.filter(consent["key"], pc.equal(consent["action"], "delete")).to_pylist()
    blurred = pc.filter(consent["key"], pc.equal(consent["action"], "anonymise")).to_pylist()
    # The anchor sums of what leaves and what changes: the doctor reconciles them (I5).
    removed_rows = _ledger_rows(session, doomed)
    before = _ledger_rows(session, blurred)
    after = _anonymised_ids(before, key)
    before = before.filter(pc.is_in(before["event_id"], value_set=after["event_id"]))
    removed = add_digests(
        [
            digest_sums_by(anchor, removed_rows, None).get(None, 0),
            digest_sums_by(anchor, before, None).get(None, 0),
        ]
    )
    added = digest_sums_by(anchor, after, None).get(None, 0)
    affected = sorted(set(removed_rows["user_id"].to_pylist()) | set(before["user_id"].to_pylist()))
    count = 0
    for chunk in chunks(doomed):
        result = session.execute(
            sa.delete(ConsentEventRow).where(ConsentEventRow.event_id.in_(chunk))
        )
        count += result.rowcount or 0
    deleted["store.consent_events"] = count
    if after.num_rows:
        table = cast(sa.Table, ConsentEventRow.__table__)
        session.execute(
            sa.update(table)
            .where(table.c.event_id == sa.bindparam("b_event_id"))
            .values(user_id=sa.bindparam("b_user_id")),
            [
                {"b_event_id": e, "b_user_id": u}
                for e, u in zip(
                    after["event_id"].to_pylist(), after["user_id"].to_pylist(), strict=True
                )
            ],
        )
    anonymised["store.consent_events"] = after.num_rows
    state_removed = 0
    for chunk in chunks(affected):
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
    profile = saved_acts(workdir, "profile")
    gone = pc.filter(profile["key"], pc.equal(profile["action"], "delete")).to_pylist()
    count = 0
    for chunk in chunks(gone):
        result = session.execute(sa.delete(Subject).where(Subject.user_id.in_(chunk)))
        count += result.rowcount or 0
    deleted["store.subjects"] = count
    blanked = pc.filter(profile["key"], pc.equal(profile["action"], "anonymise")).to_pylist()
    count = 0
    fields = [f for f in intent["profile_fields"] if f in ("region", "birth_date")]
    if fields and blanked:
        # subjects.region is a 2-letter column: every anonymised profile field is nulled here.
        for chunk in chunks(blanked):
            result = session.execute(
                sa.update(Subject).where(Subject.user_id.in_(chunk)).values(**dict.fromkeys(fields))
            )
            count += result.rowcount or 0
    anonymised["store.subjects"] = count
    # The audit log: events the plan found due and unsealed (none while all are leaves).
    count = 0
    for chunk in chunks(intent["audit_seqs"]):
        result = session.execute(
            sa.delete(AuditEventRow).where(
                AuditEventRow.seq.in_(chunk), AuditEventRow.seq.not_in(sealed_audit_events())
            )
        )
        count += result.rowcount or 0
    deleted["store.audit_events"] = count
    # Purged deliveries stop existing with this transaction.
    for chunk in chunks(intent["delivery_ids"]):
        session.execute(
            sa.update(DeliveryRow)
            .where(DeliveryRow.id.in_(chunk), DeliveryRow.purged_at.is_(None))
            .values(purged_at=datetime.now(UTC), purge_id=intent["purge_id"])
        )
    sums = {"removed": f"{removed:064x}", "added": f"{added:064x}"}
    return deleted, anonymised, sums
