"""How the ledger's rows are written: event numbers, bulk inserts (COPY on PostgreSQL),
state upserts and the consent-change counters. `ConsentLedger` calls these inside its
transactions; nothing here opens one."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from consentry.audit.log import LOCK_HEAD_SQL, LogHeadState, PipelinedStatement, head_state
from consentry.ledger.anchor import ANCHOR_FIELDS
from consentry.observe.metrics import families
from consentry.store.models import ConsentEventRow, ConsentStateRow, Subject

__all__ = [
    "ARRAY_CHUNK",
    "KNOWN_EVENT_IDS_PG",
    "KNOWN_SUBJECTS_PG",
    "KNOWN_SUBJECTS_SQLITE",
    "advance_state_statement",
    "advance_states_arrow",
    "count_changes",
    "dialect_insert",
    "insert_events",
    "insert_events_arrow",
    "insert_events_statement_pg",
    "lock_and_draw_pg",
    "next_event_seqs",
    "run_pipelined",
    "upsert_states_statement_pg",
]

_EVENTS: sa.Table = ConsentEventRow.__table__  # type: ignore[assignment]
_STATE_COLUMNS = ("user_id", "purpose", "choice", "at", "source", "event_id")


ARRAY_CHUNK = 100_000
"""Ids per PostgreSQL array parameter."""
KNOWN_EVENT_IDS_PG = sa.select(_EVENTS.c.event_id).where(
    _EVENTS.c.event_id == sa.func.any(sa.bindparam("ids", type_=postgresql.ARRAY(sa.String)))
)
KNOWN_SUBJECTS_PG = sa.select(Subject.user_id).where(
    Subject.user_id == sa.func.any(sa.bindparam("ids", type_=postgresql.ARRAY(sa.String)))
)
KNOWN_SUBJECTS_SQLITE = sa.text(
    "SELECT user_id FROM subjects WHERE user_id IN (SELECT value FROM json_each(:ids))"
)
"""Which of the ids in the JSON array `ids` are subjects: one statement, compiled and
prepared once whatever the count (an IN-list was a new statement per length, and building
it cost more than running it)."""


_ADVANCE_STATE: dict[str, Any] = {}


def advance_state_statement(session: Session) -> Any:
    """INSERT … ON CONFLICT DO UPDATE of one state row, only where the row offered is newer
    by (instant, event_id); built once per dialect (every group commit runs it)."""
    name = session.get_bind().dialect.name
    found = _ADVANCE_STATE.get(name)
    if found is None:
        found = _ADVANCE_STATE[name] = _advance_state(session)
    return found


def _advance_state(session: Session) -> Any:
    state = ConsentStateRow.__table__
    stmt = dialect_insert(session)(state)
    newer = sa.or_(
        stmt.excluded.at > state.c.at,
        sa.and_(stmt.excluded.at == state.c.at, stmt.excluded.event_id > state.c.event_id),
    )
    return stmt.on_conflict_do_update(
        index_elements=[state.c.user_id, state.c.purpose],
        set_={k: stmt.excluded[k] for k in ("choice", "at", "source", "event_id")},
        where=newer,
    )


def next_event_seqs(session: Session, n: int) -> list[int]:
    """`n` new event numbers, in order, taken under the log's lock (every consent writer
    holds it): PostgreSQL draws them from the column's sequence; SQLite, whose writer holds
    the database's write lock, counts on from the largest (as its rowids do)."""
    # Through the session's Core connection: the ORM's execution path costs more than the
    # statement, and the group commit runs this once per batch (there is nothing to flush).
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        return [int(seq) for seq in conn.execute(_NEXT_SEQS_PG, {"n": n}).scalars()]
    top = int(conn.scalar(_TOP_SEQ) or 0)
    return list(range(top + 1, top + n + 1))


_NEXT_SEQS_PG = sa.text(
    "SELECT nextval(pg_get_serial_sequence('consent_events', 'seq')) "
    "FROM generate_series(1, :n) ORDER BY 1"
)
_TOP_SEQ = sa.select(sa.func.coalesce(sa.func.max(_EVENTS.c.seq), 0))


_LOCK_AND_DRAW_PG = sa.text(
    f"WITH head AS ({LOCK_HEAD_SQL}), "
    "wanted AS (SELECT u.i FROM unnest(CAST(:users AS text[])) WITH ORDINALITY AS u(user_id, i) "
    "WHERE NOT :known_only OR EXISTS (SELECT 1 FROM subjects s WHERE s.user_id = u.user_id)) "
    "SELECT h.size, h.frontier, ARRAY(SELECT i - 1 FROM wanted ORDER BY i), "
    # Correlated with the head's row, so drawn once the head is locked (commit order).
    "ARRAY(SELECT nextval(pg_get_serial_sequence('consent_events', 'seq')) "
    "FROM wanted WHERE h.size >= 0 ORDER BY 1), "
    "ARRAY(SELECT nextval(pg_get_serial_sequence('audit_events', 'seq')) "
    "FROM wanted WHERE h.size >= 0 ORDER BY 1) "
    "FROM head h"
).bindparams(
    sa.bindparam("users", type_=postgresql.ARRAY(sa.String)),
    sa.bindparam("known_only", type_=sa.Boolean),
)


