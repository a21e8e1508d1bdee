"""Step 3 and 4 of the columnar path: the exact pass over packed keys, and billing (package doc)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import numpy.typing as npt

from consentry.scraping.rules import I64, Terms, max_total_windows

if TYPE_CHECKING:
    pass

from consentry.scraping.columnar import tuning

U64 = npt.NDArray[np.uint64]


def sort_accesses(code: npt.NDArray[np.int32], ts: I64, posts: I64) -> tuple[I64, I64, I64]:
    """(code, ts, posts) sorted by (code, ts); posts ride along.

    When `bits(code) + bits(ts - t0) + bits(posts)` fit in 64, the three are packed into one
    uint64 and sorted by value (posts in the low bits order ties, which changes no prefix
    sum at a tie boundary); else a `lexsort`.
    """
    n = len(ts)
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z.copy(), z.copy()
    t0 = int(ts.min())
    tbits = (int(ts.max()) - t0).bit_length()
    pmin, pmax = int(posts.min()), int(posts.max())
    pbits = pmax.bit_length()
    cbits = max(int(code.max()), 0).bit_length()
    if pmin >= 0 and int(code.min()) >= 0 and cbits + tbits + pbits <= 64:
        key = code.astype(np.uint64) << np.uint64(tbits + pbits)
        key |= (ts - t0).astype(np.uint64) << np.uint64(pbits)
        key |= posts.astype(np.uint64)
        key.sort()
        out_p = (key & np.uint64((1 << pbits) - 1)).astype(np.int64)
        key >>= np.uint64(pbits)
        out_t = (key & np.uint64((1 << tbits) - 1)).astype(np.int64)
        out_t += t0
        key >>= np.uint64(tbits)
        out_c = key.astype(np.int64)
        return out_c, out_t, out_p
    order = np.lexsort((ts, code))
    return code[order].astype(np.int64), ts[order], posts[order]


# --------------------------------------------------------------------------- exact pass


def forward_ends(key: I64, window_us: int) -> I64:
    """For sorted `key`: the first index whose key is >= key[i] + window (left search).

    One merge instead of n binary searches: keys tagged `2k + 1` and queries `2(k + w)`
    sorted together; a query's position minus its rank is the number of keys before it.
    """
    n = len(key)
    merged = np.empty(2 * n, dtype=np.int64)
    np.multiply(key, 2, out=merged[:n])
    merged[:n] += 1
    np.add(key, window_us, out=merged[n:])
    merged[n:] *= 2
    # Two sorted runs: the stable sort (timsort) finds them and merges once, O(n).
    merged.sort(kind="stable")
    pos = np.flatnonzero((merged & 1) == 0)
    del merged
    pos -= np.arange(n, dtype=np.int64)
    return pos


@dataclass(slots=True)
class ExactResult:
    """Per entity (in code order) and per billed window (in code, start order)."""

    codes: I64
    totals: I64
    accesses: I64
    maxima: I64
    max_start: I64
    first_row: I64
    w_code: I64
    w_start: I64
    w_lo: I64
    w_hi: I64
    w_posts: I64


def earliest_all(
    key: I64, code: I64, ts: I64, counts: I64, lo: I64, hi: I64, terms: Terms
) -> tuple[I64, I64, I64, I64, I64]:
    """Mode `earliest` for every entity at once (sorted composite `key`, module doc step 4):
    per round, each entity's current over-line access is billed and the next candidate is
    the first over-line access of the same entity at or after the window's end. The rule
    is `rules.earliest_windows`; `test_exact_pass_matches_the_rules_per_entity` holds this
    to it."""
    over = np.flatnonzero(counts > terms.threshold)
    empty = np.zeros(0, dtype=np.int64)
    if len(over) == 0:
        return empty, empty, empty, empty, empty
    o_key = key[over]
    o_code = code[over]
    cur = np.flatnonzero(np.r_[True, o_code[1:] != o_code[:-1]])
    chosen: list[I64] = []
    while len(cur):
        chosen.append(over[cur])
        nxt = np.searchsorted(o_key, o_key[cur] + terms.window_us, side="left")
        ok = nxt < len(over)
        nxt, cur = nxt[ok], cur[ok]
        cur = nxt[o_code[nxt] == o_code[cur]]
    rows = np.sort(np.concatenate(chosen))
    return code[rows], ts[rows], lo[rows], hi[rows], counts[rows]


def exact_pass(code: I64, ts: I64, posts: I64, terms: Terms, mode: str) -> ExactResult:
    """Totals, maxima and billed windows of every entity (arrays sorted by code, ts).

    The rules are `rules.forward_counts` (maxima), `rules.earliest_windows` (vectorised
    here by `earliest_all`) and `rules.max_total_windows` (called per over-line entity);
    `test_exact_pass_matches_the_rules_per_entity` holds this pass to them with ties at
    the threshold and accesses at window edges, and `test_duckdb_matches_reference` the
    whole columnar path."""
    n = len(ts)
    w = terms.window_us
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return ExactResult(z, z, z, z, z, z, z, z, z, z, z)
    starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
    ends = np.r_[starts[1:], n].astype(np.int64)
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(posts, out=cum[1:])
    t0 = int(ts.min()) if n else 0
    stride = (int(ts.max()) - t0 + w + 1) if n else 1
    per_chunk = max(1, (1 << 61) // stride)
    maxima = np.zeros(len(starts), dtype=np.int64)
    max_start = np.zeros(len(starts), dtype=np.int64)
    # Chunks: whole entities, at most per_chunk of them, about tuning.CHUNK_ROWS rows each.
    bounds: list[tuple[int, int]] = []
    s = 0
    while s < len(starts):
        limit = int(np.searchsorted(ends, int(starts[s]) + tuning.CHUNK_ROWS, side="right"))
        e = min(len(starts), s + per_chunk, max(limit, s + 1))
        bounds.append((s, e))
        s = e

    def windows_of_chunk(chunk: tuple[int, int]) -> list[_Windows]:
        s, e = chunk
        a, b = int(starts[s]), int(ends[e - 1])
        seg = code[a:b]
        rank = np.zeros(b - a, dtype=np.int64)
        np.cumsum(seg[1:] != seg[:-1], out=rank[1:])
        key = rank * stride + (ts[a:b] - t0)
        del rank
        newrun = np.r_[True, key[1:] != key[:-1]]
        lo = np.maximum.accumulate(np.where(newrun, np.arange(b - a, dtype=np.int64), 0))
        del newrun
        hi = forward_ends(key, w)
        counts = cum[a + hi] - cum[a + lo]
        local = starts[s:e] - a
        densest = np.maximum.reduceat(counts, local)
        maxima[s:e] = densest
        hits = np.flatnonzero(counts == np.repeat(densest, np.diff(np.r_[local, b - a])))
        seg_of = np.searchsorted(local, hits, side="right") - 1
        first_hit = hits[np.r_[True, seg_of[1:] != seg_of[:-1]]]
        max_start[s:e] = ts[a + first_hit]
        if mode == "earliest":
            return [earliest_all(key, seg, ts[a:b], counts, lo + a, hi + a, terms)]
        wins: list[_Windows] = []
        for k in np.flatnonzero(densest > terms.threshold).tolist():
            sa, sb = int(starts[s + k]), int(ends[s + k])
            spans = max_total_windows(ts[sa:sb], posts[sa:sb], terms)
            if spans:
                wins.append(
                    (
                        np.full(len(spans), int(code[sa]), dtype=np.int64),
                        np.array([x.start_us for x in spans], dtype=np.int64),
                        np.array([x.lo + sa for x in spans], dtype=np.int64),
                        np.array([x.hi + sa for x in spans], dtype=np.int64),
                        np.array([x.posts for x in spans], dtype=np.int64),
                    )
                )
        return wins

    # Chunks in two threads (NumPy's sorts and ufuncs release the GIL); windows are
    # concatenated in chunk order, i.e. by code, then start.
    wins = [part for parts in in_threads(windows_of_chunk, bounds) for part in parts]
    totals = np.add.reduceat(posts, starts) if n else np.zeros(0, np.int64)
    if wins:
        w_code, w_start, w_lo, w_hi, w_posts = (np.concatenate(x) for x in zip(*wins, strict=True))
    else:
        w_code = w_start = w_lo = w_hi = w_posts = np.zeros(0, dtype=np.int64)
    return ExactResult(
        codes=code[starts].astype(np.int64),
        totals=np.asarray(totals, dtype=np.int64),
        accesses=(ends - starts).astype(np.int64),
        maxima=maxima,
        max_start=max_start,
        first_row=starts.astype(np.int64),
        w_code=w_code,
        w_start=w_start,
        w_lo=w_lo,
        w_hi=w_hi,
        w_posts=w_posts,
    )


_A = TypeVar("_A")
_T = TypeVar("_T")
_Windows = tuple[I64, I64, I64, I64, I64]


def in_threads(fn: Callable[[_A], _T], items: Sequence[_A]) -> list[_T]:
    """`fn(item)` for every item, two at a time (NumPy's sorts and ufuncs, Arrow's kernels
    and SHA-256 release the GIL), results in the order given; one item runs here."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(fn, items))
