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


def owner(credential: str, offset_us: int) -> str:
    """The owner of `credential` at BASE + `offset_us` under ENTITIES, read off the table by
    hand (offsets are >= 0, so delta's range is always valid): an oracle for the
    attribution that shares no code with either implementation."""
    if credential == "ak_a":
        return "alpha" if offset_us < DAY_US else "beta"  # valid_to is exclusive
    return {
        "ak_b": "alpha",
        "10.0.0.5": "delta",  # the /24 beats gamma's /16
        "10.0.1.9": "gamma",
        "10.0.0.200": "beta",  # the exact credential beats both ranges
        "2001:db8::7": "gamma",
    }.get(credential, credential)


def entity_accesses(
    items: list[tuple[int, int, str, int]],
) -> dict[str, tuple[list[int], list[int]]]:
    """Per entity, its accesses' (offsets, posts) sorted by offset, each request id once
    (the first by ts, credential, posts)."""
    first: dict[int, tuple[int, str, int]] = {}
    for n, off, cred, posts in sorted(items, key=lambda r: (f"r{r[0]:03d}", r[1], r[2], r[3])):
        first.setdefault(n, (off, cred, posts))
    per: dict[str, list[tuple[int, int]]] = {}
    for off, cred, posts in first.values():
        per.setdefault(owner(cred, off), []).append((off, posts))
    return {
        e: ([t for t, _ in sorted(rows)], [p for _, p in sorted(rows)]) for e, rows in per.items()
    }


# Adversarial cases (request id, offset, credential, posts), threshold 10, window one day.
CHAIN = [
    # The defect of issue 16 scaled to a day (time x day/10) with every window at exactly
    # threshold + 1: `max_total` bills [-0.8, 0.2), [0.2, 1.2), [1.2, 2.2), [2.2, 3.2) days
    # (44 posts); windows starting at accesses bill at most 39.
    (1, 0, "ak_b", 6),
    (2, DAY_US // 10, "ak_b", 5),
    (3, DAY_US, "ak_b", 6),
    (4, DAY_US, "ak_b", 5),
    (5, 2 * DAY_US, "ak_b", 6),
    (6, 2 * DAY_US, "ak_b", 5),
    (7, 2 * DAY_US + DAY_US // 5, "ak_b", 6),
    (8, 3 * DAY_US, "ak_b", 5),
]
TIES = [
    # alpha: [0, day) holds exactly the threshold (not over); the access at day - 1 µs
    # starts a window of threshold + 1 that ends just before 2 days - 1 µs.
    (1, 0, "ak_b", 5),
    (2, DAY_US - 1, "ak_b", 5),
    (3, DAY_US, "ak_b", 6),
    (4, 2 * DAY_US - 1, "ak_b", 4),
    # beta: threshold + 1 in [0, day), the access at exactly a day is in the next window.
    (5, 0, "10.0.0.200", 6),
    (6, DAY_US - 1, "10.0.0.200", 5),
    (7, DAY_US, "10.0.0.200", 6),
    (8, 2 * DAY_US, "10.0.0.200", 5),
    # gamma: exactly the threshold at every start.
    (9, 1, "10.0.1.9", 5),
    (10, DAY_US, "10.0.1.9", 5),
    (11, 2 * DAY_US, "10.0.1.9", 5),
]
