"""The revocation log in the control-plane store: append, page, confirm, count.

Writers of one licensee are serialised (SQLite `BEGIN IMMEDIATE`; PostgreSQL locks the
licensee's row), so within a licensee `seq` order is commit order and a feed cursor never
skips a revocation committed later. A (licensee, record, delivery) appears once: appends
are `INSERT … ON CONFLICT DO NOTHING` inside one transaction with their audit event, so a
run killed part-way leaves nothing, and a re-run neither loses nor duplicates a revocation.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.orm import Session

from consentry.audit import AuditSink, SqlAuditSink
from consentry.audit.event_types import RevocationConfirmed, RevocationIssued
from consentry.instants import rfc3339
from consentry.policy import PolicyFile
from consentry.revocation.rules import (
    ExtraReason,
    RevocationStatus,
    due_at,
    lines_digest,
    lines_digest_arrow,
    status_of,
)
from consentry.store import Store
from consentry.store.models import Licensee, RevocationRow

__all__ = [
    "LOG_SCHEMA",
    "ReceiptResult",
    "RevocationEntry",
    "RevocationLog",
]

_BATCH: Final = 50_000
"""Rows per bulk step (one `executemany` on SQLite, one COPY chunk on PostgreSQL): bounds
the Python objects alive at once; `on_batch` is called after each."""
_CHUNK: Final = 5_000
"""Ids per SQL IN-list."""
_SQLITE_BEGIN: Final = "consentry_sqlite_begin"
"""The store's execution option choosing SQLite's BEGIN mode (see consentry.store.store)."""

UTC_TS = pa.timestamp("us", tz="UTC")
LOG_SCHEMA = pa.schema(
    [
        ("seq", pa.int64()),
        ("record_id", pa.string()),
        ("delivery_id", pa.string()),
        ("reason", pa.string()),
        ("since", UTC_TS),
        ("revoked_at", UTC_TS),
        ("due_at", UTC_TS),
        ("confirmed_at", UTC_TS),
    ]
)
"""One licensee's log as Arrow (`RevocationLog.entries_arrow`)."""


@dataclass(frozen=True, slots=True)
class RevocationEntry:
    """One logged revocation as plain data."""

    seq: int
    licensee_id: str
    record_id: str
    delivery_id: str
    delivery_ids: tuple[str, ...]
    author_id: str
    reason: str
    since: datetime
    revoked_at: datetime
    due_at: datetime
    run_id: str
    confirmed_at: datetime | None
    receipt_id: str | None

    def status(self, now: datetime) -> RevocationStatus:
        return status_of(self.confirmed_at, self.due_at, now)

    def for_licensee(self, now: datetime) -> dict[str, Any]:
        """What the licensee sees: no internal post or author ids."""
        return {
            "revocation_id": f"rv-{self.seq}",
            "record_id": self.record_id,
            "delivery_ids": list(self.delivery_ids),
            "reason": self.reason,
            "since": rfc3339(self.since),
            "revoked_at": rfc3339(self.revoked_at),
            "due_at": rfc3339(self.due_at),
            "status": self.status(now).value,
            "confirmed_at": None if self.confirmed_at is None else rfc3339(self.confirmed_at),
        }


@dataclass(frozen=True, slots=True)
class ReceiptResult:
    """What one receipt batch changed."""

    receipt_id: str
    confirmed: list[str]
    """Record ids whose pending revocations this batch confirmed."""
    already_confirmed: list[str]
    unknown: list[str]
    """Record ids that are no revocation of this licensee (nothing changed for them)."""


def _entry(row: RevocationRow) -> RevocationEntry:
    return RevocationEntry(
        seq=row.seq,
        licensee_id=row.licensee_id,
        record_id=row.record_id,
        delivery_id=row.delivery_id,
        delivery_ids=tuple(row.delivery_ids),
        author_id=row.author_id,
        reason=row.reason,
        since=row.since,
        revoked_at=row.revoked_at,
        due_at=row.due_at,
        run_id=row.run_id,
        confirmed_at=row.confirmed_at,
        receipt_id=row.receipt_id,
    )


_COLUMNS: Final = ("record_id", "delivery_id", "delivery_ids", "author_id", "reason", "since")
_SQLITE_INSTANT: Final = "%Y-%m-%d %H:%M:%S"
"""SQLAlchemy's SQLite DATETIME text (`UtcDateTime` stores the UTC wall time); Arrow's `%S`
prints the microseconds of a `timestamp[us]`, so values match what the ORM writes."""
_PG_INSTANT: Final = "%Y-%m-%d %H:%M:%S+00"


