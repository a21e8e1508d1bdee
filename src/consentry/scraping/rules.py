"""The counting and billing rules of the liquidated-damages clause, as pure functions.

Everything here works on one entity's accesses as NumPy arrays sorted by instant
(microseconds since the Unix epoch, UTC). No I/O, no engine: the engine path and the
independent reference both end here for billing, and the tests check these rules against a
brute force. Semantics (docs/scraping.md, shared/reference/x-policy-2024.md):

1. A window is half-open, `[s, s + window)`; it is over the line when its posts are strictly
   more than the threshold.
2. Candidate starts for the densest window and `earliest` are access instants: a window
   starting anywhere else holds no more posts than the window starting at its first access
   (which also holds every later post of it).
3. `earliest` bills the earliest over-line window, then resumes at the first access at or
   after its end; `max_total` picks non-overlapping windows maximising billed posts over
   every start, which also needs chains of windows placed end to start
   (`max_total_windows`).
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

    Instants are whole microseconds, so a start `s` is an integer; `P(s)` is the posts of
    `[s, s + window)`, `f(s)` the most posts billed by windows starting at or after `s`.

    1. Normal form (docs/scraping.md, semantics 6): `f(s) > f(s + 1)` only where a window
       starting at `s` is over the line and either `s` is an access instant or
       `f(s + window) > f(s + 1 + window)` (otherwise starting 1 µs later bills at least
       as much: `[s + 1, s + 1 + window)` loses no access, and what may follow it bills
       as much). So every start that matters is an access instant `t` or `t - k x window`:
       a chain of over-line windows placed end to start back from `t`.
    2. Candidates: every access instant whose window is over the line; and `b - window`
       for every candidate `b` with `f(b) > f(b + 1)` (taking `b` bills strictly more than
       starting later) when that window is over the line and `b - window` is no access
       instant (then it is a candidate already). `f` is constant between candidates, so
       the dynamic programme over them is exact.
    3. The programme runs right to left in blocks of one window on a fixed grid (the
       successor `s + window` of a candidate lies in the next block, whose candidates and
       `f` are known), each block vectorised: `f(s) = max(f(next candidate), P(s) +
       f(first candidate at or after s + window))` is a reversed running maximum. Step 2's
       chain candidates of a block come from the block after it.
    4. Reading the choice from the left, a candidate is taken when taking it is at least
       as good as skipping it: among placements over the candidates with the same total,
       the one whose first window starts earliest wins, then the second, and so on.
    5. Each chosen window, last first, is then moved right to start at its first access
       when that neither adds an access nor reaches the next chosen window (readable
       evidence; its posts do not change).
    Python loops run once per block and once per billed window, never per access.
    """
    w, threshold = terms.window_us, terms.threshold
    if len(ts) == 0:
        return []
    cum = np.zeros(len(ts) + 1, dtype=np.int64)
    np.cumsum(posts, out=cum[1:])
    instants = np.unique(ts)

    def window_of(starts: I64) -> tuple[I64, I64, I64]:
        lo = np.searchsorted(ts, starts, side="left").astype(np.int64)
        hi = np.searchsorted(ts, starts + w, side="left").astype(np.int64)
        return lo, hi, cum[hi] - cum[lo]

    roots = instants[window_of(instants)[2] > threshold]
    if len(roots) == 0:
        return []
    base = int(roots[0])
    root_block = (roots - base) // w
    # Blocks processed so far, right to left: (starts, lo, hi, counts, taken).
    done: list[tuple[I64, I64, I64, I64, npt.NDArray[np.bool_]]] = []
    empty = np.zeros(0, dtype=np.int64)
    after_starts, after_best = empty, empty  # the block right after the current one
    beyond = 0  # f at the first candidate after that block (0: none)
    pending = empty  # chain candidates for the current block
    b = int(root_block[-1])
    r_end = len(roots)
    while True:
        r_start = int(np.searchsorted(root_block, b, side="left"))
        starts = roots[r_start:r_end]
        if len(pending):
            starts = np.sort(np.concatenate([starts, pending]))
        r_end = r_start
        lo, hi, counts = window_of(starts)
        # f(s + window): the first candidate at or after it is in the next block or beyond.
        succ = np.append(after_best, beyond)[np.searchsorted(after_starts, starts + w, "left")]
        with_it = counts + succ
        later = int(after_best[0]) if len(after_best) else beyond
        best = np.maximum(np.maximum.accumulate(with_it[::-1])[::-1], later)
        following = np.append(best[1:], later)
        done.append((starts, lo, hi, counts, with_it >= following))
        # Step 2: chains continue back from the candidates where f strictly drops.
        back = starts[with_it > following] - w
        if len(back):
            at = np.minimum(np.searchsorted(instants, back, side="left"), len(instants) - 1)
            back = back[instants[at] != back]
            pending = back[window_of(back)[2] > threshold]
        else:
            pending = empty
        if len(pending):
            nb = b - 1
        elif r_end:
            nb = int(root_block[r_end - 1])
        else:
            break
        if nb == b - 1:
            after_starts, after_best, beyond = starts, best, later
        else:  # no candidate in block b - 1: f there is f at this block's first candidate
            after_starts, after_best, beyond = empty, empty, int(best[0])
        b = nb
    done.reverse()
    starts, lo, hi, counts, take = (np.concatenate(x) for x in zip(*done, strict=True))
    n = len(starts)
    nxt = np.searchsorted(starts, starts + w, side="left")
    # The first taken candidate at or after each index (n: none).
    first_taken = np.r_[np.where(take, np.arange(n), n), n]
    first_taken = np.minimum.accumulate(first_taken[::-1])[::-1]
    chosen: list[int] = []
    k = int(first_taken[0])
    while k < n:
        chosen.append(k)
        k = int(first_taken[nxt[k]])
    spans: list[WindowSpan] = []
    next_start: int | None = None
    for k in reversed(chosen):
        start, a, z = int(starts[k]), int(lo[k]), int(hi[k])
        first = int(ts[a])
        # Moving the start to the first access adds the accesses in [start + w, first + w).
        gained = int(np.searchsorted(ts, first + w, side="left")) != z
        fits = next_start is None or first + w <= next_start
        if not gained and fits:
            start = first
        spans.append(WindowSpan(start, a, z, int(counts[k])))
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
