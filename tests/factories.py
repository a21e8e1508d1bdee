"""Small canonical tables for tests, built with the lake's own schema."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

import pyarrow as pa

from consentry.schema import arrow_schema

__all__ = ["users_table"]


def users_table(population: Sequence[tuple[str, str | None, date | None]]) -> pa.Table:
    """A `users` table of adults-or-not from (user_id, region, birth_date) triples; every
    account created 2020-01-01, public, active."""
    utc = pa.timestamp("us", tz="UTC")
    n = len(population)
    return pa.table(
        {
            "user_id": [u for u, _, _ in population],
            "created_at": pa.array([datetime(2020, 1, 1, tzinfo=UTC)] * n, utc),
            "region": [r for _, r, _ in population],
            "birth_date": pa.array([b for _, _, b in population], pa.date32()),
            "protected": [False] * n,
            "deactivated_at": pa.array([None] * n, utc),
            "deleted_at": pa.array([None] * n, utc),
        },
        schema=arrow_schema("users"),
    )
