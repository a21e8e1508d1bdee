"""Step 3 and 4 of the columnar path: the exact pass over packed keys, and billing (package doc)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from consentry.scraping.arrays import BitLayout, run_bounds, run_ids, run_start_mask, run_starts
from consentry.scraping.columnar import tuning
from consentry.scraping.rules import I64, Terms, max_total_windows

_A = TypeVar("_A")
_T = TypeVar("_T")
_Windows = tuple[I64, I64, I64, I64, I64]
"""Billed windows of some entities: code, start, first row, end row, posts."""


def sort_accesses(code: npt.NDArray[np.int32], ts: I64, posts: I64) -> tuple[I64, I64, I64]:
    """(code, ts, posts) sorted by (code, ts); posts ride along.

    When `bits(code) + bits(ts - t0) + bits(posts)` fit in 64, the three are packed into one
    uint64 and sorted by value (posts in the low bits order ties, which changes no prefix
    sum at a tie boundary); else a `lexsort`.
    """
    if len(ts) == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z.copy(), z.copy()
    t0 = int(ts.min())
    tbits = (int(ts.max()) - t0).bit_length()
    pbits = int(posts.max()).bit_length()
    cbits = max(int(code.max()), 0).bit_length()
    layout = BitLayout.fitting(cbits, tbits, pbits)
    if int(posts.min()) >= 0 and int(code.min()) >= 0 and layout is not None:
        key = layout.pack(code, ts - t0, posts)
        key.sort()
        out_c, out_t, out_p = layout.unpack(key)
        out_t += t0
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
    cur = run_starts(o_code)
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

    1. Entities are the runs of `code`; their accesses go in chunks of whole entities
       (`_Sweep.chunks`), two chunks at a time in threads.
    2. Per chunk: every access's forward window and its posts (`_Sweep.forward_windows`),
       each entity's densest window (`_Sweep.densest`), then the billed windows of its
       over-line entities by the mode.
    3. Totals per entity by `reduceat`; windows concatenated in chunk order (by code, then
       start).

    The rules are `rules.forward_counts` (maxima), `rules.earliest_windows` (vectorised
    here by `earliest_all`) and `rules.max_total_windows` (called per over-line entity);
    `test_exact_pass_matches_the_rules_per_entity` holds this pass to them with ties at
    the threshold and accesses at window edges, and `test_duckdb_matches_reference` the
    whole columnar path."""
    if len(ts) == 0:
        z = np.zeros(0, dtype=np.int64)
        return ExactResult(z, z, z, z, z, z, z, z, z, z, z)
    sweep = _Sweep.of(code, ts, posts, terms, mode)
    # NumPy's sorts and ufuncs release the GIL, so two chunks run at once.
    wins = [part for parts in in_threads(sweep.windows_of_chunk, sweep.chunks()) for part in parts]
    w_code, w_start, w_lo, w_hi, w_posts = _concatenated(wins)
    return ExactResult(
        codes=code[sweep.starts].astype(np.int64),
        totals=np.asarray(np.add.reduceat(posts, sweep.starts), dtype=np.int64),
        accesses=(sweep.ends - sweep.starts).astype(np.int64),
        maxima=sweep.maxima,
        max_start=sweep.max_start,
        first_row=sweep.starts.astype(np.int64),
        w_code=w_code,
        w_start=w_start,
        w_lo=w_lo,
        w_hi=w_hi,
        w_posts=w_posts,
    )