def lock_and_draw_pg(
    session: Session, user_ids: Sequence[str], *, known_users_only: bool
) -> tuple[LogHeadState, list[int], list[int], list[int]]:
    """PostgreSQL, one round trip: lock the audit log's head and read it (`lock_log`), find
    which of the changes (by their users, `user_ids` in order) are wanted (all, or with
    `known_users_only` those whose user is a subject) and, under the lock, draw one event
    number and one audit event number per wanted change, each in increasing order.

    Returns the head, the wanted changes' indices, their event numbers and audit numbers.
    """
    row = (
        session.connection()
        .execute(_LOCK_AND_DRAW_PG, {"users": list(user_ids), "known_only": known_users_only})
        .first()
    )
    if row is None:
        head_state(None, None)  # raises: the log has no head row
        raise AssertionError("unreachable")
    head = head_state(row[0], row[1])
    return head, [int(i) for i in row[2]], [int(s) for s in row[3]], [int(s) for s in row[4]]


_INSERT_EVENTS_PG = (
    "INSERT INTO consent_events (seq, event_id, user_id, purpose, choice, at, source, "
    "policy_version, evidence_origin, evidence_client, evidence_shown_version, recorded_at, "
    "anchor_seq) SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], "
    "%s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[], "
    "%s::text[], %s::timestamptz[], %s::bigint[])"
)


def insert_events_statement_pg(rows: Sequence[dict[str, Any]]) -> PipelinedStatement:
    """The events whose seq and anchor are known as one PostgreSQL INSERT over arrays (for
    `run_pipelined`; `insert_events` writes the same rows by COPY)."""
    return (_INSERT_EVENTS_PG, tuple([r[k] for r in rows] for k in _EVENT_COLUMNS))


_UPSERT_STATES_PG = (
    "INSERT INTO consent_state (user_id, purpose, choice, at, source, event_id) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::text[], "
    "%s::text[]) "
    "ON CONFLICT (user_id, purpose) DO UPDATE SET choice = excluded.choice, "
    "at = excluded.at, source = excluded.source, event_id = excluded.event_id "
    "WHERE excluded.at > consent_state.at OR "
    "(excluded.at = consent_state.at AND excluded.event_id > consent_state.event_id)"
)


def upsert_states_statement_pg(rows: Sequence[dict[str, Any]]) -> PipelinedStatement:
    """`advance_state_statement` for every row (at most one per user and purpose) as one
    PostgreSQL statement over arrays."""
    return (_UPSERT_STATES_PG, tuple([r[k] for r in rows] for k in _STATE_COLUMNS))


def run_pipelined(
    session: Session, statements: Sequence[PipelinedStatement], *, commit: bool
) -> None:
    """Send `statements` on the session's PostgreSQL connection in one pipeline, in order,
    and with `commit` the COMMIT too: one round trip for all. A database error comes out as
    SQLAlchemy's (`IntegrityError` for a constraint), and the transaction is then rolled
    back by the session as for any statement. After a commit here the session's own commit
    finds the connection out of its transaction and sends nothing."""
    import psycopg

    driver = session.connection().connection.driver_connection
    statement = "<pipeline>"
    try:
        with driver.pipeline(), driver.cursor() as cursor:  # type: ignore[union-attr]
            for statement, params in statements:
                cursor.execute(statement, params)
            if commit:
                # A COMMIT statement, not `commit()`: that would sync once more.
                cursor.execute("COMMIT")
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(statement, None, exc, psycopg.Error) from None


_EVENT_COLUMNS = ("seq", *ANCHOR_FIELDS, "anchor_seq")
_INSERT_EVENTS = sa.insert(_EVENTS)


