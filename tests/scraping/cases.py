"""Small random access logs for cross-checks: edges, ties, duplicates, IP ranges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
from hypothesis import strategies as st

from consentry.schema import arrow_schema
from consentry.scraping.rules import Terms

BASE = datetime(2025, 3, 5, tzinfo=UTC)
DAY_US = 86_400_000_000
TERMS = Terms(10, DAY_US, Decimal("15000"), "USD", "pro_rata")

# Offsets around window edges: 0, 1 µs, a day minus/plus 1 µs, two days ...
EDGES = [0, 1, 2, DAY_US - 1, DAY_US, DAY_US + 1, 2 * DAY_US - 1, 2 * DAY_US, 3 * DAY_US]
CREDENTIALS = ["ak_a", "ak_b", "10.0.0.5", "10.0.1.9", "10.0.0.200", "2001:db8::7", "ak_lone"]

ENTITIES = pa.Table.from_pylist(
    [
        # ak_a belongs to alpha until day 1, then to beta (validity edge at BASE + 1 day).
        {
            "credential": "ak_a",
            "entity": "alpha",
            "valid_from": None,
            "valid_to": BASE + timedelta(days=1),
        },
        {
            "credential": "ak_a",
            "entity": "beta",
            "valid_from": BASE + timedelta(days=1),
            "valid_to": None,
        },
        {"credential": "ak_b", "entity": "alpha", "valid_from": None, "valid_to": None},
        # 10.0.0.0/16 is gamma's; the longer 10.0.0.0/24 is delta's; one address exactly beta's.
        {"credential": "10.0.0.0/16", "entity": "gamma", "valid_from": None, "valid_to": None},
        {"credential": "10.0.0.0/24", "entity": "delta", "valid_from": BASE, "valid_to": None},
        {"credential": "10.0.0.200", "entity": "beta", "valid_from": None, "valid_to": None},
        {"credential": "2001:db8::/32", "entity": "gamma", "valid_from": None, "valid_to": None},
    ],
    schema=arrow_schema("entities"),
)

offsets = st.one_of(st.sampled_from(EDGES), st.integers(0, 3 * DAY_US))
rows = st.lists(
    st.tuples(
        st.integers(0, 25),  # request id number (collisions are duplicates)
        offsets,
        st.sampled_from(CREDENTIALS),
        st.integers(0, 6),
    ),
    min_size=1,
    max_size=30,
)


def events_table(items: list[tuple[int, int, str, int]]) -> pa.Table:
    """Canonical access events, unsorted as drawn."""
    return pa.Table.from_pylist(
        [
            {
                "request_id": f"r{n:03d}",
                "ts": BASE + timedelta(microseconds=off),
                "credential": cred,
                "posts": posts,
                "endpoint": None,
            }
            for n, off, cred, posts in items
        ],
        schema=arrow_schema("access_events"),
    )
