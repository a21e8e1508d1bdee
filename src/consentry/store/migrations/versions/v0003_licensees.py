"""Licensees: who may receive deliveries, for which purpose and scope.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the `licensees` table."""
    op.create_table(
        "licensees",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("exclude_regions", sa.JSON(), nullable=False),
        sa.Column("languages", sa.JSON(), nullable=False),
        sa.Column("minimise", sa.JSON(), nullable=False),
        sa.Column("period_from", sa.DateTime(timezone=True), nullable=True),
        sa.Column("period_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sealed_secret", sa.LargeBinary(), nullable=False),
        sa.Column("master_key_id", sa.String(length=16), nullable=False),
        sa.Column("api_key_hash", sa.String(length=64), nullable=False),
        sa.Column("api_key_prefix", sa.String(length=40), nullable=False),
        sa.CheckConstraint(
            "period_from IS NULL OR period_to IS NULL OR period_from < period_to",
            name=op.f("ck_licensees_period_ordered"),
        ),
        sa.CheckConstraint(
            "disabled_at IS NULL OR disabled_at >= created_at",
            name=op.f("ck_licensees_disabled_after_created"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_licensees")),
        sa.UniqueConstraint("name", name=op.f("uq_licensees_name")),
    )


def downgrade() -> None:
    """Drop the `licensees` table."""
    op.drop_table("licensees")