def insert_events(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert events whose seq and anchor are known: COPY on PostgreSQL, one statement run
    for every row on SQLite."""
    if session.get_bind().dialect.name != "postgresql":
        session.connection().execute(
            _INSERT_EVENTS, [{k: r[k] for k in _EVENT_COLUMNS} for r in rows]
        )
        return
    statement = f"COPY consent_events ({', '.join(_EVENT_COLUMNS)}) FROM STDIN"
    with _copying(session, statement) as copy:
        for row in rows:
            copy.write_row(tuple(row[k] for k in _EVENT_COLUMNS))


@contextmanager
def _copying(session: Session, statement: str) -> Iterator[Any]:
    """A COPY FROM STDIN on the session's PostgreSQL connection; a database error comes out
    as SQLAlchemy's (`IntegrityError` for a constraint), like every other statement's."""
    import psycopg

    cursor = session.connection().connection.cursor()
    try:
        with cursor.copy(statement) as copy:
            yield copy
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(statement, None, exc, psycopg.Error) from None
    finally:
        cursor.close()


_ARROW_EVENT_COLUMNS = (*ANCHOR_FIELDS, "anchor_seq")
_SQLITE_INSTANT = "%Y-%m-%d %H:%M:%S"
"""Arrow's strftime of a microsecond timestamp: the text SQLAlchemy stores in SQLite
(`2025-01-02 03:04:05.000006`, always six digits)."""


def _sqlite_rows(table: pa.Table) -> Iterator[tuple[Any, ...]]:
    """Rows of `table` as the sqlite3 driver binds them: instants as SQLite's stored text."""
    columns = []
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = pc.strftime(column, _SQLITE_INSTANT)
        columns.append(column.to_pylist())
    return zip(*columns, strict=True)


def _copy_csv(session: Session, target: str, table: pa.Table) -> None:
    """COPY `table` into `target` (PostgreSQL) as CSV written by Arrow: instants as
    `2025-01-02 03:04:05.000006Z`, nulls as empty fields, empty strings quoted."""
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
    statement = f"COPY {target} ({', '.join(table.column_names)}) FROM STDIN WITH (FORMAT csv)"
    with _copying(session, statement) as copy:
        copy.write(buffer.getbuffer())


def insert_events_arrow(session: Session, rows: pa.Table) -> None:
    """Insert an import's events (their anchor known): COPY on PostgreSQL, the driver's
    executemany on SQLite; no row goes through SQLAlchemy's per-row processing."""
    rows = rows.select(list(_ARROW_EVENT_COLUMNS))
    if session.get_bind().dialect.name == "postgresql":
        _copy_csv(session, "consent_events", rows)
        return
    marks = ", ".join("?" * len(_ARROW_EVENT_COLUMNS))
    session.connection().connection.driver_connection.executemany(  # type: ignore[union-attr]
        f"INSERT INTO consent_events ({', '.join(_ARROW_EVENT_COLUMNS)}) VALUES ({marks})",
        _sqlite_rows(rows),
    )


_STATE_UPSERT = (
    "INSERT INTO consent_state (user_id, purpose, choice, at, source, event_id) {rows} "
    "ON CONFLICT (user_id, purpose) DO UPDATE SET choice = excluded.choice, "
    "at = excluded.at, source = excluded.source, event_id = excluded.event_id "
    "WHERE excluded.at > consent_state.at OR "
    "(excluded.at = consent_state.at AND excluded.event_id > consent_state.event_id)"
)


def advance_states_arrow(session: Session, events: pa.Table) -> None:
    """Fold new events into `consent_state`: per (user, purpose) the latest new event (by
    instant, then event id, found by DuckDB) replaces the state where it is later."""
    con = duckdb.connect()
    try:
        con.register("new_events", events.select(list(_STATE_COLUMNS)))
        columns = ", ".join(f'"{c}"' for c in _STATE_COLUMNS)
        latest = con.sql(
            f"SELECT {columns} FROM new_events QUALIFY row_number() OVER "
            '(PARTITION BY user_id, purpose ORDER BY "at" DESC, event_id DESC) = 1'
        ).to_arrow_table()
    finally:
        con.close()
    if latest.num_rows == 0:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            sa.text(
                "CREATE TEMPORARY TABLE new_state (LIKE consent_state INCLUDING DEFAULTS) "
                "ON COMMIT DROP"
            )
        )
        _copy_csv(session, "new_state", latest)
        session.execute(
            sa.text(_STATE_UPSERT.format(rows=f"SELECT {', '.join(_STATE_COLUMNS)} FROM new_state"))
        )
        return
    marks = ", ".join("?" * len(_STATE_COLUMNS))
    session.connection().connection.driver_connection.executemany(  # type: ignore[union-attr]
        _STATE_UPSERT.format(rows=f"VALUES ({marks})"), _sqlite_rows(latest)
    )


def count_changes(rows: Sequence[dict[str, Any]]) -> None:
    """`consentry_consent_changes_total` per purpose and source (docs/operations.md)."""
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["purpose"], row["source"])
        counts[key] = counts.get(key, 0) + 1
    family = families().consent_changes
    for (purpose, source), n in counts.items():
        family.labels(purpose, source).inc(n)


def dialect_insert(session: Session) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (SQLite and PostgreSQL both do)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
