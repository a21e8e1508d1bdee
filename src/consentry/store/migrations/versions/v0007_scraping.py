"""Scraping: assessments and meter alerts (issue 7).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Placeholder while the capability is built; replaced by its tables."""


def downgrade() -> None:
    """Placeholder while the capability is built."""
