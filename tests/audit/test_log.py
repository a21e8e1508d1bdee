"""The Merkle log over the store, on SQLite and PostgreSQL: appends, proofs, checkpoints,
serialised concurrent appends, and tampering that `verify` must catch and name."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from consentry.audit import SqlAuditSink
from consentry.audit.checkpoint import parse_signed_checkpoint
from consentry.audit.event_types import SubjectsSynced
from consentry.audit.log import _AT_TEXT, AuditLog, VerifyReport, append_events, entry_text
from consentry.audit.merkle import (
    extend_frontier,
    leaf_hash,
    reference_root,
    verify_consistency,
    verify_inclusion,
)
from consentry.errors import ConsentryError
from consentry.signing import Signer
from consentry.store import Store


def _sync(session: sa.orm.Session, i: int) -> int:
    return SqlAuditSink().append(
        session,
        SubjectsSynced(
            subjects_read=i, subjects_new=i, subjects_updated=0, digest_sha256="ab" * 32
        ),
    )


def _fill(store: Store, count: int) -> list[int]:
    seqs = []
    for i in range(count):
        with store.session() as session:
            seqs.append(_sync(session, i))
    return seqs


def _leaf_indices(store: Store) -> list[tuple[int, int]]:
    with store.engine.connect() as conn:
        return [
            (int(r[0]), int(r[1]))
            for r in conn.exec_driver_sql(
                "SELECT leaf_index, event_seq FROM audit_leaves ORDER BY leaf_index"
            )
        ]


def test_append_prove_and_consistency(store: Store, signer: Signer) -> None:
    seqs = _fill(store, 13)
    log = AuditLog(store)
    head = log.head()
    assert head.size == 13
    tree = log.load_tree()
    assert (
        tree.root()
        == head.root_hash
        == reference_root([bytes(tree.levels[0][i * 32 : i * 32 + 32]) for i in range(13)])
    )
    for seq in seqs:
        proof = log.prove(seq)
        assert verify_inclusion(
            proof.leaf.leaf_index, 13, proof.leaf.leaf_hash, proof.path, head.root_hash
        )
        assert '"subjects_read"' in proof.leaf.entry
    old = log.prove(seqs[2], size=5)
    assert old.root_hash == tree.root(5)
    assert verify_inclusion(2, 5, old.leaf.leaf_hash, old.path, tree.root(5))
    for first in range(1, 14):
        c = log.consistency(first)
        assert verify_consistency(first, 13, c.path, c.first_root, c.second_root)
        assert c.path == tree.consistency_proof(first, 13)
        assert (c.first_root, c.second_root) == (tree.root(first), tree.root(13))
    with pytest.raises(ConsentryError, match="no consistency proof from size 0"):
        log.consistency(0)
    with pytest.raises(Exception, match="not in the log"):
        log.prove(10_000)
    report = log.verify(signer.public_key)
    assert report.ok, report.problems
    assert report.size == 13
    assert report.root_hash == head.root_hash


def test_batched_appends_are_one_transaction(store: Store) -> None:
    with store.session() as session:
        seqs = append_events(session, [("policy.published", f'{{"n":{i}}}') for i in range(70)])
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 70
    assert _leaf_indices(store) == list(enumerate(seqs))

    def fail_after_appending() -> None:
        with store.session() as session:
            append_events(session, [("policy.published", "{}")] * 3)
            raise RuntimeError("the caller fails after appending")

    with pytest.raises(RuntimeError):
        fail_after_appending()
    assert AuditLog(store).head().size == 70
    assert len(_leaf_indices(store)) == 70


def test_concurrent_writers_leave_no_gaps_or_duplicates(store: Store, signer: Signer) -> None:
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(15):
                with store.session() as session:
                    _sync(session, k * 100 + i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    leaves = _leaf_indices(store)
    assert [i for i, _ in leaves] == list(range(60))
    seqs = [s for _, s in leaves]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 60
    assert AuditLog(store).verify(signer.public_key).ok


def test_checkpoint_is_signed_recorded_and_parsed(store: Store, signer: Signer) -> None:
    _fill(store, 5)
    log = AuditLog(store)
    signed = log.checkpoint(signer)
    note = signed.note()
    lines = note.split("\n")
    assert lines[0] == f"consentry/audit/{signer.kid}"
    assert lines[1] == "5"
    assert lines[3] == ""
    assert lines[4].startswith("\u2014 consentry/audit/")
    parsed = parse_signed_checkpoint(note)
    assert parsed == signed
    assert parsed.verify(signer.public_key)
    forged = parse_signed_checkpoint(note.replace("\n5\n", "\n4\n"))
    assert not forged.verify(signer.public_key)
    assert [n for _, n in log.checkpoints()] == [note]


def _execute(store: Store, sql: str, **params: object) -> None:
    with store.engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def _tamper_cases() -> list[tuple[str, str, int]]:
    # (description, SQL, first bad leaf); the log holds 20 events, seq = leaf + 1.
    return [
        ("payload edited", "UPDATE audit_events SET payload = :p WHERE seq = 8", 7),
        # Leaf 0, the first entry: a verifier that starts at 1 would miss these.
        ("first payload edited", "UPDATE audit_events SET payload = :p WHERE seq = 1", 0),
        (
            "first leaf hash edited",
            "UPDATE audit_leaves SET leaf_hash = :h WHERE leaf_index = 0",
            0,
        ),
        (
            "type edited",
            "UPDATE audit_events SET event_type = 'consent.imported' WHERE seq = 12",
            11,
        ),
        ("leaf hash edited", "UPDATE audit_leaves SET leaf_hash = :h WHERE leaf_index = 4", 4),
        ("leaf removed", "DELETE FROM audit_leaves WHERE leaf_index = 9", 9),
        ("subtree edited", "UPDATE audit_leaves SET subtree_hashes = :h WHERE leaf_index = 15", 8),
    ]


@pytest.mark.parametrize(("case", "sql", "bad"), _tamper_cases(), ids=lambda v: str(v)[:20])
def test_verify_names_the_first_bad_leaf(
    store: Store, signer: Signer, case: str, sql: str, bad: int
) -> None:
    _fill(store, 20)
    log = AuditLog(store)
    log.checkpoint(signer)
    assert log.verify(signer.public_key).ok
    params: dict[str, object] = {"h": b"\x07" * 32} if ":h" in sql else {"p": '{"x":1}'}
    if case == "subtree edited":  # leaf 15 completes levels 1..4: change its level-3 node
        with store.engine.connect() as conn:
            blob = conn.execute(
                sa.text("SELECT subtree_hashes FROM audit_leaves WHERE leaf_index = 15")
            ).scalar_one()
        params = {"h": bytes(blob[:64]) + b"\x07" * 32 + bytes(blob[96:])}
    _execute(store, sql, **params)
    report = log.verify(signer.public_key)
    assert not report.ok
    assert report.first_bad_leaf == bad, report.problems


def test_verify_reports_the_leaves_it_reads_chunk_by_chunk(
    store: Store, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`audit verify`'s progress bar: every leaf is counted once, after its chunk."""
    import consentry.audit.log as log_module

    monkeypatch.setattr(log_module, "_CHUNK", 7)
    _fill(store, 20)
    read: list[int] = []
    report = AuditLog(store).verify(signer.public_key, on_leaves=read.append)
    assert report.ok
    assert read == [7, 7, 6]
    assert sum(read) == report.size == 20


