"""Scraping: recorded assessments.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the `scraping_assessments` table."""
    op.create_table(
        "scraping_assessments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("assessed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("rounding", sa.String(length=32), nullable=False),
        sa.Column("engine", sa.String(length=16), nullable=False),
        sa.Column("accesses", sa.BigInteger(), nullable=False),
        sa.Column("entities", sa.BigInteger(), nullable=False),
        sa.Column("billed_entities", sa.Integer(), nullable=False),
        sa.Column("total_amount", sa.String(length=32), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("result_sha256", sa.String(length=64), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "accesses >= 0 AND entities >= 0 AND billed_entities >= 0",
            name=op.f("ck_scraping_assessments_counts_non_negative"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scraping_assessments")),
    )
    op.create_index(
        op.f("ix_scraping_assessments_assessed_at"),
        "scraping_assessments",
        ["assessed_at"],
        unique=False,
    )


def downgrade() -> None:
    """Drop the `scraping_assessments` table."""
    op.drop_index(op.f("ix_scraping_assessments_assessed_at"), table_name="scraping_assessments")
    op.drop_table("scraping_assessments")
