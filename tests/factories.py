"""Small canonical tables for tests, built with the lake's own schema."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

import pyarrow as pa

from consentry.schema import arrow_schema

__all__ = ["posts_table", "users_table"]


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


def posts_table(posts: Sequence[tuple[str, str]]) -> pa.Table:
    """A `posts` table from (post_id, author_id) pairs; every post public, written
    2025-01-01, not deleted."""
    utc = pa.timestamp("us", tz="UTC")
    n = len(posts)
    return pa.table(
        {
            "post_id": [p for p, _ in posts],
            "author_id": [a for _, a in posts],
            "created_at": pa.array([datetime(2025, 1, 1, tzinfo=UTC)] * n, utc),
            "text": [f"post {p}" for p, _ in posts],
            "visibility": ["public"] * n,
            "lang": pa.array([None] * n, pa.string()),
            "deleted_at": pa.array([None] * n, utc),
        },
        schema=arrow_schema("posts"),
    )
