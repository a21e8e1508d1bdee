"""Jobs with intents and locks, deliveries as store rows, consent events anchored in the log.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create `jobs`, `job_locks` and `deliveries`; add `consent_events.anchor_seq`.

    Existing consent events keep a null anchor and existing delivery directories have no
    row yet: `consentry init` anchors the one and adopts the other after migrating.
    """
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("step", sa.String(length=64), nullable=False),
        sa.Column("intent", sa.JSON(), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('running', 'committed', 'done', 'rolled_back')",
            name=op.f("ck_jobs_state_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index(op.f("ix_jobs_started_at"), "jobs", ["started_at"])
    op.create_table(
        "job_locks",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_job_locks_job_id_jobs")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_locks")),
    )
    op.create_index(op.f("ix_job_locks_job_id"), "job_locks", ["job_id"])
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("licensee_id", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=True),
        sa.Column("considered", sa.BigInteger(), nullable=False),
        sa.Column("delivered", sa.BigInteger(), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("audit_seq", sa.BigInteger(), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("purge_id", sa.String(length=32), nullable=True),
        sa.CheckConstraint(
            "delivered >= 0 AND considered >= delivered",
            name=op.f("ck_deliveries_counts_ordered"),
        ),
        sa.ForeignKeyConstraint(
            ["licensee_id"], ["licensees.id"], name=op.f("fk_deliveries_licensee_id_licensees")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
    )
    op.create_index("ix_deliveries_licensee_created", "deliveries", ["licensee_id", "created_at"])
    with op.batch_alter_table("consent_events") as batch:
        batch.add_column(sa.Column("anchor_seq", sa.BigInteger(), nullable=True))
        batch.create_index(batch.f("ix_consent_events_anchor_seq"), ["anchor_seq"])


def downgrade() -> None:
    """Drop what `upgrade` created."""
    with op.batch_alter_table("consent_events") as batch:
        batch.drop_index(batch.f("ix_consent_events_anchor_seq"))
        batch.drop_column("anchor_seq")
    op.drop_index("ix_deliveries_licensee_created", table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_index(op.f("ix_job_locks_job_id"), table_name="job_locks")
    op.drop_table("job_locks")
    op.drop_index(op.f("ix_jobs_started_at"), table_name="jobs")
    op.drop_index("ix_jobs_state", table_name="jobs")
    op.drop_table("jobs")
