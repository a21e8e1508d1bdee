"""The audit log as an RFC 9162 Merkle log over the control-plane store.

Every audit event is a leaf. Its entry bytes (format version 1) are UTF-8 text:

    consentry-audit-v1 LF <event type> LF <instant, RFC 3339 UTC with 6 digits> LF <payload>

where the payload is the event's canonical JSON exactly as stored. The leaf hash is
SHA-256(0x00 || entry). `audit_leaves` keeps, per leaf, its gap-free index, its event's seq,
its hash and the hashes of the complete subtrees it completed; `audit_head` keeps the size
and frontier and is the lock every append takes first (a row lock on PostgreSQL, the write
lock on SQLite), so appends are serialised and indices have no gaps or duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy.orm import Session

from consentry.audit.checkpoint import (
    SignedCheckpoint,
    parse_signed_checkpoint,
    sign_checkpoint,
)
from consentry.audit.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    MemoryTree,
    consistency_ranges,
    extend_frontier,
    frontier_levels,
    frontier_root,
    inclusion_ranges,
    leaf_hash,
    range_hash,
    range_nodes,
)
from consentry.errors import ConsentryError
from consentry.signing import Signer
from consentry.store import Store
from consentry.store.models import (
    AuditCheckpointRow,
    AuditEventRow,
    AuditHeadRow,
    AuditLeafRow,
)

__all__ = [
    "ENTRY_PREFIX",
    "LOCK_HEAD_SQL",
    "AuditLog",
    "ConsistencyProof",
    "InclusionProof",
    "LeafRecord",
    "LogHead",
    "LogIntegrityError",
    "PipelinedStatement",
    "VerifyReport",
    "append_events",
    "append_statements_pg",
    "entry_text",
    "head_state",
    "instant_text",
    "lock_log",
]

ENTRY_PREFIX: Final = "consentry-audit-v1\n"
"""First line of every leaf entry: the entry format and its version."""

_AT_TEXT: Final = {
    # SQLAlchemy stores SQLite instants as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC wall time).
    "sqlite": "replace(e.at, ' ', 'T') || 'Z'",
    "postgresql": "to_char(e.at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
}
"""SQL giving an event's instant exactly as `instant_text` writes it (verify reads text)."""

_EVENTS: sa.Table = AuditEventRow.__table__  # type: ignore[assignment]
_LEAVES: sa.Table = AuditLeafRow.__table__  # type: ignore[assignment]
_HEAD: sa.Table = AuditHeadRow.__table__  # type: ignore[assignment]
_CHUNK = 50_000


class LogIntegrityError(ConsentryError):
    """The stored log is not what its own structure says (a broken head, a missing node)."""