@dataclass(frozen=True, slots=True)
class _Sweep:
    """What every chunk of the exact pass reads (the sorted accesses, their prefix sums,
    the entities' row ranges) and the per-entity arrays the chunks fill, each chunk its
    own slice of `maxima` and `max_start`."""

    code: I64
    ts: I64
    posts: I64
    terms: Terms
    mode: str
    starts: I64
    ends: I64
    cum: I64
    t0: int
    stride: int
    maxima: I64
    max_start: I64

    @classmethod
    def of(cls, code: I64, ts: I64, posts: I64, terms: Terms, mode: str) -> _Sweep:
        bounds = run_bounds(code)
        cum = np.zeros(len(ts) + 1, dtype=np.int64)
        np.cumsum(posts, out=cum[1:])
        t0 = int(ts.min())
        # Composite keys `rank * stride + (ts - t0)` keep entities a window apart.
        stride = int(ts.max()) - t0 + terms.window_us + 1
        entities = len(bounds) - 1
        return cls(
            code=code,
            ts=ts,
            posts=posts,
            terms=terms,
            mode=mode,
            starts=bounds[:-1],
            ends=bounds[1:],
            cum=cum,
            t0=t0,
            stride=stride,
            maxima=np.zeros(entities, dtype=np.int64),
            max_start=np.zeros(entities, dtype=np.int64),
        )

    def chunks(self) -> list[tuple[int, int]]:
        """Entity ranges `[s, e)`: whole entities, about `tuning.CHUNK_ROWS` rows each (at
        least one entity), and few enough entities that composite keys stay below 2**61."""
        per_chunk = max(1, (1 << 61) // self.stride)
        bounds: list[tuple[int, int]] = []
        s = 0
        while s < len(self.starts):
            rows_end = int(self.starts[s]) + tuning.CHUNK_ROWS
            limit = int(np.searchsorted(self.ends, rows_end, side="right"))
            e = min(len(self.starts), s + per_chunk, max(limit, s + 1))
            bounds.append((s, e))
            s = e
        return bounds

    def windows_of_chunk(self, chunk: tuple[int, int]) -> list[_Windows]:
        """The billed windows of entities `[s, e)`; fills their maxima on the way."""
        s, e = chunk
        a, b = int(self.starts[s]), int(self.ends[e - 1])
        key, lo, hi = self.forward_windows(a, b)
        counts = self.cum[a + hi] - self.cum[a + lo]
        densest = self.densest(s, e, counts)
        if self.mode == "earliest":
            seg = self.code[a:b]
            return [earliest_all(key, seg, self.ts[a:b], counts, lo + a, hi + a, self.terms)]
        return self.max_total(s, densest)

    def forward_windows(self, a: int, b: int) -> tuple[I64, I64, I64]:
        """For rows `a..b-1` (whole entities): the composite key, and per row its forward
        window `[lo, hi)` in chunk positions: `lo` the first row with its (entity, instant),
        `hi` the first row of its entity at or after its instant + window."""
        key = run_ids(self.code[a:b])
        key *= self.stride
        key += self.ts[a:b]
        key -= self.t0
        lo = np.arange(b - a, dtype=np.int64)
        lo *= run_start_mask(key)
        np.maximum.accumulate(lo, out=lo)
        hi = forward_ends(key, self.terms.window_us)
        return key, lo, hi

    def densest(self, s: int, e: int, counts: I64) -> I64:
        """Per entity of `[s, e)`: the most posts in one window (kept in `maxima`) and the
        instant of its first access whose window holds that many (kept in `max_start`)."""
        a = int(self.starts[s])
        local = self.starts[s:e] - a
        densest = np.maximum.reduceat(counts, local)
        self.maxima[s:e] = densest
        hits = np.flatnonzero(counts == np.repeat(densest, self.ends[s:e] - self.starts[s:e]))
        entity_of_hit = np.searchsorted(local, hits, side="right") - 1
        first_hit = hits[run_start_mask(entity_of_hit)]
        self.max_start[s:e] = self.ts[a + first_hit]
        return densest

    def max_total(self, s: int, densest: I64) -> list[_Windows]:
        """Mode `max_total`: the pure rule per over-line entity of the chunk from `s`."""
        wins: list[_Windows] = []
        for k in np.flatnonzero(densest > self.terms.threshold).tolist():
            sa, sb = int(self.starts[s + k]), int(self.ends[s + k])
            spans = max_total_windows(self.ts[sa:sb], self.posts[sa:sb], self.terms)
            if spans:
                wins.append(
                    (
                        np.full(len(spans), int(self.code[sa]), dtype=np.int64),
                        np.array([x.start_us for x in spans], dtype=np.int64),
                        np.array([x.lo + sa for x in spans], dtype=np.int64),
                        np.array([x.hi + sa for x in spans], dtype=np.int64),
                        np.array([x.posts for x in spans], dtype=np.int64),
                    )
                )
        return wins


def _concatenated(wins: list[_Windows]) -> _Windows:
    """The windows of every chunk as one set of arrays, in the order given."""
    if not wins:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z, z, z
    w_code, w_start, w_lo, w_hi, w_posts = (np.concatenate(x) for x in zip(*wins, strict=True))
    return w_code, w_start, w_lo, w_hi, w_posts


def in_threads(fn: Callable[[_A], _T], items: Sequence[_A]) -> list[_T]:
    """`fn(item)` for every item, two at a time (NumPy's sorts and ufuncs, Arrow's kernels
    and SHA-256 release the GIL), results in the order given; one item runs here."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(fn, items))
