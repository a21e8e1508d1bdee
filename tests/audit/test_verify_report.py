"""What `audit verify` reports, word for word, for each way a stored log can be damaged: the
problems listed, and the first bad leaf and event it names (on SQLite and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from consentry.audit import SqlAuditSink
from consentry.audit.event_types import SubjectsSynced
from consentry.audit.log import AuditLog
from consentry.errors import BadInput
from consentry.signing import Signer
from consentry.store import Store

EVENTS = 8  # seq = leaf + 1


def _fill(store: Store, count: int = EVENTS) -> AuditLog:
    for i in range(count):
        with store.session() as session:
            SqlAuditSink().append(
                session,
                SubjectsSynced(
                    subjects_read=i, subjects_new=i, subjects_updated=0, digest_sha256="ab" * 32
                ),
            )
    return AuditLog(store)


def _tamper(store: Store, *statements: str, **params: object) -> None:
    """Run `statements` as an operator with database access would, foreign keys off."""
    if store.engine.dialect.name == "sqlite":
        raw = sqlite3.connect(str(store.engine.url.database))
        raw.execute("PRAGMA foreign_keys = OFF")  # only outside a transaction
        with raw:
            for sql in statements:
                raw.execute(sql.replace(":h", "?") if ":h" in sql else sql, _args(sql, params))
        raw.close()
        return
    with store.engine.begin() as conn:
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
        for sql in statements:
            if ":h" in sql:
                conn.execute(sa.text(sql), params)
            else:
                conn.exec_driver_sql(sql)


def _args(sql: str, params: dict[str, object]) -> tuple[object, ...]:
    return (params["h"],) if ":h" in sql else ()


def _swap_event_numbers(a: int, b: int) -> list[str]:
    """Renumber events a and b into each other, the leaves following their events."""
    return [
        f"UPDATE audit_events SET seq = -1 WHERE seq = {a}",
        f"UPDATE audit_events SET seq = {a} WHERE seq = {b}",
        f"UPDATE audit_events SET seq = {b} WHERE seq = -1",
        f"UPDATE audit_leaves SET event_seq = -1 WHERE event_seq = {a}",
        f"UPDATE audit_leaves SET event_seq = {a} WHERE event_seq = {b}",
        f"UPDATE audit_leaves SET event_seq = {b} WHERE event_seq = -1",
    ]


def _blob_with_node(store: Store, leaf: int, position: int, node: bytes) -> bytes:
    """Leaf `leaf`'s stored subtree blob with the hash at `position` replaced by `node`."""
    with store.engine.connect() as conn:
        blob = bytes(
            conn.execute(
                sa.text("SELECT subtree_hashes FROM audit_leaves WHERE leaf_index = :i"),
                {"i": leaf},
            ).scalar_one()
        )
    return blob[: 32 * position] + node + blob[32 * (position + 1) :]


Damage = Callable[[Store], None]

CASES: list[tuple[str, Damage, list[str], tuple[int | None, int | None]]] = [
    (
        "event deleted",
        lambda s: _tamper(s, "DELETE FROM audit_events WHERE seq = 4"),
        ["leaf 3: its event 4 is missing"],
        (3, 4),
    ),
    (
        # Contents and hashes still agree: only the order of the numbers gives it away.
        "events renumbered",
        lambda s: _tamper(s, *_swap_event_numbers(3, 4)),
        ["leaf 3: event 3 is out of order"],
        (3, 3),
    ),
    (
        "payload edited",
        lambda s: _tamper(s, "UPDATE audit_events SET payload = '{\"x\":1}' WHERE seq = 5"),
        [
            "leaf 4 (event 5): the event does not match its leaf hash — the event or the "
            "leaf was changed"
        ],
        (4, 5),
    ),
    (
        "event without a leaf",
        lambda s: _tamper(
            s,
            "INSERT INTO audit_events (seq, event_type, at, payload) "
            "VALUES (9, 'subjects.synced', '2025-01-01 00:00:00', '{}')",
        ),
        ["audit event 9 has no leaf in the log"],
        (None, None),
    ),
    (
        "head removed",
        lambda s: _tamper(s, "DELETE FROM audit_head"),
        ["the log has no head row"],
        (None, None),
    ),
    (
        "head size edited",
        lambda s: _tamper(s, "UPDATE audit_head SET size = 5"),
        [f"the head says 5 leaves; the log holds {EVENTS}"],
        (5, None),
    ),
    (
        "head frontier edited",
        lambda s: _tamper(s, "UPDATE audit_head SET frontier = :h", h=b"\x07" * 32),
        ["the head's frontier does not match the recomputed tree"],
        (None, None),
    ),
    (
        # Leaf 7 completes levels 1 to 3; its level-2 node (leaves 4..7) is changed.
        "subtree edited",
        lambda s: _tamper(
            s,
            "UPDATE audit_leaves SET subtree_hashes = :h WHERE leaf_index = 7",
            h=_blob_with_node(s, 7, 1, b"\x07" * 32),
        ),
        ["leaf 4: the stored subtree over leaves 4..7 (level 2) does not match the recomputed one"],
        (4, None),
    ),
    (
        # Leaves 1 and 3 complete subtrees; both blobs cut short: the first is named.
        "subtrees truncated",
        lambda s: _tamper(
            s, "UPDATE audit_leaves SET subtree_hashes = :h WHERE leaf_index IN (1, 3)", h=b"x"
        ),
        ["leaf 1: its stored subtree hashes are truncated or padded"],
        (1, None),
    ),
]


@pytest.mark.parametrize(("case", "damage", "problems", "first"), CASES, ids=[c[0] for c in CASES])
def test_each_damage_is_reported_exactly(
    store: Store,
    signer: Signer,
    case: str,
    damage: Damage,
    problems: list[str],
    first: tuple[int | None, int | None],
) -> None:
    log = _fill(store)
    assert log.verify(signer.public_key).ok
    damage(store)
    report = log.verify(signer.public_key)
    assert report.problems == problems, case
    assert (report.first_bad_leaf, report.first_bad_event) == first, case


def test_a_one_leaf_log_with_a_padded_subtree_blob_is_reported(
    store: Store, signer: Signer
) -> None:
    """A single leaf completes no subtree: its blob must be empty."""
    log = _fill(store, 1)
    assert log.verify(signer.public_key).ok
    _tamper(
        store, "UPDATE audit_leaves SET subtree_hashes = :h WHERE leaf_index = 0", h=b"\x07" * 32
    )
    report = log.verify(signer.public_key)
    assert report.problems == ["leaf 0: its stored subtree hashes are truncated or padded"]
    assert report.first_bad_leaf == 0


def test_a_given_checkpoint_with_a_bad_signature_is_named(store: Store, signer: Signer) -> None:
    log = _fill(store)
    signed = log.checkpoint(signer, record=False)
    forged = dataclasses.replace(signed, signature=bytes(64))
    report = log.verify(signer.public_key, checkpoint=forged)
    assert report.problems == [
        "the given checkpoint: the signature does not check under this home's key"
    ]
    assert report.checkpoints_checked == 1


def test_a_malformed_recorded_checkpoint_is_named_by_its_row(store: Store, signer: Signer) -> None:
    log = _fill(store)
    log.checkpoint(signer)
    _tamper(store, "UPDATE audit_checkpoints SET note = 'not a note'")
    with pytest.raises(BadInput) as caught:
        log.verify(signer.public_key)
    assert [p.location for p in caught.value.problems] == ["recorded checkpoint 1"]
