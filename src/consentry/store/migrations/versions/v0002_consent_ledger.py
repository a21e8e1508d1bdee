"""Consent ledger: subjects, consent_events, consent_state, audit_events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the ledger tables."""
    op.create_table(
        "subjects",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("region", sa.String(length=2), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("protected", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deactivated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_subjects")),
    )
    op.create_table(
        "consent_events",
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("choice", sa.String(length=5), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("policy_version", sa.String(length=64), nullable=True),
        sa.Column("evidence_origin", sa.String(length=255), nullable=True),
        sa.Column("evidence_client", sa.String(length=32), nullable=True),
        sa.Column("evidence_shown_version", sa.String(length=64), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "choice IN ('allow', 'deny')", name=op.f("ck_consent_events_choice_known")
        ),
        sa.CheckConstraint(
            "source IN ('settings', 'gpc', 'api', 'import', 'support')",
            name=op.f("ck_consent_events_source_known"),
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_consent_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_consent_events_event_id")),
    )
    op.create_index(
        "ix_consent_events_user_purpose_at", "consent_events", ["user_id", "purpose", "at"]
    )
    op.create_table(
        "consent_state",
        sa.Column("user_id", sa.String(length=128), nullable=False),
        sa.Column("purpose", sa.String(length=64), nullable=False),
        sa.Column("choice", sa.String(length=5), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "purpose", name=op.f("pk_consent_state")),
    )
    op.create_table(
        "audit_events",
        sa.Column("seq", _SEQ, autoincrement=True, nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_events")),
    )
    op.create_index(op.f("ix_audit_events_event_type"), "audit_events", ["event_type"])


def downgrade() -> None:
    """Drop the ledger tables."""
    op.drop_index(op.f("ix_audit_events_event_type"), table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_table("consent_state")
    op.drop_index("ix_consent_events_user_purpose_at", table_name="consent_events")
    op.drop_table("consent_events")
    op.drop_table("subjects")
