"""The group commit's transaction: a batch of checked consent changes appended to the ledger
and the audit log together (`ConsentLedger.record_many` checks them and calls this).

Per batch, in one transaction: the events, the current state of each (user, purpose) they
are newer than, and one `consent.changed` audit event per event, which is its anchor. The
log's lock is taken first, so every consent writer takes its locks in one order and event
numbers follow commit order. Two ways to the same rows, numbers and leaves: statement by
statement (SQLite), and in three round trips on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from consentry.audit.event_types import ConsentChanged
from consentry.audit.events import entry_json, envelope
from consentry.audit.log import append_events, append_statements_pg, lock_log
from consentry.ledger.anchor import event_digest
from consentry.ledger.records import ConsentChange, ConsentEventRecord, record_of_row
from consentry.ledger.writes import (
    KNOWN_SUBJECTS_PG,
    KNOWN_SUBJECTS_SQLITE,
    advance_state_statement,
    insert_events,
    insert_events_statement_pg,
    lock_and_draw_pg,
    next_event_seqs,
    run_pipelined,
    upsert_states_statement_pg,
)

__all__ = ["ChangeAppender"]

Row = dict[str, Any]

_STATE_COLUMNS = ("user_id", "purpose", "choice", "at", "source", "event_id")


@dataclass(frozen=True, slots=True)
class ChangeAppender:
    """Appends checked changes; holds the keys their audit events are written with."""

    anchor_key: bytes
    pseudonym_key: bytes

    def append(
        self,
        session: Session,
        changes: Sequence[ConsentChange],
        versions: Sequence[str],
        now: datetime,
        *,
        known_users_only: bool,
    ) -> tuple[list[Row], list[ConsentEventRecord | None]]:
        """The rows written, and per change its record (None: left out, an unknown user
        under `known_users_only`).

        1. The wanted changes: all, or with `known_users_only` those whose user is a
           subject (checked in the same transaction).
        2. Their rows, numbers and anchors, written the store's way (`_here` or `_pg`).
        """
        if session.get_bind().dialect.name == "postgresql":
            wanted, rows = self._pg(session, changes, versions, now, known_users_only)
        else:
            wanted, rows = self._here(session, changes, versions, now, known_users_only)
        recorded: list[ConsentEventRecord | None] = [None] * len(changes)
        for i, row in zip(wanted, rows, strict=True):
            recorded[i] = record_of_row(row["seq"], row)
        return rows, recorded

    def _here(
        self,
        session: Session,
        changes: Sequence[ConsentChange],
        versions: Sequence[str],
        now: datetime,
        known_users_only: bool,
    ) -> tuple[list[int], list[Row]]:
        """Statement by statement (SQLite): the log's lock, the numbers, the states, the
        audit events (whose numbers are the anchors), then the events."""
        wanted = list(range(len(changes)))
        if known_users_only:
            known = _known_subjects(session, {c.user_id for c in changes})
            wanted = [i for i in wanted if changes[i].user_id in known]
        rows = self._rows(changes, versions, wanted, now)
        if not rows:
            return wanted, rows
        head = lock_log(session)
        seqs = next_event_seqs(session, len(rows))
        _advance_states(session, rows)
        anchors = append_events(session, self._payloads(changes, wanted, rows, seqs), head=head)
        _number(rows, seqs, anchors)
        insert_events(session, rows)
        return wanted, rows

    def _pg(
        self,
        session: Session,
        changes: Sequence[ConsentChange],
        versions: Sequence[str],
        now: datetime,
        known_users_only: bool,
    ) -> tuple[list[int], list[Row]]:
        """PostgreSQL in three round trips (BEGIN; the log's lock, the known users and both
        sets of numbers in one statement, `lock_and_draw_pg`; then every write and the
        COMMIT in one pipeline, `run_pipelined`): the same rows, numbers, anchors and audit
        leaves as `_here`, in the same order, in one transaction. It has committed when this
        returns rows (on an error nothing is written)."""
        head, wanted, seqs, anchors = lock_and_draw_pg(
            session, [c.user_id for c in changes], known_users_only=known_users_only
        )
        rows = self._rows(changes, versions, wanted, now)
        if not rows:
            return wanted, rows
        payloads = self._payloads(changes, wanted, rows, seqs)
        _number(rows, seqs, anchors)
        run_pipelined(
            session,
            [
                upsert_states_statement_pg(_latest_per_pair(rows)),
                *append_statements_pg(payloads, head=head, seqs=anchors),
                insert_events_statement_pg(rows),
            ],
            commit=True,
        )
        return wanted, rows

    @staticmethod
    def _rows(
        changes: Sequence[ConsentChange],
        versions: Sequence[str],
        wanted: Sequence[int],
        now: datetime,
    ) -> list[Row]:
        """The event rows of the wanted changes (without seq and anchor)."""
        # New event ids from one draw of random bytes (one per event cost more).
        fresh = os.urandom(16 * len(wanted)).hex()
        return [
            {
                "event_id": changes[i].event_id or f"c-{fresh[32 * k : 32 * k + 32]}",
                "user_id": changes[i].user_id,
                "purpose": changes[i].purpose,
                "choice": changes[i].choice.value,
                "at": (changes[i].at or now).astimezone(UTC),
                "source": changes[i].source,
                "policy_version": versions[i],
                "evidence_origin": changes[i].evidence.origin,
                "evidence_client": changes[i].evidence.client,
                "evidence_shown_version": changes[i].evidence.shown_version,
                "recorded_at": now,
            }
            for k, i in enumerate(wanted)
        ]

    def _payloads(
        self,
        changes: Sequence[ConsentChange],
        wanted: Sequence[int],
        rows: Sequence[Row],
        seqs: Sequence[int],
    ) -> list[tuple[str, str]]:
        """One `consent.changed` audit event (type, payload) per row, numbered `seqs`."""
        payloads = []
        for i, row, seq in zip(wanted, rows, seqs, strict=True):
            digest = event_digest(self.anchor_key, row)
            event = ConsentChanged(
                subject_ref=self._pseudonym(row["user_id"]),
                purpose=row["purpose"],
                choice=row["choice"],
                source=row["source"],
                policy_version=row["policy_version"],
                at=row["at"].isoformat().replace("+00:00", "Z"),
                ledger_seq=seq,
                events_digest=f"{digest:064x}",
            )
            payloads.append((event.event_type, entry_json(envelope(event, changes[i].request_id))))
        return payloads

    def _pseudonym(self, user_id: str) -> str:
        """`Keyring.pseudonym` with the key read once (not per event)."""
        digest = hmac.new(self.pseudonym_key, user_id.encode("utf-8"), hashlib.sha256)
        return digest.hexdigest()[:32]


def _number(rows: Sequence[Row], seqs: Sequence[int], anchors: Sequence[int]) -> None:
    """Give each row its event number and its anchor (its audit event's number)."""
    for row, seq, anchor in zip(rows, seqs, anchors, strict=True):
        row["seq"], row["anchor_seq"] = seq, anchor


def _known_subjects(session: Session, user_ids: set[str]) -> set[str]:
    """Which of `user_ids` are subjects: one statement over an array (PostgreSQL) or a
    JSON array (SQLite), so it is compiled and prepared once whatever the count."""
    ordered = sorted(user_ids)
    # The session's Core connection: the ORM's execution path costs more than the
    # statement (once per group commit; nothing is pending to flush).
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        return set(conn.execute(KNOWN_SUBJECTS_PG, {"ids": ordered}).scalars())
    ids = json.dumps(ordered, ensure_ascii=False)
    return set(conn.execute(KNOWN_SUBJECTS_SQLITE, {"ids": ids}).scalars())


def _advance_states(session: Session, rows: Sequence[Row]) -> None:
    """Make each row the current state of its (user, purpose) unless a later
    (instant, event_id) is there; of several rows for one pair only the latest is
    offered. One statement run for every pair (the driver batches it)."""
    session.connection().execute(
        advance_state_statement(session),
        [{k: r[k] for k in _STATE_COLUMNS} for r in _latest_per_pair(rows)],
    )


def _latest_per_pair(rows: Sequence[Row]) -> list[Row]:
    """Of the rows, per (user, purpose) the latest by (instant, event_id)."""
    latest: dict[tuple[str, str], Row] = {}
    for row in rows:
        key = (row["user_id"], row["purpose"])
        held = latest.get(key)
        if held is None or (row["at"], row["event_id"]) > (held["at"], held["event_id"]):
            latest[key] = row
    return list(latest.values())
