"""Revocations: the revocation log and licensee receipts.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the `revocations` table (the revocation log; receipts set `confirmed_at`)."""
    op.create_table(
        "revocations",
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("licensee_id", sa.String(length=32), nullable=False),
        sa.Column("record_id", sa.String(length=64), nullable=False),
        sa.Column("delivery_id", sa.String(length=64), nullable=False),
        sa.Column("delivery_ids", sa.JSON(), nullable=False),
        sa.Column("author_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("receipt_id", sa.String(length=40), nullable=True),
        sa.CheckConstraint("due_at >= revoked_at", name=op.f("ck_revocations_due_after_revoked")),
        sa.ForeignKeyConstraint(
            ["licensee_id"],
            ["licensees.id"],
            name=op.f("fk_revocations_licensee_id_licensees"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_revocations")),
        sa.UniqueConstraint(
            "licensee_id",
            "record_id",
            "delivery_id",
            name=op.f("uq_revocations_licensee_id"),
        ),
    )
    op.create_index(
        "ix_revocations_licensee_seq", "revocations", ["licensee_id", "seq"], unique=False
    )
    op.create_index(op.f("ix_revocations_author_id"), "revocations", ["author_id"], unique=False)


def downgrade() -> None:
    """Drop the `revocations` table."""
    op.drop_index(op.f("ix_revocations_author_id"), table_name="revocations")
    op.drop_index("ix_revocations_licensee_seq", table_name="revocations")
    op.drop_table("revocations")
