"""The consent ledger over the control-plane store: append, read back, resolve.

Appends are transactions: the event, the current-state row and the audit event commit
together or not at all. Nothing here updates or deletes an event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import ibis
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.orm import Session

from consentry.audit import AuditSink, SqlAuditSink
from consentry.audit.event_types import ConsentAnchored, ConsentImported, SubjectsSynced
from consentry.errors import BadInput, Problem
from consentry.keys import Keyring
from consentry.ledger.anchor import (
    anchor_key,
    digest_sums_by,
    event_rows,
)
from consentry.ledger.append import ChangeAppender
from consentry.ledger.bulk import resolve_consent_bulk
from consentry.ledger.changes import CONSENT_CHANGES
from consentry.ledger.reads import FACTS_AND_EVENTS, latest_choices, subject_facts
from consentry.ledger.records import (
    ConsentChange,
    ConsentEventRecord,
    Evidence,
    LedgerImport,
    record_of_orm,
)
from consentry.ledger.rules import (
    ConsentDecision,
    ConsentRule,
    LatestChoice,
    SubjectFacts,
    resolve_consent,
)
from consentry.ledger.writes import (
    ARRAY_CHUNK,
    KNOWN_EVENT_IDS_PG,
    advance_states_arrow,
    count_changes,
    dialect_insert,
    insert_events_arrow,
)
from consentry.policy import Choice, PolicyFile
from consentry.schema import CONSENT_SOURCES
from consentry.store import Store
from consentry.store.arrow import select_arrow
from consentry.store.models import ConsentEventRow, Subject

__all__ = [
    "MAX_CHECK_USERS",
    "ConsentChange",
    "ConsentEventRecord",
    "ConsentLedger",
    "ConsentReader",
    "Evidence",
    "LedgerImport",
]

MAX_CHECK_USERS = 100_000
"""The most user ids one bulk check may ask about."""

_CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future a client's instant may lie (clock skew) before it is refused."""

_CHUNK = 5_000
"""Ids per SQL IN-list: below every backend's bound-parameter limit."""


class ConsentReader(Protocol):
    """What the pages and the API need to answer "what is my consent" (read side)."""

    def resolve_all(self, user_id: str, at: datetime) -> list[ConsentDecision]: ...

    def history(self, user_id: str) -> list[ConsentEventRecord]: ...


def _note_anyone_on_commit(session: Session) -> None:
    """When `session` commits (the caller's transaction, or the ledger's own), note in
    `CONSENT_CHANGES` that anyone's consent may have changed: bulk writes (subjects' facts,
    imported history) name too many users to list."""
    sa.event.listen(session, "after_commit", lambda _: CONSENT_CHANGES.note(None), once=True)