def _ordered(rows: pa.Table) -> pa.Table:
    """The rows in (record_id, delivery_id) order: the order `seq` numbers them in, and
    the index's order, so a large append walks the unique index sequentially."""
    return rows.select(list(_COLUMNS)).sort_by(
        [("record_id", "ascending"), ("delivery_id", "ascending")]
    )


_JSON_SAFE: Final = r"^[\x20-\x21\x23-\x5b\x5d-\x7e]*$"
"""Printable ASCII without `"` and backslash: strings `json.dumps` writes verbatim."""


def _json_lists(column: pa.ChunkedArray) -> list[str | None]:
    """Each list of strings as the JSON text `json.dumps` gives it (what the ORM's JSON
    column stores), vectorised when no element needs escaping."""
    lists = column.combine_chunks()
    flat = lists.flatten()
    if len(flat) == 0 or pc.all(pc.match_substring_regex(flat, _JSON_SAFE)).as_py():
        inner = pc.binary_join(lists, '", "')
        texts = pc.if_else(
            pc.equal(pc.list_value_length(lists), 0),
            pa.scalar("[]"),
            pc.binary_join_element_wise('["', inner, '"]', ""),
        )
        return texts.to_pylist()  # type: ignore[no-any-return]
    return [None if v is None else json.dumps(v) for v in lists.to_pylist()]


def _bulk_insert(
    session: Session,
    rows: pa.Table,
    *,
    licensee_id: str,
    revoked_at: datetime,
    due: datetime,
    run_id: str,
    on_batch: Callable[[int], None] | None,
) -> None:
    """Insert `rows` unless logged already, in the session's transaction, in bulk.

    1. SQLite: one prepared `INSERT … ON CONFLICT DO NOTHING` run by `executemany` over
       batches of plain tuples (values formatted by Arrow, not per row in Python).
    2. PostgreSQL: `COPY` into a temporary table dropped at commit, then one
       `INSERT … SELECT … ON CONFLICT DO NOTHING` in row order.
    Both run on the session's own connection, so the rows commit or vanish with the
    transaction (and its audit event) as a whole.
    """
    dbapi: Any = session.connection().connection.driver_connection
    postgres = session.get_bind().dialect.name == "postgresql"
    fmt = _PG_INSTANT if postgres else _SQLITE_INSTANT
    cursor = dbapi.cursor()
    cache: int | None = None
    try:
        if not postgres:
            # A page cache big enough for the indexes a large append touches (the default
            # 2 MiB makes every index insert a page read); a cap, not an allocation.
            cache = int(cursor.execute("PRAGMA cache_size").fetchone()[0])
            cursor.execute(f"PRAGMA cache_size = -{_SQLITE_CACHE_KIB}")
        if postgres:
            cursor.execute(
                "CREATE TEMP TABLE rv_incoming (ord bigint, record_id text, delivery_id text, "
                "delivery_ids json, author_id text, reason text, since timestamptz) "
                "ON COMMIT DROP"
            )
        done = 0
        for batch in rows.to_batches(max_chunksize=_BATCH):
            table = pa.Table.from_batches([batch])
            columns: list[list[Any]] = [
                table.column("record_id").to_pylist(),
                table.column("delivery_id").to_pylist(),
                _json_lists(table.column("delivery_ids")),
                table.column("author_id").to_pylist(),
                table.column("reason").to_pylist(),
                pc.strftime(table.column("since"), fmt).to_pylist(),
            ]
            if postgres:
                with cursor.copy(
                    "COPY rv_incoming (ord, record_id, delivery_id, delivery_ids, author_id, "
                    "reason, since) FROM STDIN"
                ) as copy:
                    for i, values in enumerate(zip(*columns, strict=True)):
                        copy.write_row((done + i, *values))
            else:
                cursor.executemany(
                    "INSERT INTO revocations (licensee_id, record_id, delivery_id, delivery_ids, "
                    "author_id, reason, since, revoked_at, due_at, run_id) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (licensee_id, record_id, delivery_id) DO NOTHING",
                    (
                        (licensee_id, *values, revoked, due_text, run_id)
                        for values, revoked, due_text in zip(
                            zip(*columns, strict=True),
                            itertools.repeat(revoked_at.astimezone(UTC).strftime(_SQLITE_PY)),
                            itertools.repeat(due.astimezone(UTC).strftime(_SQLITE_PY)),
                        )
                    ),
                )
            done += table.num_rows
            if on_batch is not None:
                on_batch(done)
        if postgres:
            cursor.execute(
                "INSERT INTO revocations (licensee_id, record_id, delivery_id, delivery_ids, "
                "author_id, reason, since, revoked_at, due_at, run_id) "
                "SELECT %s, record_id, delivery_id, delivery_ids, author_id, reason, since, "
                "%s, %s, %s FROM rv_incoming ORDER BY ord "
                "ON CONFLICT (licensee_id, record_id, delivery_id) DO NOTHING",
                (licensee_id, revoked_at.astimezone(UTC), due.astimezone(UTC), run_id),
            )
            cursor.execute("DROP TABLE rv_incoming")
    finally:
        if cache is not None:
            cursor.execute(f"PRAGMA cache_size = {cache}")
        cursor.close()


