"""Brute-force counterparts of the rules: every start, every placement, no cleverness."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache


def window_posts(ts: list[int], posts: list[int], start: int, window: int) -> int:
    return sum(p for t, p in zip(ts, posts, strict=True) if start <= t < start + window)


def max_window(ts: list[int], posts: list[int], window: int) -> tuple[int, int]:
    """(most posts in a window starting at an access, earliest such start)."""
    best, at = -1, 0
    for s in sorted(set(ts)):
        n = window_posts(ts, posts, s, window)
        if n > best:
            best, at = n, s
    return best, at


def earliest(ts: list[int], posts: list[int], window: int, threshold: int) -> list[tuple[int, int]]:
    """(start, posts) of the windows billed by mode earliest, scanning access by access."""
    out: list[tuple[int, int]] = []
    resume = None
    for s in sorted(set(ts)):
        if resume is not None and s < resume:
            continue
        n = window_posts(ts, posts, s, window)
        if n > threshold:
            out.append((s, n))
            resume = s + window
    return out


def normal_starts(ts: list[int], window: int) -> list[int]:
    """Every `t - k x window` (t an access instant, k >= 0) whose window holds an access."""
    if not ts:
        return []
    first = min(ts)
    return sorted({t - k * window for t in set(ts) for k in range((t - first) // window + 2)})


def placements(starts: list[int], window: int) -> Iterator[tuple[int, ...]]:
    """Every set of disjoint windows `[s, s + window)` with starts from sorted `starts`."""

    def extend(i: int, free_from: int | None) -> Iterator[tuple[int, ...]]:
        yield ()
        for j in range(i, len(starts)):
            if free_from is None or starts[j] >= free_from:
                for rest in extend(j + 1, starts[j] + window):
                    yield (starts[j], *rest)

    return extend(0, None)


def max_total(ts: list[int], posts: list[int], window: int, threshold: int) -> int:
    """The largest billed total over EVERY placement of disjoint over-line windows whose
    starts are in normal form (`normal_starts`), enumerated one by one. (A window that is
    not over the line bills nothing, so leaving such windows out loses no placement.)"""
    billed = {s: window_posts(ts, posts, s, window) for s in normal_starts(ts, window)}
    over = [s for s, n in billed.items() if n > threshold]
    return max(sum(billed[s] for s in chosen) for chosen in placements(over, window))


def max_total_any_start(ts: list[int], posts: list[int], window: int, threshold: int) -> int:
    """The largest billed total over disjoint over-line windows with ANY integer start
    (instants are whole microseconds), by plain recursion over the starts in order: holds
    the normal form itself (`max_total`) to the definition."""
    if not ts:
        return 0
    starts = range(min(ts) - window + 1, max(ts) + 1)

    @cache
    def best(s: int) -> int:
        """The most posts billed by windows starting at or after `s`."""
        if s > starts[-1]:
            return 0
        n = window_posts(ts, posts, s, window)
        return max(best(s + 1), n + best(s + window) if n > threshold else 0)

    return best(starts[0])
