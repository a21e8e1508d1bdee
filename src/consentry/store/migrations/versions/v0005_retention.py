"""Retention: legal holds and purge records.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create `legal_holds` and `retention_purges`."""
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("matter", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "scope IN ('user', 'entity', 'category')", name=op.f("ck_legal_holds_scope_known")
        ),
        sa.CheckConstraint(
            "until IS NULL OR until > created_at", name=op.f("ck_legal_holds_until_after_created")
        ),
        sa.CheckConstraint(
            "released_at IS NULL OR released_at >= created_at",
            name=op.f("ck_legal_holds_released_after_created"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_holds")),
    )
    op.create_table(
        "retention_purges",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("plan_sha256", sa.String(length=64), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("planned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("planned", sa.JSON(), nullable=False),
        sa.Column("results", sa.JSON(), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=True),
        sa.CheckConstraint(
            "state IN ('planned', 'applied', 'verified')",
            name=op.f("ck_retention_purges_state_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_purges")),
    )
    op.create_index(
        op.f("ix_retention_purges_planned_at"), "retention_purges", ["planned_at"], unique=False
    )


def downgrade() -> None:
    """Drop the retention tables."""
    op.drop_index(op.f("ix_retention_purges_planned_at"), table_name="retention_purges")
    op.drop_table("retention_purges")
    op.drop_table("legal_holds")