def instant_text(at: datetime) -> str:
    """`at` in UTC as RFC 3339 with exactly six fractional digits and `Z`."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def entry_text(event_type: str, at: str, payload: str) -> str:
    """The leaf entry of an event (format version 1; see the module docstring)."""
    return f"{ENTRY_PREFIX}{event_type}\n{at}\n{payload}"


def _split(blob: bytes) -> list[bytes]:
    return [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]


def _lock_head(session: Session) -> tuple[int, list[bytes]]:
    """Take the log's lock and read its head.

    1. `UPDATE audit_head SET size = size … RETURNING size, frontier`: on PostgreSQL it waits
       for and then holds the head row's lock until commit, and returns the row as the last
       writer committed it; on SQLite it takes the database write lock (so no other writer
       can commit between reading the head and writing the leaves).
    """
    row = session.execute(
        _HEAD.update()
        .where(_HEAD.c.id == 1)
        .values(size=_HEAD.c.size)
        .returning(_HEAD.c.size, _HEAD.c.frontier)
    ).first()
    if row is None:
        raise LogIntegrityError("the audit log has no head row; run `consentry init`")
    return head_state(row[0], row[1])


def head_state(size: Any, frontier: Any) -> tuple[int, list[bytes]]:
    """The head as locked (`LOCK_HEAD_SQL` or `_lock_head`), checked: its size and frontier."""
    if size is None or frontier is None:
        raise LogIntegrityError("the audit log has no head row; run `consentry init`")
    size, frontier = int(size), bytes(frontier)
    if len(frontier) != HASH_SIZE * len(frontier_levels(size)):
        raise LogIntegrityError(f"the audit log head is corrupt (size {size})")
    return size, _split(frontier)


LOCK_HEAD_SQL: Final = "UPDATE audit_head SET size = size WHERE id = 1 RETURNING size, frontier"
"""`_lock_head`'s statement as SQL, for a writer that takes the lock inside a statement of
its own (a CTE that also draws its numbers: one round trip); `head_state` checks the row."""


LogHeadState = tuple[int, list[bytes]]
"""A locked head: its size and frontier."""


def lock_log(session: Session) -> LogHeadState:
    """Take the log's lock now, in the caller's transaction (held until it ends), and read
    its head: for a writer that numbers its own rows in log order before it appends (it
    passes the head to `append_events`)."""
    return _lock_head(session)


def _copy_postgresql(
    session: Session,
    events: Sequence[tuple[str, str]],
    now: datetime,
    size: int,
    hashes: Sequence[bytes],
    completed: Sequence[bytes],
) -> list[int]:
    """Write a batch of events and their leaves on PostgreSQL with COPY, in the session's
    transaction (under the head lock taken by the caller).

    1. The events' seqs are drawn from the column's own sequence, one `nextval` per event in
       order, so they increase along the batch exactly as the INSERT … RETURNING path's do.
    2. Both tables are then filled with COPY: row by row INSERTs with RETURNING cost more in
       round trips and parsing than the rows themselves (bench/audit.py, docs/audit.md).
    """
    seqs = [
        int(seq)
        for seq in session.scalars(
            sa.text(
                "SELECT nextval(pg_get_serial_sequence('audit_events', 'seq')) "
                "FROM generate_series(1, :n) ORDER BY 1"
            ),
            {"n": len(events)},
        )
    ]
    cursor = session.connection().connection.cursor()
    try:
        with cursor.copy("COPY audit_events (seq, event_type, at, payload) FROM STDIN") as copy:
            for seq, (event_type, payload) in zip(seqs, events, strict=True):
                copy.write_row((seq, event_type, now, payload))
        with cursor.copy(
            "COPY audit_leaves (leaf_index, event_seq, leaf_hash, subtree_hashes) FROM STDIN"
        ) as copy:
            for i, (seq, digest, subtrees) in enumerate(zip(seqs, hashes, completed, strict=True)):
                copy.write_row((size + i, seq, digest, subtrees))
    finally:
        cursor.close()
    return seqs


PipelinedStatement = tuple[str, tuple[Any, ...]]
"""A PostgreSQL statement (psycopg `%s` placeholders) and its parameters."""

_APPEND_EVENTS_PG: Final = (
    "INSERT INTO audit_events (seq, event_type, at, payload) "
    "SELECT seq, event_type, %s::timestamptz, payload "
    "FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS e(seq, event_type, payload)"
)
_APPEND_LEAVES_PG: Final = (
    "INSERT INTO audit_leaves (leaf_index, event_seq, leaf_hash, subtree_hashes) "
    "SELECT leaf_index, event_seq, leaf_hash, subtree_hashes "
    "FROM unnest(%s::bigint[], %s::bigint[], %s::bytea[], %s::bytea[]) "
    "AS l(leaf_index, event_seq, leaf_hash, subtree_hashes)"
)
_WRITE_HEAD_PG: Final = "UPDATE audit_head SET size = %s, frontier = %s WHERE id = 1"


def append_statements_pg(
    events: Sequence[tuple[str, str]], *, head: LogHeadState, seqs: Sequence[int]
) -> list[PipelinedStatement]:
    """`append_events` on PostgreSQL as three statements the caller sends in one pipeline
    (one round trip), in the transaction that locked `head` (`LOCK_HEAD_SQL`) and drew the
    events' `seqs` from `audit_events`' sequence under that lock, in order.

    The same rows as `append_events`: one instant taken now (under the lock), the same
    entries, leaf hashes, subtree hashes and new head; only how they travel differs.
    """
    if len(seqs) != len(events):
        raise ValueError(f"{len(seqs)} seqs for {len(events)} events")
    if not events:
        return []
    size, frontier = head
    now = datetime.now(UTC)
    at = instant_text(now)
    hashes = [leaf_hash(entry_text(t, at, p).encode()) for t, p in events]
    new_size, new_frontier, completed = extend_frontier(size, frontier, hashes)
    seq_list = list(seqs)
    return [
        (
            _APPEND_EVENTS_PG,
            (now, seq_list, [t for t, _ in events], [p for _, p in events]),
        ),
        (
            _APPEND_LEAVES_PG,
            (list(range(size, size + len(events))), seq_list, hashes, list(completed)),
        ),
        (_WRITE_HEAD_PG, (new_size, b"".join(new_frontier))),
    ]


def append_events(
    session: Session, events: Sequence[tuple[str, str]], *, head: LogHeadState | None = None
) -> list[int]:
    """Append events (type, canonical JSON payload) as leaves, in the caller's transaction.

    1. Lock the head (`_lock_head`; `head` when the caller locked it with `lock_log` in this
       transaction); all events get one instant, taken under the lock, so instants never
       decrease along the log.
    2. Insert the events (their seqs come back in order), hash their entries, extend the
       frontier, insert one `audit_leaves` row per event and write the new head.
    3. Returns the events' seqs. Nothing is written if any step fails (the caller's
       transaction rolls back as a whole).
    """
    if not events:
        return []
    size, frontier = head if head is not None else _lock_head(session)
    now = datetime.now(UTC)
    at = instant_text(now)
    hashes = [leaf_hash(entry_text(t, at, p).encode()) for t, p in events]
    new_size, new_frontier, completed = extend_frontier(size, frontier, hashes)
    if session.get_bind().dialect.name == "postgresql":
        seqs = _copy_postgresql(session, events, now, size, hashes, completed)
    else:
        seqs = list(
            session.scalars(
                sa.insert(_EVENTS).returning(_EVENTS.c.seq, sort_by_parameter_order=True),
                [{"event_type": t, "at": now, "payload": p} for t, p in events],
            )
        )
        session.execute(
            sa.insert(_LEAVES),
            [
                {"leaf_index": size + i, "event_seq": s, "leaf_hash": h, "subtree_hashes": c}
                for i, (s, h, c) in enumerate(zip(seqs, hashes, completed, strict=True))
            ],
        )
    session.execute(
        _HEAD.update().where(_HEAD.c.id == 1).values(size=new_size, frontier=b"".join(new_frontier))
    )
    return seqs


@dataclass(frozen=True, slots=True)
class LogHead:
    size: int
    root_hash: bytes


@dataclass(frozen=True, slots=True)
class LeafRecord:
    """One leaf with the event it commits to."""

    leaf_index: int
    event_id: int
    event_type: str
    at: str
    payload: str
    leaf_hash: bytes

    @property
    def entry(self) -> str:
        return entry_text(self.event_type, self.at, self.payload)


@dataclass(frozen=True, slots=True)
class InclusionProof:
    """PATH(leaf_index, D[tree_size]) for one event, with what it proves."""

    leaf: LeafRecord
    tree_size: int
    root_hash: bytes
    path: list[bytes]


@dataclass(frozen=True, slots=True)
class ConsistencyProof:
    """PROOF(first, D[second]) with both roots."""

    first: int
    second: int
    first_root: bytes
    second_root: bytes
    path: list[bytes]


@dataclass(slots=True)
class VerifyReport:
    """The result of recomputing the whole log."""

    size: int = 0
    root_hash: bytes = EMPTY_ROOT
    problems: list[str] = field(default_factory=list)
    first_bad_leaf: int | None = None
    first_bad_event: int | None = None
    checkpoints_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def flag(self, message: str, leaf: int | None = None, event: int | None = None) -> None:
        self.problems.append(message)
        if leaf is not None and (self.first_bad_leaf is None or leaf < self.first_bad_leaf):
            self.first_bad_leaf = leaf
            self.first_bad_event = event


class _StoredNodes:
    """Complete-subtree hashes read from `audit_leaves`: node (h, k) is stored on the leaf
    row ((k + 1) << h) - 1, at level h of that row (0: the leaf hash itself)."""

    def __init__(self, session: Session, nodes: Sequence[tuple[int, int]]) -> None:
        rows = {((k + 1) << h) - 1 for h, k in nodes}
        found = session.execute(
            sa.select(_LEAVES.c.leaf_index, _LEAVES.c.leaf_hash, _LEAVES.c.subtree_hashes).where(
                _LEAVES.c.leaf_index.in_(sorted(rows))
            )
        ).all()
        self._rows = {int(r[0]): (bytes(r[1]), bytes(r[2])) for r in found}

    def complete(self, level: int, index: int) -> bytes:
        row = self._rows.get(((index + 1) << level) - 1)
        if row is None:
            raise LogIntegrityError(f"the log has no stored subtree ({level}, {index})")
        if level == 0:
            return row[0]
        node = row[1][(level - 1) * HASH_SIZE : level * HASH_SIZE]
        if len(node) != HASH_SIZE:
            raise LogIntegrityError(f"the log's stored subtree ({level}, {index}) is missing")
        return node


def _range_hashes(session: Session, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """MTHs of several ranges with one read of the stored subtrees they need."""
    needed = [node for lo, hi in ranges for node in range_nodes(lo, hi)]
    source = _StoredNodes(session, needed)
    return [range_hash(source, lo, hi) for lo, hi in ranges]


class AuditLog:
    """Reads, proves, checkpoints and verifies the log held by a store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # --- reading --------------------------------------------------------------------------

    def head(self, session: Session | None = None) -> LogHead:
        """The log's size and root, from the head row (not recomputed)."""
        if session is None:
            with self.store.session() as own:
                return self.head(own)
        row = session.execute(sa.select(_HEAD.c.size, _HEAD.c.frontier)).first()
        if row is None:
            raise LogIntegrityError("the audit log has no head row; run `consentry init`")
        return LogHead(int(row[0]), frontier_root(_split(bytes(row[1]))))

    def root_at(self, session: Session, size: int) -> bytes:
        """MTH of the first `size` leaves, from stored subtrees."""
        if size == 0:
            return EMPTY_ROOT
        return _range_hashes(session, [(0, size)])[0]

    def _leaf_query(self, session: Session) -> Any:
        at: Any = sa.literal_column(_AT_TEXT[session.get_bind().dialect.name])
        e = _EVENTS.alias("e")
        return (
            sa.select(
                _LEAVES.c.leaf_index,
                e.c.seq,
                e.c.event_type,
                at.label("at_text"),
                e.c.payload,
                _LEAVES.c.leaf_hash,
            )
            .select_from(_LEAVES.join(e, e.c.seq == _LEAVES.c.event_seq))
            .order_by(_LEAVES.c.leaf_index)
        )

    @staticmethod
    def _record(row: Any) -> LeafRecord:
        return LeafRecord(
            int(row[0]), int(row[1]), str(row[2]), str(row[3]), str(row[4]), bytes(row[5])
        )

    def leaf_for_event(self, session: Session, event_id: int) -> LeafRecord:
        """The leaf of audit event `event_id` (its seq); ConsentryError when there is none."""
        row = session.execute(
            self._leaf_query(session).where(_LEAVES.c.event_seq == event_id)
        ).first()
        if row is None:
            raise ConsentryError(f"audit event {event_id} is not in the log")
        return self._record(row)

    def leaves(
        self, session: Session, *, start: int = 0, stop: int | None = None
    ) -> list[LeafRecord]:
        query = self._leaf_query(session).where(_LEAVES.c.leaf_index >= start)
        if stop is not None:
            query = query.where(_LEAVES.c.leaf_index < stop)
        return [self._record(r) for r in session.execute(query)]

    # --- proving --------------------------------------------------------------------------

    def _size(self, session: Session, size: int | None) -> int:
        current = self.head(session).size
        if size is None:
            return current
        if not 0 <= size <= current:
            raise ConsentryError(f"the log has {current} leaves; no tree of size {size}")
        return size

    def prove(self, event_id: int, size: int | None = None) -> InclusionProof:
        """The inclusion proof of event `event_id` in the tree of `size` leaves (default:
        the current size), read from stored subtrees (O(log n) rows)."""
        with self.store.session() as session:
            leaf = self.leaf_for_event(session, event_id)
            n = self._size(session, size)
            if leaf.leaf_index >= n:
                raise ConsentryError(
                    f"audit event {event_id} is leaf {leaf.leaf_index}, appended after size {n}"
                )
            ranges = inclusion_ranges(leaf.leaf_index, n)
            hashes = _range_hashes(session, [*ranges, (0, n)])
            return InclusionProof(leaf, n, hashes[-1], hashes[:-1])

    def consistency(self, first: int, second: int | None = None) -> ConsistencyProof:
        """PROOF(first, D[second]) (default second: the current size) with both roots.

        0 < first <= second: RFC 9162 defines no proof from the empty tree (every tree
        extends it), and `verify_consistency` accepts none."""
        with self.store.session() as session:
            n = self._size(session, second)
            if not 0 < first <= n:
                raise ConsentryError(f"no consistency proof from size {first} to size {n}")
            ranges = consistency_ranges(first, n)
            hashes = _range_hashes(session, [*ranges, (0, n), (0, first)])
            first_root, second_root = hashes[-1], hashes[-2]
            return ConsistencyProof(first, n, first_root, second_root, hashes[: len(ranges)])

    def load_tree(self, tree: MemoryTree | None = None) -> MemoryTree:
        """Every leaf hash into memory (or the ones `tree` lacks), hashed up level by level."""
        tree = tree or MemoryTree()
        with self.store.session() as session:
            query = (
                sa.select(_LEAVES.c.leaf_hash)
                .where(_LEAVES.c.leaf_index >= tree.size)
                .order_by(_LEAVES.c.leaf_index)
            )
            tree.extend(b"".join(bytes(h) for h in session.scalars(query)))
        return tree

    # --- checkpoints ----------------------------------------------------------------------

    def checkpoint(self, signer: Signer, *, record: bool = True) -> SignedCheckpoint:
        """Sign the current head; with `record`, keep it in `audit_checkpoints` (verify
        later checks every recorded checkpoint against the recomputed log)."""
        with self.store.session() as session:
            head = self.head(session)
            signed = sign_checkpoint(signer, head.size, head.root_hash)
            if record:
                session.add(
                    AuditCheckpointRow(
                        origin=signed.checkpoint.origin,
                        size=head.size,
                        root_hash=head.root_hash,
                        signed_at=datetime.now(UTC),
                        note=signed.note(),
                    )
                )
            return signed

    def checkpoints(self) -> list[tuple[datetime, str]]:
        """Recorded checkpoints (signing instant, note), oldest first."""
        with self.store.session() as session:
            rows = session.execute(
                sa.select(AuditCheckpointRow.signed_at, AuditCheckpointRow.note).order_by(
                    AuditCheckpointRow.id
                )
            ).all()
        return [(r[0], r[1]) for r in rows]

    # --- verifying ------------------------------------------------------------------------

    def _stream(self, session: Session) -> Iterator[Sequence[Any]]:
        at = _AT_TEXT[session.get_bind().dialect.name]
        # The driver's own cursor, in the session's transaction: SQLAlchemy's result rows
        # cost about as much again as the driver's fetch, for a million plain tuples.
        cursor = session.connection().connection.cursor()
        try:
            cursor.execute(
                "SELECT l.leaf_index, l.event_seq, e.event_type, "
                f"{at}, e.payload, l.leaf_hash, l.subtree_hashes "
                "FROM audit_leaves l LEFT JOIN audit_events e ON e.seq = l.event_seq "
                "ORDER BY l.leaf_index"
            )
            while True:
                chunk = cursor.fetchmany(_CHUNK)
                if not chunk:
                    return
                yield chunk
        finally:
            cursor.close()

    def verify(
        self,
        public_key: Ed25519PublicKey,
        *,
        checkpoint: SignedCheckpoint | None = None,
        on_leaves: Callable[[int], None] | None = None,
    ) -> VerifyReport:
        """Recompute the whole log from the events and check everything stored against it.
        `on_leaves` is told how many more leaves were read, chunk by chunk (a progress bar).

        1. Leaves in index order: indices 0..n-1 without gaps, each joined to its event,
           event seqs increasing, and each stored leaf hash equal to the hash recomputed
           from the event's type, instant and payload.
        2. No audit event lacks a leaf.
        3. The tree is rebuilt from the recomputed leaf hashes; every stored complete
           subtree must equal the rebuilt one (compared vectorised).
        4. The head's size and frontier must match the rebuilt tree.
        5. Every recorded checkpoint and the given one (if any) must carry a valid signature
           by `public_key` and the root of the rebuilt tree at its size.
        The report names the first bad leaf (and its event) when one can be named.
        """
        report = VerifyReport()
        hashes: list[bytes] = []
        stored_hashes: list[bytes] = []
        stored_subtrees: list[bytes] = []
        sha_prefix = ENTRY_PREFIX
        expected_index = 0
        last_seq = -1
        with self.store.session() as session:
            for chunk in self._stream(session):
                for index, seq, kind, at, payload, stored, subtrees in chunk:
                    if index != expected_index:
                        report.flag(
                            f"leaf {expected_index} is missing (next stored index is {index})",
                            expected_index,
                        )
                        return report
                    expected_index += 1
                    stored_hashes.append(bytes(stored))
                    if kind is None:
                        report.flag(f"leaf {index}: its event {seq} is missing", index, seq)
                        hashes.append(bytes(stored))
                    else:
                        if seq <= last_seq:
                            report.flag(f"leaf {index}: event {seq} is out of order", index, seq)
                        h = leaf_hash(f"{sha_prefix}{kind}\n{at}\n{payload}".encode())
                        if h != bytes(stored):
                            report.flag(
                                f"leaf {index} (event {seq}): the event does not match its "
                                "leaf hash — the event or the leaf was changed",
                                index,
                                seq,
                            )
                        hashes.append(h)
                    last_seq = max(last_seq, int(seq))
                    stored_subtrees.append(bytes(subtrees))
                if on_leaves is not None:
                    on_leaves(len(chunk))
            unsealed = session.scalar(
                sa.select(sa.func.min(_EVENTS.c.seq)).where(
                    ~sa.exists().where(_LEAVES.c.event_seq == _EVENTS.c.seq)
                )
            )
            if unsealed is not None:
                report.flag(f"audit event {unsealed} has no leaf in the log")
            head_row = session.execute(sa.select(_HEAD.c.size, _HEAD.c.frontier)).first()
            recorded = session.execute(
                sa.select(AuditCheckpointRow.id, AuditCheckpointRow.note).order_by(
                    AuditCheckpointRow.id
                )
            ).all()
        n = len(hashes)
        tree = MemoryTree.from_leaf_hashes(hashes)
        report.size, report.root_hash = n, tree.root()
        # Stored subtrees are checked against the stored leaf hashes (a changed event is
        # already named above); they are the same tree unless a leaf did not match.
        stored_tree = (
            tree if stored_hashes == hashes else MemoryTree.from_leaf_hashes(stored_hashes)
        )
        self._check_subtrees(stored_tree, stored_subtrees, report)
        if head_row is None:
            report.flag("the log has no head row")
        else:
            size, frontier = int(head_row[0]), bytes(head_row[1])
            if size != n:
                report.flag(f"the head says {size} leaves; the log holds {n}", min(size, n))
            elif frontier != b"".join(stored_tree.frontier()):
                report.flag("the head's frontier does not match the recomputed tree")
        notes = [(f"recorded checkpoint {cid}", note) for cid, note in recorded]
        for label, note in notes:
            self._check_checkpoint(
                tree, parse_signed_checkpoint(note, location=label), label, public_key, report
            )
        if checkpoint is not None:
            self._check_checkpoint(tree, checkpoint, "the given checkpoint", public_key, report)
        return report

    @staticmethod
    def _check_subtrees(tree: MemoryTree, stored: list[bytes], report: VerifyReport) -> None:
        """Compare every stored complete subtree with the rebuilt tree, vectorised.

        Node (h, k), h >= 1, is stored on leaf row r = ((k + 1) << h) - 1 at position h - 1;
        ordering all nodes by (r, h) gives the concatenation of the stored blobs.
        """
        n = tree.size
        if n == 0:
            return
        rows = np.arange(n, dtype=np.int64) + 1
        expected_len = np.zeros(n, dtype=np.int64)
        h = 1
        while (n >> h) > 0:
            expected_len += (rows % (1 << h) == 0).astype(np.int64)
            h += 1
        lengths = np.fromiter((len(b) for b in stored), dtype=np.int64, count=n)
        wrong = np.flatnonzero(lengths != expected_len * HASH_SIZE)
        if wrong.size:
            leaf = int(wrong[0])
            report.flag(f"leaf {leaf}: its stored subtree hashes are truncated or padded", leaf)
            return
        parts_row, parts_level, parts = [], [], []
        for level in range(1, len(tree.levels)):
            count = n >> level
            if count == 0:
                break
            k = np.arange(count, dtype=np.int64)
            parts_row.append(((k + 1) << level) - 1)
            parts_level.append(np.full(count, level, dtype=np.int64))
            parts.append(
                np.frombuffer(bytes(tree.levels[level][: count * HASH_SIZE]), np.uint8).reshape(
                    -1, HASH_SIZE
                )
            )
        if not parts:
            return
        row_of = np.concatenate(parts_row)
        level_of = np.concatenate(parts_level)
        order = np.lexsort((level_of, row_of))
        expected = np.concatenate(parts)[order]
        actual = np.frombuffer(b"".join(stored), np.uint8).reshape(-1, HASH_SIZE)
        bad = np.flatnonzero((expected != actual).any(axis=1))
        if bad.size:
            first = int(order[bad[0]])
            level, row = int(level_of[first]), int(row_of[first])
            lo = row + 1 - (1 << level)
            report.flag(
                f"leaf {lo}: the stored subtree over leaves {lo}..{row} (level {level}) does "
                "not match the recomputed one",
                lo,
            )

    @staticmethod
    def _check_checkpoint(
        tree: MemoryTree,
        signed: SignedCheckpoint,
        label: str,
        public_key: Ed25519PublicKey,
        report: VerifyReport,
    ) -> None:
        report.checkpoints_checked += 1
        cp = signed.checkpoint
        if not signed.verify(public_key):
            report.flag(f"{label}: the signature does not check under this home's key")
            return
        if cp.size > tree.size:
            report.flag(f"{label}: size {cp.size} is larger than the log ({tree.size} leaves)")
            return
        if tree.root(cp.size) != cp.root_hash:
            report.flag(
                f"{label}: the log's first {cp.size} leaves no longer have the signed root — "
                f"a leaf before {cp.size} was changed"
            )
