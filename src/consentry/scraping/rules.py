"""The counting and billing rules of the liquidated-damages clause, as pure functions.

Everything here works on one entity's accesses as NumPy arrays sorted by instant
(microseconds since the Unix epoch, UTC). No I/O, no engine: the engine path and the
independent reference both end here for billing, and the tests check these rules against a
brute force. Semantics (docs/scraping.md, shared/reference/x-policy-2024.md):

1. A window is half-open, `[s, s + window)`; it is over the line when its posts are strictly
   more than the threshold.
2. Candidate starts are access instants: a window starting anywhere else holds no more posts
   than the window starting at its first access (which also holds every later post of it).
3. `earliest` bills the earliest over-line window, then resumes at the first access at or
   after its end; `max_total` picks non-overlapping windows maximising billed posts.
4. Amount per billed window: `amount_per_million x units` (units `posts/1e6`, floor or
   ceil), Decimal arithmetic, rounded half-up to cents once per window.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from typing import Literal

import numpy as np
import numpy.typing as npt

from consentry.policy import ScrapingTerms

__all__ = [
    "I64",
    "MILLION",
    "MODES",
    "ROUNDINGS",
    "US_PER_SECOND",
    "Mode",
    "Rounding",
    "Terms",
    "WindowSpan",
    "earliest_windows",
    "forward_counts",
    "max_total_windows",
    "select_windows",
    "window_amount",
]

I64 = npt.NDArray[np.int64]
Mode = Literal["earliest", "max_total"]
Rounding = Literal["pro_rata", "per_full_million", "per_started_million"]
MODES: tuple[Mode, ...] = ("earliest", "max_total")
ROUNDINGS: tuple[Rounding, ...] = ("pro_rata", "per_full_million", "per_started_million")
MILLION = Decimal(1_000_000)
US_PER_SECOND = 1_000_000
_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Terms:
    """The clause as the rules need it: integers and a Decimal, nothing to parse."""

    threshold: int
    window_us: int
    amount_per_million: Decimal
    currency: str
    rounding: Rounding

    @classmethod
    def from_policy(cls, terms: ScrapingTerms, rounding: str | None = None) -> Terms:
        """The policy's scraping block; `rounding` (if given) overrides the policy's."""
        chosen = rounding or terms.rounding
        if chosen not in ROUNDINGS:
            raise ValueError(f"unknown rounding {chosen!r}")
        window_us = terms.window.total_seconds() * US_PER_SECOND
        return cls(
            threshold=int(terms.threshold_posts),
            window_us=window_us,
            amount_per_million=Decimal(terms.amount_per_million),
            currency=terms.currency,
            rounding=chosen,
        )


@dataclass(frozen=True, slots=True)
class WindowSpan:
    """A billed window `[start_us, start_us + window)` holding accesses `lo <= i < hi`."""

    start_us: int
    lo: int
    hi: int
    posts: int


def window_amount(posts: int, terms: Terms) -> Decimal:
    """Damages for one billed window of `posts` posts.

    1. units: `posts / 1,000,000` (pro_rata), its floor (per_full_million) or its ceiling
       (per_started_million), computed exactly in Decimal.
    2. amount = amount_per_million x units, rounded half-up to cents (once, here).
    """
    units = Decimal(posts) / MILLION
    if terms.rounding == "per_full_million":
        units = units.to_integral_value(rounding=ROUND_FLOOR)
    elif terms.rounding == "per_started_million":
        units = units.to_integral_value(rounding=ROUND_CEILING)
    return (terms.amount_per_million * units).quantize(_CENT, rounding=ROUND_HALF_UP)


def forward_counts(ts: I64, posts: I64, window_us: int) -> tuple[I64, I64, I64]:
    """For each access i: posts in `[ts[i], ts[i] + window)` and that window's index range.

    1. `ts` is sorted ascending (ties allowed); prefix sums make any range sum O(1).
    2. The window of access i starts at the first access with the same instant (`lo`, so
       tied accesses share one window) and ends before the first access at or after
       `ts[i] + window` (`hi`, a left binary search: half-open).
    Returns (counts, lo, hi).
    """
    cum = np.zeros(len(ts) + 1, dtype=np.int64)
    np.cumsum(posts, out=cum[1:])
    lo = np.searchsorted(ts, ts, side="left").astype(np.int64)
    hi = np.searchsorted(ts, ts + window_us, side="left").astype(np.int64)
    counts: I64 = cum[hi] - cum[lo]
    return counts, lo, hi


def earliest_windows(ts: I64, posts: I64, terms: Terms) -> list[WindowSpan]:
    """Mode `earliest`.

    1. Among accesses whose forward window is over the line, take the earliest: bill it.
    2. Resume at the first access at or after the billed window's end; repeat.
    The loop runs once per billed window (a binary search finds the next candidate).
    """
    counts, lo, hi = forward_counts(ts, posts, terms.window_us)
    over = np.flatnonzero(counts > terms.threshold)
    over_ts = ts[over]
    spans: list[WindowSpan] = []
    k = 0
    while k < len(over):
        i = int(over[k])
        spans.append(WindowSpan(int(ts[i]), int(lo[i]), int(hi[i]), int(counts[i])))
        k = int(np.searchsorted(over_ts, ts[i] + terms.window_us, side="left"))
    return spans


def max_total_windows(ts: I64, posts: I64, terms: Terms) -> list[WindowSpan]:
    """Mode `max_total`: non-overlapping over-line windows with the most posts in total.

    1. Candidate starts: every access instant t, t + 1 µs (just after an access) and
       t - window + 1 µs (the window ending just after an access). Any set of disjoint
       windows can be slid left, one by one from the first, onto these starts without losing
       a post or creating an overlap (docs/scraping.md has the argument); access instants
       alone do not suffice.
    2. Weighted interval scheduling over the over-line candidates: best(k) =
       max(best(k+1), posts(k) + best(first candidate at or after start(k) + window)),
       taking the window on ties (so earlier windows win among equal totals).
    3. Each chosen window is then moved right to start at its first access when that changes
       neither its posts nor its distance to the next chosen window (readable evidence).
    The dynamic programme loops over over-line candidates only.
    """
    w = terms.window_us
    if len(ts) == 0:
        return []
    starts = np.unique(np.concatenate([ts, ts + 1, ts - w + 1]))
    cum = np.zeros(len(ts) + 1, dtype=np.int64)
    np.cumsum(posts, out=cum[1:])
    lo = np.searchsorted(ts, starts, side="left")
    hi = np.searchsorted(ts, starts + w, side="left")
    counts = cum[hi] - cum[lo]
    keep = counts > terms.threshold
    starts, lo, hi, counts = starts[keep], lo[keep], hi[keep], counts[keep]
    n = len(starts)
    if n == 0:
        return []
    nxt = np.searchsorted(starts, starts + w, side="left")
    best = [0] * (n + 1)
    take = [False] * n
    weights = counts.tolist()
    nxt_list = nxt.tolist()
    for k in range(n - 1, -1, -1):
        with_it = weights[k] + best[nxt_list[k]]
        if with_it >= best[k + 1]:
            best[k] = with_it
            take[k] = True
        else:
            best[k] = best[k + 1]
    chosen: list[int] = []
    k = 0
    while k < n:
        if take[k]:
            chosen.append(k)
            k = nxt_list[k]
        else:
            k += 1
    spans: list[WindowSpan] = []
    next_start: int | None = None
    for k in reversed(chosen):
        start, a, b = int(starts[k]), int(lo[k]), int(hi[k])
        first = int(ts[a])
        # Moving the start to the first access adds the accesses in [start + w, first + w).
        gained = int(np.searchsorted(ts, first + w, side="left")) != b
        fits = next_start is None or first + w <= next_start
        if not gained and fits:
            start = first
        spans.append(WindowSpan(start, a, b, int(counts[k])))
        next_start = start
    spans.reverse()
    return spans


def select_windows(ts: I64, posts: I64, terms: Terms, mode: str) -> list[WindowSpan]:
    """The billed windows of one entity under `mode` (`earliest` or `max_total`)."""
    if mode == "earliest":
        return earliest_windows(ts, posts, terms)
    if mode == "max_total":
        return max_total_windows(ts, posts, terms)
    raise ValueError(f"unknown mode {mode!r}")