_SQLITE_PY: Final = "%Y-%m-%d %H:%M:%S.%f"
_SQLITE_CACHE_KIB: Final = 256 * 1024
"""SQLite page cache during a bulk append, in KiB."""


def _new_since(session: Session, licensee_id: str, before: int, rows: pa.Table) -> pa.Array:
    """The lines `record_id:delivery_id` of the licensee's revocations after `before` (the
    ones this transaction added from `rows`).

    Every row added comes from `rows` (the transaction holds the licensee's writer lock),
    so when as many were added as `rows` has distinct lines, they are exactly those lines:
    one count on the (licensee, seq) index instead of reading them back. Otherwise (some
    were logged already) they are fetched in bulk on the session's connection.
    """
    dbapi: Any = session.connection().connection.driver_connection
    mark = "%s" if session.get_bind().dialect.name == "postgresql" else "?"
    where = f"FROM revocations WHERE licensee_id = {mark} AND seq > {mark}"
    cursor = dbapi.cursor()
    try:
        given = (
            pc.unique(
                pc.binary_join_element_wise(
                    rows.column("record_id"), rows.column("delivery_id"), ":"
                ).combine_chunks()
            )
            if rows.num_rows
            else pa.array([], pa.string())
        )
        cursor.execute(f"SELECT count(*) {where}", (licensee_id, before))
        if int(cursor.fetchone()[0]) == len(given):
            return given
        cursor.execute(f"SELECT record_id || ':' || delivery_id {where}", (licensee_id, before))
        lines = [line for (line,) in cursor.fetchall()]
    finally:
        cursor.close()
    return pa.array(lines, pa.string())


_FETCH: Final = 100_000
"""Rows per `fetchmany` when reading a whole log."""


def _log_column(values: Sequence[Any], kind: pa.DataType, *, postgres: bool) -> pa.Array:
    """One fetched column as Arrow: instants parsed as a column (see `entries_arrow`)."""
    if kind != UTC_TS or postgres:
        return pa.array(values, type=kind)
    # SQLite: "YYYY-MM-DD HH:MM:SS[.ffffff]" in UTC, as `UtcDateTime` writes it.
    return pa.array(values, type=pa.string()).cast(pa.timestamp("us")).cast(UTC_TS)