class ConsentLedger:
    """Append-only consent events, the current state, and resolution over both."""

    def __init__(
        self,
        store: Store,
        policy: PolicyFile,
        keyring: Keyring,
        audit: AuditSink | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.keyring = keyring
        self.audit = audit or SqlAuditSink()
        self._anchor_key = anchor_key(keyring.pseudonym_key)
        self._appender = ChangeAppender(self._anchor_key, keyring.pseudonym_key)

    @contextmanager
    def _session(self, session: Session | None) -> Iterator[Session]:
        """The caller's transaction when given (it commits), else a new one."""
        if session is not None:
            yield session
            return
        with self.store.session() as own:
            yield own

    # --- reading -----------------------------------------------------------------------

    def subject(self, user_id: str) -> SubjectFacts | None:
        """The user's facts, or None when the platform never told us about them."""
        with self.store.reading() as conn:
            return subject_facts(conn, user_id)

    def history(self, user_id: str) -> list[ConsentEventRecord]:
        """Every event of the user, oldest first (by instant, then event_id)."""
        with self.store.session() as session:
            rows = session.scalars(
                sa.select(ConsentEventRow)
                .where(ConsentEventRow.user_id == user_id)
                .order_by(ConsentEventRow.at, ConsentEventRow.event_id)
            ).all()
            return [record_of_orm(r) for r in rows]

    def latest_choices(self, user_id: str, at: datetime) -> dict[str, LatestChoice]:
        """Purpose -> the latest event at or before `at` (ties: larger event_id)."""
        with self.store.engine.connect() as conn:
            return latest_choices(conn, user_id, at)

    def _facts_and_latest(
        self, user_id: str, at: datetime
    ) -> tuple[SubjectFacts, dict[str, LatestChoice]]:
        """`subject` (or bare facts for an unknown user) and `latest_choices`, read with one
        statement: the API's hot path."""
        known, latest = self._known_facts_and_latest(user_id, at)
        return (known or SubjectFacts(user_id=user_id)), latest

    def _known_facts_and_latest(
        self, user_id: str, at: datetime
    ) -> tuple[SubjectFacts | None, dict[str, LatestChoice]]:
        """`subject` (None for an unknown user) and `latest_choices`, read with one
        statement."""
        rows = self.store.rows(FACTS_AND_EVENTS, {"user_id": user_id, "at": at})
        known, region, birth_date = rows[0][:3]
        facts = (
            SubjectFacts(user_id=user_id, region=region, birth_date=birth_date)
            if known is not None
            else None
        )
        latest: dict[str, LatestChoice] = {}
        # Ordered by (instant, event_id): the last one per purpose wins.
        for *_, purpose, choice, when, source, event_id in rows:
            if purpose is not None:
                latest[purpose] = LatestChoice(Choice(choice), when, source, event_id)
        return facts, latest

    def resolve(self, user_id: str, purpose: str, at: datetime) -> ConsentDecision:
        """`resolve_consent` for one user and purpose, reading the ledger."""
        subject, latest = self._facts_and_latest(user_id, at)
        return resolve_consent(self.policy, subject, purpose, at, latest.get(purpose))

    def resolve_all(self, user_id: str, at: datetime) -> list[ConsentDecision]:
        """Every purpose of the version in force at `at`, resolved for the user."""
        version = self.policy.version_at(at)
        if version is None:
            return []
        subject, latest = self._facts_and_latest(user_id, at)
        return [
            resolve_consent(self.policy, subject, p.key, at, latest.get(p.key))
            for p in version.purposes
        ]

    def resolve_known(self, user_id: str, at: datetime) -> list[ConsentDecision] | None:
        """`resolve_all` for a user the platform told us about; None for any other user.
        One statement reads both (the public signals' hot path)."""
        version = self.policy.version_at(at)
        subject, latest = self._known_facts_and_latest(user_id, at)
        if subject is None:
            return None
        if version is None:
            return []
        return [
            resolve_consent(self.policy, subject, p.key, at, latest.get(p.key))
            for p in version.purposes
        ]

    def check(
        self, purpose: str, at: datetime, user_ids: Sequence[str]
    ) -> tuple[list[ConsentDecision], list[bool]]:
        """Resolve `purpose` at `at` for up to MAX_CHECK_USERS users, in the order given.

        1. Facts and events of the asked users are read in IN-list chunks.
        2. Resolution runs as one vectorised expression on embedded DuckDB
           (`resolve_consent_bulk`), the same rules as the scalar form.
        3. Returns the decisions and, per user, whether the platform knows them.
        """
        if len(user_ids) > MAX_CHECK_USERS:
            raise BadInput(
                Problem("request", None, "user_ids", f"at most {MAX_CHECK_USERS:,} user ids")
            )
        unique = list(dict.fromkeys(user_ids))
        subjects: list[Any] = []
        events: list[Any] = []
        with self.store.session() as session:
            for start in range(0, len(unique), _CHUNK):
                chunk = unique[start : start + _CHUNK]
                subjects += session.execute(
                    sa.select(Subject.user_id, Subject.region, Subject.birth_date).where(
                        Subject.user_id.in_(chunk)
                    )
                ).all()
                events += session.execute(
                    sa.select(
                        ConsentEventRow.user_id,
                        ConsentEventRow.choice,
                        ConsentEventRow.at,
                        ConsentEventRow.source,
                        ConsentEventRow.event_id,
                    ).where(
                        ConsentEventRow.user_id.in_(chunk),
                        ConsentEventRow.purpose == purpose,
                        ConsentEventRow.at <= at,
                    )
                ).all()
        known = {s[0] for s in subjects}
        facts = {s[0]: s for s in subjects}
        users = pa.table(
            {
                "user_id": pa.array(unique, pa.string()),
                "region": pa.array(
                    [facts[u][1] if u in facts else None for u in unique], pa.string()
                ),
                "birth_date": pa.array(
                    [facts[u][2] if u in facts else None for u in unique], pa.date32()
                ),
                "_pos": pa.array(np.arange(len(unique), dtype=np.int64)),
            }
        )
        columns: list[tuple[Any, ...]] = (
            list(zip(*events, strict=True)) if events else [(), (), (), (), ()]
        )
        event_table = pa.table(
            {
                "user_id": pa.array(columns[0], pa.string()),
                "purpose": pa.array([purpose] * len(events), pa.string()),
                "choice": pa.array(columns[1], pa.string()),
                "at": pa.array(columns[2], pa.timestamp("us", tz="UTC")),
                "source": pa.array(columns[3], pa.string()),
                "event_id": pa.array(columns[4], pa.string()),
            }
        )
        backend = ibis.duckdb.connect()
        try:
            users_expr = ibis.memtable(users)
            resolved = resolve_consent_bulk(
                self.policy, users_expr, ibis.memtable(event_table), purpose, at
            )
            ordered = resolved.join(users_expr.select("user_id", "_pos"), "user_id").order_by(
                "_pos"
            )
            result = backend.to_pyarrow(ordered)
        finally:
            backend.disconnect()
        by_user = {
            row["user_id"]: ConsentDecision(
                user_id=row["user_id"],
                purpose=purpose,
                decision=Choice(row["decision"]),
                rule=ConsentRule(row["rule"]),
                policy_version=row["policy_version"],
                since=row["since"],
            )
            for row in result.select(
                ["user_id", "decision", "rule", "policy_version", "since"]
            ).to_pylist()
        }
        return [by_user[u] for u in user_ids], [u in known for u in user_ids]

    def events_arrow(self, purposes: str | Sequence[str], at: datetime) -> pa.Table:
        """The ledger's events for `purposes` at or before `at`, as Arrow (for the engines).

        Streamed from the store in batches; columns as `resolve_consent_bulk` expects.
        """
        wanted = [purposes] if isinstance(purposes, str) else list(purposes)
        query = (
            sa.select(
                ConsentEventRow.user_id,
                ConsentEventRow.purpose,
                ConsentEventRow.choice,
                ConsentEventRow.at,
                ConsentEventRow.source,
                ConsentEventRow.event_id,
            )
            .where(ConsentEventRow.purpose.in_(wanted), ConsentEventRow.at <= at)
            .order_by(ConsentEventRow.seq)
        )
        schema = pa.schema(
            [
                ("user_id", pa.string()),
                ("purpose", pa.string()),
                ("choice", pa.string()),
                ("at", pa.timestamp("us", tz="UTC")),
                ("source", pa.string()),
                ("event_id", pa.string()),
            ]
        )
        with self.store.session() as session:
            return select_arrow(session, query, schema)

    def subjects_arrow(self) -> pa.Table:
        """Every subject's facts as Arrow: `user_id`, `region`, `birth_date` (what
        `resolve_consent_bulk` reads) and `created_at`, `deleted_at` (who was an author at
        an instant). Streamed from the store in batches."""
        query = sa.select(
            Subject.user_id,
            Subject.region,
            Subject.birth_date,
            Subject.created_at,
            Subject.deleted_at,
        ).order_by(Subject.user_id)
        schema = pa.schema(
            [
                ("user_id", pa.string()),
                ("region", pa.string()),
                ("birth_date", pa.date32()),
                ("created_at", pa.timestamp("us", tz="UTC")),
                ("deleted_at", pa.timestamp("us", tz="UTC")),
            ]
        )
        with self.store.session() as session:
            return select_arrow(session, query, schema)

    # --- writing -----------------------------------------------------------------------

    def record(
        self,
        user_id: str,
        purpose: str,
        choice: Choice,
        *,
        source: str,
        evidence: Evidence,
        at: datetime | None = None,
        event_id: str | None = None,
    ) -> ConsentEventRecord:
        """Append one choice; it takes effect at `at` (default: now). `record_many` of one
        change (BadInput for a change `check_change` refuses)."""
        change = ConsentChange(user_id, purpose, Choice(choice), source, evidence, at, event_id)
        [recorded] = self.record_many([change])
        assert recorded is not None  # every user is accepted without known_users_only
        return recorded

    def check_change(self, change: ConsentChange, *, now: datetime | None = None) -> str:
        """The policy version `change` falls under; BadInput when it cannot be recorded.

        1. `source` must be a known source; `at` aware and not in the future (beyond 5 min
           of clock skew); the purpose must exist in the version in force at `at`.
        """
        now = now or datetime.now(UTC)
        at = (change.at or now).astimezone(UTC)
        if change.source not in CONSENT_SOURCES:
            raise BadInput(Problem("request", None, "source", f"unknown source {change.source!r}"))
        if at > now + _CLOCK_SKEW:
            raise BadInput(Problem("request", None, "at", "a choice cannot be made in the future"))
        version = self.policy.version_at(at)
        if version is None or version.purpose(change.purpose) is None:
            known = ", ".join(p.key for p in version.purposes) if version else "none"
            raise BadInput(
                Problem(
                    "request",
                    None,
                    "purpose",
                    f"unknown purpose {change.purpose!r}; known: {known}",
                )
            )
        return version.version

    def record_many(
        self, changes: Sequence[ConsentChange], *, known_users_only: bool = False
    ) -> list[ConsentEventRecord | None]:
        """Append choices in one transaction (a group commit); per change its record, or None
        for a user the platform does not know when `known_users_only`.

        1. Every change must pass `check_change` (else BadInput and nothing is written).
        2. With `known_users_only`, changes for users missing from `subjects` are left out
           (their answer is None) — checked in the same transaction.
        3. In one transaction, as `record` always did per change: the events (one INSERT),
           the current state of each (user, purpose) where an event is newer than what it
           holds (one upsert of the newest per pair), and one `consent.changed` audit event
           per event, which is its anchor (`anchor_seq`), appended together under one lock
           of the log (`append_events`). It commits before this returns: a caller that
           answers after it has every change stored and on the audit log, or none of them.
        """
        now = datetime.now(UTC)
        versions = [self.check_change(c, now=now) for c in changes]
        if not changes:
            return []
        with self.store.session(immediate=True) as session:
            rows, recorded = self._appender.append(
                session, changes, versions, now, known_users_only=known_users_only
            )
        if rows:
            # Committed: caches of resolved consent in this process drop these users at once.
            CONSENT_CHANGES.note(row["user_id"] for row in rows)
            count_changes(rows)
        return recorded

    def record_gpc(
        self, user_id: str, *, evidence: Evidence, at: datetime | None = None
    ) -> list[ConsentEventRecord]:
        """Record a Global Privacy Control signal as the user's account-level choice.

        1. Every purpose flagged `gpc` in the version in force gets a `gpc` deny,
        2. except where the user's latest event is an explicit choice (not gpc) — the user
           chose themselves — or is already a gpc deny (repeating records nothing new).
        """
        at = (at or datetime.now(UTC)).astimezone(UTC)
        version = self.policy.version_at(at)
        if version is None:
            return []
        latest = self.latest_choices(user_id, at)
        recorded = []
        for purpose in version.purposes:
            if not purpose.gpc:
                continue
            previous = latest.get(purpose.key)
            if previous is not None and (
                previous.source != "gpc" or previous.choice is Choice.DENY
            ):
                continue
            recorded.append(
                self.record(
                    user_id, purpose.key, Choice.DENY, source="gpc", evidence=evidence, at=at
                )
            )
        return recorded

    # --- importing from the lake -------------------------------------------------------

    def sync_subjects(
        self, users: pa.Table, *, session: Session | None = None
    ) -> tuple[int, int, int]:
        """Upsert `users` (lake rows) into `subjects`; returns (read, new, updated).

        Runs in `session` when given (an import commits it with the lake snapshot), else in
        its own transaction; a `subjects.synced` audit event goes with it.
        """
        wanted = [
            "user_id",
            "region",
            "birth_date",
            "protected",
            "created_at",
            "deactivated_at",
            "deleted_at",
        ]
        users = users.select(wanted)
        digest = hashlib.sha256()
        for column in wanted:
            for chunk in users.column(column).chunks:
                for buffer in chunk.buffers():
                    if buffer is not None:
                        digest.update(buffer)
        with self._session(session) as tx:
            _note_anyone_on_commit(tx)
            before = tx.scalar(sa.select(sa.func.count()).select_from(Subject)) or 0
            insert = dialect_insert(tx)
            table = Subject.__table__
            for batch in users.to_batches(max_chunksize=_CHUNK):
                rows = batch.to_pylist()
                stmt = insert(table).values(rows)
                tx.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[table.c.user_id],
                        set_={c: stmt.excluded[c] for c in wanted[1:]},
                    )
                )
            after = tx.scalar(sa.select(sa.func.count()).select_from(Subject)) or 0
            new = after - before
            self.audit.append(
                tx,
                SubjectsSynced(
                    subjects_read=users.num_rows,
                    subjects_new=new,
                    subjects_updated=users.num_rows - new,
                    digest_sha256=digest.hexdigest(),
                ),
            )
        return users.num_rows, new, users.num_rows - new

    def import_events(self, events: pa.Table, *, session: Session | None = None) -> LedgerImport:
        """Append the lake's `consent_events` not yet in the ledger (by event_id).

        1. Events whose event_id the ledger already holds are skipped (re-imports add
           nothing); the policy version in force at each new event's instant is computed
           vectorised.
        2. Evidence records the import (origin `lake:consent_events`, client `import`);
           the version the user was shown is unknown for imported history.
        3. One `consent.imported` audit event summarises the import (counts, a digest of the
           ids, and `events_digest`, the anchor sum of the new events); every new event
           records it as its anchor (`consentry.ledger.anchor`).
        4. The current state of every affected (user, purpose) advances to the latest new
           event where it is later than what the state holds (the state is the fold of all
           events, so folding in the new ones is the same as recomputing it).
        All in `session` when given (an import commits it with the lake snapshot), else in
        its own transaction.
        """
        now = datetime.now(UTC)
        table = events.select(["event_id", "user_id", "purpose", "choice", "at", "source"])
        digest = hashlib.sha256(
            "\n".join(sorted(pc.cast(table.column("event_id"), pa.string()).to_pylist())).encode()
        ).hexdigest()
        with self._session(session) as tx:
            _note_anyone_on_commit(tx)
            fresh = table.filter(pc.invert(self._known_ids(tx, table.column("event_id"))))
            starts = np.array(
                [v.effective_from.timestamp() * 1e6 for v in self.policy.versions], dtype=np.int64
            )
            names = np.array([None] + [v.version for v in self.policy.versions], dtype=object)
            micros = pc.cast(fresh.column("at"), pa.int64()).to_numpy(zero_copy_only=False)
            versions = names[np.searchsorted(starts, micros, side="right")]
            fresh = fresh.append_column("policy_version", pa.array(versions, pa.string()))
            # Evidence for imported history: where it came from, and when we wrote it; the
            # version the user was shown is unknown.
            n = fresh.num_rows
            rows = (
                fresh.append_column("evidence_origin", pa.repeat("lake:consent_events", n))
                .append_column("evidence_client", pa.repeat("import", n))
                .append_column("evidence_shown_version", pa.nulls(n, pa.string()))
                .append_column(
                    "recorded_at", pa.repeat(pa.scalar(now, pa.timestamp("us", "UTC")), n)
                )
            )
            anchored = digest_sums_by(self._anchor_key, rows, None).get(None, 0)
            affected = pc.unique(fresh.column("user_id")).to_pylist()
            seq = self.audit.append(
                tx,
                ConsentImported(
                    events_read=table.num_rows,
                    events_new=n,
                    subjects_affected=len(affected),
                    digest_sha256=digest,
                    events_digest=f"{anchored:064x}",
                ),
            )
            rows = rows.append_column("anchor_seq", pa.repeat(pa.scalar(seq, pa.int64()), n))
            insert_events_arrow(tx, rows)
            advance_states_arrow(tx, rows)
        return LedgerImport(table.num_rows, fresh.num_rows, len(affected))

    def anchor_unanchored(self) -> int:
        """Anchor the events recorded before anchoring existed (null `anchor_seq`): one
        `consent.anchored` audit event with their digest sum, in one transaction with the
        rows pointing at it. Returns how many were anchored (0: nothing to do)."""
        with self.store.session() as session:
            table = event_rows(session, ConsentEventRow.anchor_seq.is_(None))
            if table.num_rows == 0:
                return 0
            total = digest_sums_by(self._anchor_key, table, None).get(None, 0)
            seq = self.audit.append(
                session,
                ConsentAnchored(events=table.num_rows, events_digest=f"{total:064x}"),
            )
            session.execute(
                sa.update(ConsentEventRow)
                .where(ConsentEventRow.anchor_seq.is_(None))
                .values(anchor_seq=seq)
            )
            anchored: int = table.num_rows
            return anchored

    @staticmethod
    def _known_ids(session: Session, ids: pa.ChunkedArray) -> pa.ChunkedArray:
        """Per id, whether the ledger already holds an event with it (IN-list chunks; on
        PostgreSQL arrays of up to 100,000 ids, one prepared statement for them all)."""
        wanted = pc.unique(ids).to_pylist()
        known: list[str] = []
        if session.get_bind().dialect.name == "postgresql":
            for start in range(0, len(wanted), ARRAY_CHUNK):
                chunk = wanted[start : start + ARRAY_CHUNK]
                known += session.scalars(KNOWN_EVENT_IDS_PG, {"ids": chunk}).all()
        else:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                known += session.scalars(
                    sa.select(ConsentEventRow.event_id).where(ConsentEventRow.event_id.in_(chunk))
                ).all()
        mask = pc.is_in(ids, value_set=pa.array(known, pa.string()))
        return mask if isinstance(mask, pa.ChunkedArray) else pa.chunked_array([mask])
