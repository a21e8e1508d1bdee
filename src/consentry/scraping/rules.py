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
from typing import Literal, NamedTuple

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
       the dynamic programme over them is exact (`_chain_starts`).
    3. The programme runs right to left in blocks of one window on a fixed grid (the
       successor `s + window` of a candidate lies in the next block, whose candidates and
       `f` are known), each block vectorised: `f(s) = max(f(next candidate), P(s) +
       f(first candidate at or after s + window))` is a reversed running maximum. Step 2's
       chain candidates of a block come from the block after it (`_candidates`,
       `_solve_block`).
    4. Reading the choice from the left, a candidate is taken when taking it is at least
       as good as skipping it: among placements over the candidates with the same total,
       the one whose first window starts earliest wins, then the second, and so on
       (`_choose`).
    5. Each chosen window, last first, is then moved right to start at its first access
       when that neither adds an access nor reaches the next chosen window (readable
       evidence; its posts do not change; `_readable_spans`).
    Python loops run once per block and once per billed window, never per access.
    """
    if len(ts) == 0:
        return []
    cum = np.zeros(len(ts) + 1, dtype=np.int64)
    np.cumsum(posts, out=cum[1:])
    candidates = _candidates(ts, cum, terms)
    if candidates is None:
        return []
    chosen = _choose(candidates.starts, candidates.take, terms.window_us)
    return _readable_spans(ts, candidates, chosen, terms.window_us)


_EMPTY: I64 = np.zeros(0, dtype=np.int64)


class _Candidates(NamedTuple):
    """Candidates of `max_total_windows` in start order, solved: per candidate its start,
    its window's access range `[lo, hi)` and posts (`counts`), and whether taking it is at
    least as good as skipping it (`take`)."""

    starts: I64
    lo: I64
    hi: I64
    counts: I64
    take: npt.NDArray[np.bool_]


class _Block(NamedTuple):
    """One block of candidates solved (step 3 of `max_total_windows`): the candidates
    (`_Candidates`), f at each (`best`), whether taking each is strictly better than
    skipping it (`drops`: f drops right after it), and f at the first candidate after the
    block (`later`; 0: none)."""

    candidates: _Candidates
    best: I64
    drops: npt.NDArray[np.bool_]
    later: int


class _Right(NamedTuple):
    """f where it is already known, right of the block being solved: at the candidates
    of the next block (`starts`, `best`), and at the first candidate beyond them
    (`beyond`; 0: none)."""

    starts: I64
    best: I64
    beyond: int


def _windows(ts: I64, cum: I64, starts: I64, window: int) -> tuple[I64, I64, I64]:
    """For windows starting at `starts`: their access ranges `[lo, hi)` and posts (`cum`:
    prefix sums of the posts)."""
    lo = np.searchsorted(ts, starts, side="left").astype(np.int64)
    hi = np.searchsorted(ts, starts + window, side="left").astype(np.int64)
    return lo, hi, cum[hi] - cum[lo]


def _candidates(ts: I64, cum: I64, terms: Terms) -> _Candidates | None:
    """Steps 2 and 3 of `max_total_windows`: every candidate, solved; None when no window
    is over the line.

    1. The roots (access instants whose window is over the line) are placed in blocks of
       one window counted from the first root.
    2. Blocks are solved right to left (`_solve_block`); a block holds its roots and the
       chain candidates the block after it gave (`_chain_starts`).
    3. A block without roots or chain candidates is skipped: f there is f at the first
       candidate after it.
    """
    window, threshold = terms.window_us, terms.threshold
    instants = np.unique(ts)
    roots = instants[_windows(ts, cum, instants, window)[2] > threshold]
    if len(roots) == 0:
        return None
    root_block = (roots - int(roots[0])) // window
    solved: list[_Block] = []
    right = _Right(_EMPTY, _EMPTY, 0)
    pending = _EMPTY  # chain candidates for the current block
    block = int(root_block[-1])
    roots_end = len(roots)
    while True:
        roots_start = int(np.searchsorted(root_block, block, side="left"))
        starts = roots[roots_start:roots_end]
        if len(pending):
            starts = np.sort(np.concatenate([starts, pending]))
        roots_end = roots_start
        current = _solve_block(ts, cum, starts, window, right)
        solved.append(current)
        pending = _chain_starts(ts, cum, instants, current, window, threshold)
        if len(pending):
            next_block = block - 1
        elif roots_end:
            next_block = int(root_block[roots_end - 1])
        else:
            break
        if next_block == block - 1:
            right = _Right(starts, current.best, current.later)
        else:  # no candidate in block - 1: f there is f at this block's first candidate
            right = _Right(_EMPTY, _EMPTY, int(current.best[0]))
        block = next_block
    solved.reverse()
    columns = zip(*(b.candidates for b in solved), strict=True)
    return _Candidates(*(np.concatenate(column) for column in columns))


def _solve_block(ts: I64, cum: I64, starts: I64, window: int, right: _Right) -> _Block:
    """f over one block's candidates `starts` (sorted), given f right of it.

    1. Taking candidate s bills `P(s) + f(first candidate at or after s + window)`; that
       successor is in the next block or beyond it (`right`).
    2. f at a candidate is the best of taking it and of f at the next candidate: a
       reversed running maximum, floored by f after the block.
    """
    lo, hi, counts = _windows(ts, cum, starts, window)
    after = np.searchsorted(right.starts, starts + window, "left")
    with_it = counts + np.append(right.best, right.beyond)[after]
    later = int(right.best[0]) if len(right.best) else right.beyond
    best = np.maximum(np.maximum.accumulate(with_it[::-1])[::-1], later)
    following = np.append(best[1:], later)
    candidates = _Candidates(starts, lo, hi, counts, with_it >= following)
    return _Block(candidates, best, with_it > following, later)


def _chain_starts(
    ts: I64, cum: I64, instants: I64, block: _Block, window: int, threshold: int
) -> I64:
    """Step 2 of `max_total_windows` for the block before `block`: `b - window` for each
    candidate `b` where f strictly drops, when it is no access instant and its window is
    over the line."""
    back = block.candidates.starts[block.drops] - window
    if len(back) == 0:
        return _EMPTY
    at = np.minimum(np.searchsorted(instants, back, side="left"), len(instants) - 1)
    back = back[instants[at] != back]
    over: I64 = back[_windows(ts, cum, back, window)[2] > threshold]
    return over


def _choose(starts: I64, take: npt.NDArray[np.bool_], window: int) -> list[int]:
    """Step 4 of `max_total_windows`: from the left, the first candidate worth taking, then
    the first worth taking at or after its window's end, and so on."""
    n = len(starts)
    successor = np.searchsorted(starts, starts + window, side="left")
    # The first taken candidate at or after each index (n: none).
    first_taken = np.r_[np.where(take, np.arange(n), n), n]
    first_taken = np.minimum.accumulate(first_taken[::-1])[::-1]
    chosen: list[int] = []
    k = int(first_taken[0])
    while k < n:
        chosen.append(k)
        k = int(first_taken[successor[k]])
    return chosen


def _readable_spans(
    ts: I64, candidates: _Candidates, chosen: list[int], window: int
) -> list[WindowSpan]:
    """Step 5 of `max_total_windows`: the chosen windows, last first, each moved right to
    start at its first access when that neither adds an access nor reaches the next chosen
    window."""
    spans: list[WindowSpan] = []
    next_start: int | None = None
    for k in reversed(chosen):
        start, lo, hi = int(candidates.starts[k]), int(candidates.lo[k]), int(candidates.hi[k])
        first = int(ts[lo])
        # Moving the start to the first access adds the accesses in
        # [start + window, first + window).
        gained = int(np.searchsorted(ts, first + window, side="left")) != hi
        fits = next_start is None or first + window <= next_start
        if not gained and fits:
            start = first
        spans.append(WindowSpan(start, lo, hi, int(candidates.counts[k])))
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
