"""The billing rules against brute force: windows, modes, amounts."""

from __future__ import annotations

import itertools
from decimal import Decimal

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from consentry.scraping.rules import (
    Terms,
    earliest_windows,
    forward_counts,
    max_total_windows,
    window_amount,
)
from tests.scraping import brute

WINDOW = 10


def terms(threshold: int, rounding: str = "pro_rata", rate: str = "15000") -> Terms:
    return Terms(threshold, WINDOW, Decimal(rate), "USD", rounding)  # type: ignore[arg-type]


events = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 9)), min_size=0, max_size=14)


def arrays(rows: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    rows = sorted(rows)
    return (
        np.array([t for t, _ in rows], dtype=np.int64),
        np.array([p for _, p in rows], dtype=np.int64),
    )


@settings(max_examples=150, deadline=None)
@given(events)
def test_forward_counts_match_brute_force(rows: list[tuple[int, int]]) -> None:
    ts, posts = arrays(rows)
    counts, lo, hi = forward_counts(ts, posts, WINDOW)
    for i, t in enumerate(ts.tolist()):
        assert counts[i] == brute.window_posts(ts.tolist(), posts.tolist(), t, WINDOW)
        # Ties share one window starting at the first access of that instant.
        assert ts[lo[i]] == t
        assert lo[i] == 0 or ts[lo[i] - 1] < t
        assert hi[i] == len(ts) or ts[hi[i]] >= t + WINDOW


@settings(max_examples=150, deadline=None)
@given(events, st.integers(0, 20))
def test_earliest_matches_brute_force(rows: list[tuple[int, int]], threshold: int) -> None:
    ts, posts = arrays(rows)
    got = [(w.start_us, w.posts) for w in earliest_windows(ts, posts, terms(threshold))]
    assert got == brute.earliest(ts.tolist(), posts.tolist(), WINDOW, threshold)


@settings(max_examples=120, deadline=None)
@given(events, st.integers(0, 20))
# The defect of issue 16: a chain of four windows placed end to start, [-8, 2), [2, 12),
# [12, 22), [22, 32), bills 8; windows starting at or just after accesses bill 7.
@example([(0, 1), (1, 1), (10, 2), (20, 2), (22, 1), (30, 1)], 1)
# Windows ending just after their last access (no chain).
@example([(5, 11), (14, 6), (16, 6)], 10)
# A chain of three ending at an access (8): [-12, -2), [-2, 8), [8, 18); every window holds
# exactly threshold + 1 posts, the windows starting at accesses exactly the threshold.
@example([(-11, 1), (-3, 1), (-2, 1), (7, 1), (8, 1), (17, 1)], 1)
# Found by a search against the previous candidates (t, t + 1, t - window + 1), which
# missed them: [-1, 9), [9, 19), [19, 29), [29, 39) chained back from the access at 29,
# each exactly threshold + 1; and a chain of two ([22, 32), [32, 42)) after two windows
# starting at accesses.
@example([(0, 1), (8, 3), (9, 3), (10, 1), (20, 3), (24, 1), (29, 3), (33, 1)], 3)
@example([(1, 2), (7, 1), (11, 3), (24, 3), (32, 2), (33, 0), (36, 1)], 2)
# Ties at the threshold: every window holds the threshold or one more, and accesses sit
# exactly at window edges (t, t + 10, t + 9).
@example([(0, 3), (9, 1), (10, 3), (19, 1), (20, 3), (29, 1), (30, 4)], 4)
@example([(0, 2), (10, 2), (20, 2), (30, 2), (9, 1), (19, 1), (29, 1)], 2)
# Equal totals from different placements (ties between candidates).
@example([(0, 5), (10, 5), (20, 5)], 4)
def test_max_total_is_optimal_over_any_start(rows: list[tuple[int, int]], threshold: int) -> None:
    ts, posts = arrays(rows)
    t, p = ts.tolist(), posts.tolist()
    spans = max_total_windows(ts, posts, terms(threshold))
    total = sum(w.posts for w in spans)
    # The normal form (brute force over every placement of its starts) is the optimum
    # over any start (the definition), and the rule attains it.
    assert total == brute.max_total(t, p, WINDOW, threshold)
    assert total == brute.max_total_any_start(t, p, WINDOW, threshold)
    for a, b in itertools.pairwise(spans):
        assert b.start_us >= a.start_us + WINDOW  # disjoint: no post billed twice
    for w in spans:
        assert w.posts == brute.window_posts(t, p, w.start_us, WINDOW)
        assert w.posts > threshold
        # lo/hi are exactly the window's accesses (evidence is cut with them).
        inside = [i for i, x in enumerate(t) if w.start_us <= x < w.start_us + WINDOW]
        assert (w.lo, w.hi) == (inside[0], inside[-1] + 1)
    # Never less than earliest.
    assert total >= sum(w.posts for w in earliest_windows(ts, posts, terms(threshold)))
    # Readable (step 5): a window starts at its first access unless starting there would
    # take in a later access or reach the next window.
    for i, w in enumerate(spans):
        first = t[w.lo]
        assert w.start_us <= first
        gains = any(w.start_us + WINDOW <= x < first + WINDOW for x in t)
        reaches_next = i + 1 < len(spans) and first + WINDOW > spans[i + 1].start_us
        if not gains and not reaches_next:
            assert w.start_us == first, (w, spans)


def test_max_total_bills_a_chain_of_windows_placed_end_to_start() -> None:
    ts, posts = arrays([(0, 1), (1, 1), (10, 2), (20, 2), (22, 1), (30, 1)])
    spans = max_total_windows(ts, posts, terms(1))
    assert [(w.start_us, w.posts) for w in spans] == [(-8, 2), (2, 2), (12, 2), (22, 2)]


def test_max_total_ties_go_to_the_earliest_placement() -> None:
    # Every placement of two windows out of three bills 10; all three bill 15, each
    # starting at its access.
    ts, posts = arrays([(0, 5), (10, 5), (20, 5)])
    assert [w.start_us for w in max_total_windows(ts, posts, terms(4))] == [0, 10, 20]
    # [0, 10) + [10, 20) and [-1, 9) + [9, 19) both bill 12. Starting at 9 bills no more
    # than starting at 10, so no chain is built back from 9 (-1 is no candidate); of the
    # candidates, the earliest placement wins.
    # Equal totals, 41 posts: [-7, 3) + [3, 13) + [14, 24) or [1, 11) + [12, 22); the
    # placement whose first window starts earliest wins.
    ts = np.array([1, 2, 2, 3, 5, 7, 9, 9, 11, 12, 12, 14, 14, 15, 18], dtype=np.int64)
    posts = np.array([1, 0, 2, 3, 4, 3, 1, 5, 0, 3, 5, 2, 2, 5, 5], dtype=np.int64)
    spans = max_total_windows(ts, posts, terms(1))
    assert [(w.start_us, w.posts) for w in spans] == [(-7, 3), (3, 24), (14, 14)]
    ts, posts = arrays([(0, 6), (9, 0), (10, 6), (19, 0)])
    assert [(w.start_us, w.posts) for w in max_total_windows(ts, posts, terms(5))] == [
        (0, 6),
        (10, 6),
    ]


def test_access_instants_alone_are_not_enough_for_max_total() -> None:
    # 5:11 then 14:6 and 16:6 with threshold 10: [4,14) + [14,24) bill 23, while windows
    # starting at accesses can bill at most 17.
    ts = np.array([5, 14, 16], dtype=np.int64)
    posts = np.array([11, 6, 6], dtype=np.int64)
    spans = max_total_windows(ts, posts, terms(10))
    assert sum(w.posts for w in spans) == 23
    # The first window cannot start at its access (5): it would swallow 14; it ends where
    # the second starts.
    assert [w.start_us for w in spans] == [4, 14]


def test_half_open_edges_and_exact_threshold() -> None:
    ts = np.array([0, 9, 10], dtype=np.int64)
    posts = np.array([5, 5, 100], dtype=np.int64)
    # [0, 10) holds exactly 10 posts: not over a threshold of 10 (strictly more).
    assert [w.posts for w in earliest_windows(ts[:2], posts[:2], terms(10))] == []
    assert [w.posts for w in earliest_windows(ts[:2], posts[:2], terms(9))] == [10]
    # The access at exactly start + window belongs to the next window.
    counts, _, _ = forward_counts(ts, posts, WINDOW)
    assert counts.tolist() == [10, 105, 100]


def test_earliest_resumes_at_first_access_at_or_after_the_end() -> None:
    ts = np.array([0, 5, 10, 12, 25], dtype=np.int64)
    posts = np.array([6, 6, 6, 6, 20], dtype=np.int64)
    got = [(w.start_us, w.posts) for w in earliest_windows(ts, posts, terms(10))]
    # [0,10) bills 12; resume at 10: [10,20) bills 12; resume at 25: [25,35) bills 20.
    assert got == [(0, 12), (10, 12), (25, 20)]


def test_amounts_by_rounding() -> None:
    assert window_amount(1_500_000, terms(1, "pro_rata")) == Decimal("22500.00")
    assert window_amount(1_500_000, terms(1, "per_full_million")) == Decimal("15000.00")
    assert window_amount(1_500_000, terms(1, "per_started_million")) == Decimal("30000.00")
    assert window_amount(1_000_001, terms(1, "per_started_million")) == Decimal("30000.00")
    # 15,000 x 1/1e6 = 0.015: half-up to cents once.
    assert window_amount(1, terms(1, "pro_rata")) == Decimal("0.02")
    assert window_amount(3, terms(1, "pro_rata", "1")) == Decimal("0.00")
    assert window_amount(5_000, terms(1, "pro_rata", "1")) == Decimal("0.01")


def test_counts_stay_exact_past_two_to_the_53() -> None:
    """Posts are summed in int64: counts near 2^62 (a boundary input; the import accepts any
    int64) come out exact, as floating-point prefix sums would not (they lose units past 2^53)."""
    big = 2**62
    ts = np.array([0, 1, 5, 12], dtype=np.int64)
    posts = np.array([big, 1, 3, 7], dtype=np.int64)
    counts, _, _ = forward_counts(ts, posts, WINDOW)
    assert counts.dtype == np.int64
    assert counts.tolist() == [big + 4, 4, 10, 7]
    spans = max_total_windows(ts, posts, terms(0))
    assert sum(w.posts for w in spans) == big + 11  # every access billed, to the unit
