"""Brute-force counterparts of the rules: every start, every subset, no cleverness."""

from __future__ import annotations

from itertools import combinations


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


def max_total(ts: list[int], posts: list[int], window: int, threshold: int) -> int:
    """The largest billed total over disjoint over-line windows with ANY integer start."""
    if not ts:
        return 0
    starts = range(min(ts) - window, max(ts) + 2)
    cands = [(s, n) for s in starts if (n := window_posts(ts, posts, s, window)) > threshold]
    best = 0
    # Exhaustive over small candidate sets, greedy-free.
    memo: dict[int, int] = {}

    def solve(i: int) -> int:
        if i >= len(cands):
            return 0
        if i in memo:
            return memo[i]
        s, n = cands[i]
        j = i + 1
        while j < len(cands) and cands[j][0] < s + window:
            j += 1
        memo[i] = max(solve(i + 1), n + solve(j))
        return memo[i]

    best = solve(0)
    _ = combinations
    return best
