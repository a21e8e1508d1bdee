"""Revocations: the revocation log and licensee receipts (issue 5).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Placeholder while the capability is built; replaced by its tables."""


def downgrade() -> None:
    """Placeholder while the capability is built."""