class RevocationLog:
    """The `revocations` table of one store."""

    def __init__(
        self,
        store: Store,
        policy: PolicyFile,
        *,
        audit: AuditSink | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.policy = policy
        self.audit = audit or SqlAuditSink()
        self._clock = clock

    @contextmanager
    def _writing(self, licensee_ids: Sequence[str]) -> Iterator[Session]:
        """One write transaction holding the licensees' writer lock (see module doc)."""
        with self.store.engine.connect() as conn:
            conn = conn.execution_options(**{_SQLITE_BEGIN: "IMMEDIATE"})
            with Session(bind=conn) as session, session.begin():
                # Sorted, so two writers locking several licensees cannot deadlock.
                session.execute(
                    sa.select(Licensee.id)
                    .where(Licensee.id.in_(sorted(set(licensee_ids))))
                    .order_by(Licensee.id)
                    .with_for_update()
                ).all()
                yield session

    # -- appending ---------------------------------------------------------------------------

    def append(
        self,
        licensee_id: str,
        rows: pa.Table,
        *,
        run_id: str,
        trigger: str,
        as_of: datetime,
        lineage_rows: int,
        revoked: int,
        purge: bool = False,
        on_batch: Callable[[int], None] | None = None,
        on_commit: Callable[[Session], None] | None = None,
    ) -> int:
        """Log `rows` for one licensee; return how many were new.

        `rows` has `record_id`, `delivery_id`, `delivery_ids`, `author_id`, `reason`,
        `since` (all set).

        1. One transaction, holding the licensee's writer lock: each row is inserted unless
           its (licensee, record, delivery) is logged already, in (record, delivery) order
           and in bulk (`_bulk_insert`); `revoked_at` is now and `due_at` now plus the SLA
           in force now.
        2. With `purge`, rows of these records logged as `post_removed` (the post left the
           lake before its purge was recorded) become `retention_purged`, since the purge.
        3. A `revocation.issued` audit event (counts and a digest of the new rows) commits
           with them. `on_batch(rows_so_far)` is called after every bulk step (`_BATCH`
           rows), inside the transaction; `on_commit(session)` last, inside it too (a job
           records its commit there).
        """
        now = self._clock()
        due = due_at(self.policy, now)
        with self._writing([licensee_id]) as session:
            before = session.scalar(
                sa.select(sa.func.coalesce(sa.func.max(RevocationRow.seq), 0)).where(
                    RevocationRow.licensee_id == licensee_id
                )
            )
            if rows.num_rows:
                _bulk_insert(
                    session,
                    _ordered(rows),
                    licensee_id=licensee_id,
                    revoked_at=now,
                    due=due,
                    run_id=run_id,
                    on_batch=on_batch,
                )
            if purge and rows.num_rows:
                records = rows.column("record_id").to_pylist()
                for start in range(0, len(records), _CHUNK):
                    session.execute(
                        sa.update(RevocationRow)
                        .where(
                            RevocationRow.licensee_id == licensee_id,
                            RevocationRow.reason == ExtraReason.POST_REMOVED.value,
                            RevocationRow.record_id.in_(records[start : start + _CHUNK]),
                        )
                        .values(reason=ExtraReason.RETENTION_PURGED.value, since=as_of)
                    )
            new_rows = _new_since(session, licensee_id, int(before or 0), rows)
            self.audit.append(
                session,
                RevocationIssued(
                    run_id=run_id,
                    licensee_id=licensee_id,
                    trigger=trigger,
                    as_of=rfc3339(as_of),
                    lineage_rows=lineage_rows,
                    revoked=revoked,
                    new=len(new_rows),
                    digest_sha256=lines_digest_arrow(new_rows),
                ),
            )
            if on_commit is not None:
                on_commit(session)
            return len(new_rows)

    # -- reading -----------------------------------------------------------------------------

    def entries_arrow(self, licensee_id: str) -> pa.Table:
        """The licensee's whole log (LOG_SCHEMA), fetched in bulk from the store.

        1. Raw driver cursor, `fetchmany` in batches: no ORM objects, no per-value Python.
        2. SQLite keeps instants as UTC wall-time text (`UtcDateTime`); Arrow parses them as
           a column. PostgreSQL returns aware datetimes, which Arrow converts to UTC.
        """
        postgres = self.store.engine.dialect.name == "postgresql"
        mark = "%s" if postgres else "?"
        batches = []
        with self.store.engine.connect() as conn:
            dbapi: Any = conn.connection.driver_connection
            cursor = dbapi.cursor()
            try:
                cursor.execute(
                    "SELECT seq, record_id, delivery_id, reason, since, revoked_at, due_at, "
                    f"confirmed_at FROM revocations WHERE licensee_id = {mark} ORDER BY seq",
                    (licensee_id,),
                )
                while part := cursor.fetchmany(_FETCH):
                    columns = list(zip(*part, strict=True))
                    batches.append(
                        pa.record_batch(
                            [
                                _log_column(values, field.type, postgres=postgres)
                                for values, field in zip(columns, LOG_SCHEMA, strict=True)
                            ],
                            schema=LOG_SCHEMA,
                        )
                    )
            finally:
                cursor.close()
        return pa.Table.from_batches(batches, schema=LOG_SCHEMA)

    def page(self, licensee_id: str, after_seq: int, limit: int) -> list[RevocationEntry]:
        """Up to `limit` revocations of the licensee after `after_seq`, in seq order."""
        with self.store.session() as session:
            rows = session.scalars(
                sa.select(RevocationRow)
                .where(RevocationRow.licensee_id == licensee_id, RevocationRow.seq > after_seq)
                .order_by(RevocationRow.seq)
                .limit(limit)
            ).all()
            return [_entry(r) for r in rows]

    def entries(
        self, *, licensee_id: str | None = None, author_id: str | None = None
    ) -> list[RevocationEntry]:
        """Revocations of one licensee and/or one author, in seq order."""
        query = sa.select(RevocationRow).order_by(RevocationRow.seq)
        if licensee_id is not None:
            query = query.where(RevocationRow.licensee_id == licensee_id)
        if author_id is not None:
            query = query.where(RevocationRow.author_id == author_id)
        with self.store.session() as session:
            return [_entry(r) for r in session.scalars(query)]

    def overdue(self, now: datetime, *, licensee_id: str | None = None) -> list[RevocationEntry]:
        """Every unconfirmed revocation whose deadline has passed (of one licensee if
        given), by licensee then seq."""
        query = (
            sa.select(RevocationRow)
            .where(RevocationRow.confirmed_at.is_(None), RevocationRow.due_at < now)
            .order_by(RevocationRow.licensee_id, RevocationRow.seq)
        )
        if licensee_id is not None:
            query = query.where(RevocationRow.licensee_id == licensee_id)
        with self.store.session() as session:
            return [_entry(r) for r in session.scalars(query)]

    def counts(self, licensee_id: str, now: datetime) -> dict[str, int]:
        """revoked, confirmed, pending and overdue revocations of one licensee."""
        status = sa.case(
            (RevocationRow.confirmed_at.is_not(None), RevocationStatus.CONFIRMED.value),
            (RevocationRow.due_at < now, RevocationStatus.OVERDUE.value),
            else_=RevocationStatus.PENDING.value,
        )
        with self.store.session() as session:
            found: dict[str, int] = dict(
                session.execute(
                    sa.select(status, sa.func.count())
                    .where(RevocationRow.licensee_id == licensee_id)
                    .group_by(status)
                ).all()
            )
        counts = {s.value: int(found.get(s.value, 0)) for s in RevocationStatus}
        return {"revoked": sum(counts.values()), **counts}

    # -- receipts ----------------------------------------------------------------------------

    def confirm(self, licensee_id: str, record_ids: Sequence[str]) -> ReceiptResult:
        """Confirm the licensee's deletion of `record_ids` (distinct, validated).

        1. Every pending revocation of the licensee with one of these record ids gets
           `confirmed_at` now and this batch's receipt id; confirmed ones keep theirs.
        2. Ids with no revocation of this licensee are `unknown`: nothing changes for them.
        3. A `revocation.confirmed` audit event (counts, digest of the ids) commits with it,
           so a retried batch changes nothing and says so (`already_confirmed`).
        """
        now = self._clock()
        receipt_id = f"rcp-{uuid.uuid4().hex[:24]}"
        confirmed: list[str] = []
        already: list[str] = []
        with self._writing([licensee_id]) as session:
            known: dict[str, bool] = {}
            for start in range(0, len(record_ids), _CHUNK):
                chunk = list(record_ids[start : start + _CHUNK])
                for record_id, pending in session.execute(
                    sa.select(
                        RevocationRow.record_id,
                        sa.func.max(sa.case((RevocationRow.confirmed_at.is_(None), 1), else_=0)),
                    )
                    .where(
                        RevocationRow.licensee_id == licensee_id,
                        RevocationRow.record_id.in_(chunk),
                    )
                    .group_by(RevocationRow.record_id)
                ):
                    known[record_id] = bool(pending)
                session.execute(
                    sa.update(RevocationRow)
                    .where(
                        RevocationRow.licensee_id == licensee_id,
                        RevocationRow.record_id.in_(chunk),
                        RevocationRow.confirmed_at.is_(None),
                    )
                    .values(confirmed_at=now, receipt_id=receipt_id)
                )
            for record_id in record_ids:
                if record_id in known:
                    (confirmed if known[record_id] else already).append(record_id)
            unknown = [r for r in record_ids if r not in known]
            self.audit.append(
                session,
                RevocationConfirmed(
                    receipt_id=receipt_id,
                    licensee_id=licensee_id,
                    records=len(record_ids),
                    confirmed=len(confirmed),
                    already_confirmed=len(already),
                    unknown=len(unknown),
                    digest_sha256=lines_digest(record_ids),
                ),
            )
        return ReceiptResult(receipt_id, confirmed, already, unknown)
