"""Foundation: import_runs and store_meta.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import version

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the tables, then record when and by which consentry version."""
    op.create_table(
        "import_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),
        sa.Column("rows_read", sa.BigInteger(), nullable=False),
        sa.Column("rows_new", sa.BigInteger(), nullable=False),
        sa.Column("rows_total", sa.BigInteger(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "rows_read >= 0 AND rows_new >= 0 AND rows_total >= 0",
            name=op.f("ck_import_runs_rows_non_negative"),
        ),
        sa.CheckConstraint(
            "finished_at >= started_at", name=op.f("ck_import_runs_finished_after_started")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_runs")),
    )
    op.create_index(op.f("ix_import_runs_started_at"), "import_runs", ["started_at"])

    store_meta = op.create_table(
        "store_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_store_meta")),
    )
    # Written once, when the schema is created; later migrations leave these rows alone.
    created = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    op.bulk_insert(
        store_meta,
        [
            {"key": "schema_created_at", "value": created},
            {"key": "consentry_version", "value": version("consentry")},
        ],
    )


def downgrade() -> None:
    """Drop the tables (and with them the recorded import history)."""
    op.drop_index(op.f("ix_import_runs_started_at"), table_name="import_runs")
    op.drop_table("import_runs")
    op.drop_table("store_meta")
