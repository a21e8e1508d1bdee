"""Retention: legal holds and purge records (issue 6).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Placeholder while the capability is built; replaced by its tables."""


def downgrade() -> None:
    """Placeholder while the capability is built."""
