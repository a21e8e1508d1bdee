"""Audit log: Merkle leaves and signed checkpoints.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 00:00:00+00:00
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The leaf entry format of consentry.audit.log (version 1), repeated here so that this
# migration keeps producing the same leaves whatever later code does.
_ENTRY_PREFIX = "consentry-audit-v1\n"
_AT_TEXT = {
    "sqlite": "replace(at, ' ', 'T') || 'Z'",
    "postgresql": "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
}


def upgrade() -> None:
    """Create the log's tables, then make every existing audit event a leaf (in seq order)."""
    op.create_table(
        "audit_leaves",
        sa.Column("leaf_index", _INDEX, autoincrement=False, nullable=False),
        sa.Column("event_seq", sa.BigInteger(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        sa.Column("subtree_hashes", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_seq"],
            ["audit_events.seq"],
            name=op.f("fk_audit_leaves_event_seq_audit_events"),
        ),
        sa.PrimaryKeyConstraint("leaf_index", name=op.f("pk_audit_leaves")),
        sa.UniqueConstraint("event_seq", name=op.f("uq_audit_leaves_event_seq")),
    )
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_audit_head_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("origin", sa.String(length=128), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root_hash", sa.LargeBinary(), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoints")),
    )
    op.create_index(op.f("ix_audit_checkpoints_signed_at"), "audit_checkpoints", ["signed_at"])
    bind = op.get_bind()
    rows = bind.exec_driver_sql(
        f"SELECT seq, event_type, {_AT_TEXT[bind.dialect.name]}, payload "
        "FROM audit_events ORDER BY seq"
    ).all()
    hashes = [
        _leaf_hash(f"{_ENTRY_PREFIX}{kind}\n{at}\n{payload}".encode())
        for _, kind, at, payload in rows
    ]
    size, frontier, completed = _frontier(hashes)
    if rows:
        op.bulk_insert(
            sa.table(
                "audit_leaves",
                sa.column("leaf_index", _INDEX),
                sa.column("event_seq", sa.BigInteger()),
                sa.column("leaf_hash", sa.LargeBinary()),
                sa.column("subtree_hashes", sa.LargeBinary()),
            ),
            [
                {"leaf_index": i, "event_seq": row[0], "leaf_hash": h, "subtree_hashes": done}
                for i, (row, h, done) in enumerate(zip(rows, hashes, completed, strict=True))
            ],
        )
    op.bulk_insert(head, [{"id": 1, "size": size, "frontier": b"".join(frontier)}])


# The tree as this revision defined it (RFC 9162 section 2.1), written out here rather than
# imported: a migration must compute what it computed when it was written, whatever the live
# `consentry.audit.merkle` becomes.


def _leaf_hash(entry: bytes) -> bytes:
    """MTH({d(0)}) = SHA-256(0x00 || d(0))."""
    return hashlib.sha256(b"\x00" + entry).digest()


def _frontier(leaf_hashes: Sequence[bytes]) -> tuple[int, list[bytes], list[bytes]]:
    """The tree of `leaf_hashes` by its frontier.

    1. Appending leaf hash x at size n merges x with the frontier's last hash,
       SHA-256(0x01 || left || right), once per trailing one bit of n; each merge completes
       a subtree one level up.
    2. Returns the size, the frontier (one hash per set bit of the size, largest subtree
       first) and per leaf the hashes of the subtrees it completed, from level 1 up.
    """
    nodes: list[bytes] = []
    completed: list[bytes] = []
    for size, leaf in enumerate(leaf_hashes):
        h, n, done = leaf, size, b""
        while n & 1:
            h = hashlib.sha256(b"\x01" + nodes.pop() + h).digest()
            done += h
            n >>= 1
        nodes.append(h)
        completed.append(done)
    return len(leaf_hashes), nodes, completed


def downgrade() -> None:
    """Drop the log's tables (the audit events themselves stay)."""
    op.drop_index(op.f("ix_audit_checkpoints_signed_at"), table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_head")
    op.drop_table("audit_leaves")