def _rewrite_consistently(store: Store) -> None:
    """What an operator with database access would do: recompute every hash and the head
    from the (edited) events, so the stored log agrees with itself again."""
    with store.engine.begin() as conn:
        dialect = conn.dialect.name
        at = _AT_TEXT[dialect]
        rows = conn.exec_driver_sql(
            f"SELECT l.leaf_index, e.event_type, {at}, e.payload FROM audit_leaves l "
            "JOIN audit_events e ON e.seq = l.event_seq ORDER BY l.leaf_index"
        ).all()
        hashes = [leaf_hash(entry_text(t, a, p).encode()) for _, t, a, p in rows]
        _, frontier, completed = extend_frontier(0, [], hashes)
        for (index, *_), h, c in zip(rows, hashes, completed, strict=True):
            conn.execute(
                sa.text(
                    "UPDATE audit_leaves SET leaf_hash = :h, subtree_hashes = :c "
                    "WHERE leaf_index = :i"
                ),
                {"h": h, "c": c, "i": index},
            )
        conn.execute(sa.text("UPDATE audit_head SET frontier = :f"), {"f": b"".join(frontier)})


def test_a_consistent_rewrite_is_caught_by_the_signed_checkpoints(
    store: Store, signer: Signer
) -> None:
    """An operator who edits an event and rewrites every hash to match cannot re-sign."""
    _fill(store, 9)
    log = AuditLog(store)
    saved = log.checkpoint(signer, record=False)
    _execute(store, "UPDATE audit_events SET payload = :p WHERE seq = 3", p='{"x":2}')
    _rewrite_consistently(store)
    assert log.verify(signer.public_key).ok  # internally consistent again...
    report = log.verify(signer.public_key, checkpoint=saved)  # ...but not with its past
    assert not report.ok
    assert any("the given checkpoint" in p for p in report.problems)
    log.checkpoint(signer)  # a new checkpoint of the rewritten log is not the saved one
    assert parse_signed_checkpoint(log.checkpoints()[-1][1]).checkpoint != saved.checkpoint


def test_a_checkpoint_of_an_earlier_size_still_verifies_and_each_one_is_counted(
    store: Store, signer: Signer
) -> None:
    _fill(store, 5)
    log = AuditLog(store)
    saved = log.checkpoint(signer)
    _fill(store, 3)
    report = log.verify(signer.public_key)
    assert report.ok, report.problems
    assert (report.size, report.checkpoints_checked) == (8, 1)
    log.checkpoint(signer)
    again = log.verify(signer.public_key, checkpoint=saved)
    assert again.ok, again.problems
    assert again.checkpoints_checked == 3


def test_the_first_bad_leaf_and_its_event_are_the_lowest_flagged() -> None:
    report = VerifyReport()
    report.flag("no leaf")
    assert (report.first_bad_leaf, report.first_bad_event, report.ok) == (None, None, False)
    report.flag("leaf 7", leaf=7, event=8)
    report.flag("leaf 9", leaf=9, event=10)
    assert (report.first_bad_leaf, report.first_bad_event) == (7, 8)
    report.flag("leaf 7 again", leaf=7, event=99)
    assert (report.first_bad_leaf, report.first_bad_event) == (7, 8)
    report.flag("leaf 3", leaf=3, event=4)
    assert (report.first_bad_leaf, report.first_bad_event) == (3, 4)
    assert report.problems == ["no leaf", "leaf 7", "leaf 9", "leaf 7 again", "leaf 3"]
