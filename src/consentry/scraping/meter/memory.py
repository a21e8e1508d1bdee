"""The in-process meter backend (one process; the default): rules 2-6 of the meter with
array operations."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import count, islice

import numpy as np

from consentry.scraping.arrays import concat_ranges
from consentry.scraping.meter.rule import (
    ALERT_LEVELS,
    I64,
    Alert,
    BatchBounds,
    Bounds,
    alert_levels,
    bucket_cap,
    reaches,
)
from consentry.scraping.rules import Terms

__all__ = ["MemoryMeter"]


class MemoryMeter:
    """In-process bucket store (one process; the default), updated with array operations.

    State: per entity (dense ids) its top bucket, total, latest instant and armed alert
    level; the buckets of all entities in one array sorted by (entity, bucket). Buckets that
    fall out of an entity's span are ignored by every query (the span only moves forward)
    and dropped when the array has doubled since the last compaction.
    """

    _KSPAN = 1 << 34

    def __init__(self, terms: Terms, bucket_us: int) -> None:
        self.terms = terms
        self.bucket_us = bucket_us
        self.span = terms.window_us // bucket_us
        self.cap = bucket_cap(self.span)
        # The meter's entity registry (the `names` of the latest batch) and a name -> code
        # index of it, extended only when `bounds` asks (a batch does no per-name work).
        self._registry: Sequence[str] = []
        self._ids: dict[str, int] = {}
        self._top = np.zeros(0, dtype=np.int64)
        self._total = np.zeros(0, dtype=np.int64)
        self._latest = np.zeros(0, dtype=np.int64)
        self._level = np.zeros(0, dtype=np.int64)
        self._seen = np.zeros(0, dtype=bool)
        self._keys = np.zeros(0, dtype=np.int64)
        self._posts = np.zeros(0, dtype=np.int64)
        self._compacted = 0
        self._kbase: int | None = None
        self._alerts: list[Alert] = []
        self.late = 0

    def _key(self, ent: I64, bucket: I64) -> I64:
        rel = bucket - (self._kbase or 0)
        if len(rel) and (int(rel.min()) < 0 or int(rel.max()) >= self._KSPAN):
            raise ValueError("access instant too far from the meter's first access")
        key: I64 = ent * self._KSPAN + rel
        return key

    def _grow(self, n: int) -> None:
        old = len(self._top)
        if n <= old:
            return
        size = max(n, 2 * old, 1024)
        for name in ("_top", "_total", "_latest", "_level", "_seen"):
            arr = np.zeros(size, dtype=bool if name == "_seen" else np.int64)
            arr[:old] = getattr(self, name)[:old]
            setattr(self, name, arr)

    def add(
        self, names: Sequence[str], codes: I64, buckets: I64, posts: I64, latest: I64
    ) -> tuple[Sequence[Bounds], list[Alert]]:
        """Add per-(entity, bucket) sums (see `MeterBackend`); bounds and alerts are
        evaluated after every row, as if the rows were added one by one (rules 2-6, held
        to that plain reading by `test_vectorised_meter_equals_row_by_row`).

        1. Only the stored buckets of the batch's known entities are read: two binary
           searches per entity find its run in the sorted store, the runs are gathered
           with their prefix sums, and each row's stored posts from its floor on come
           from a search in that small copy.
        2. The batch's own earlier rows of the entity are added with prefix sums over
           the batch; the armed alert level is a running maximum that restarts at each
           row under 50 %.
        3. New (entity, bucket) keys are inserted at the positions found in step 1.
        """
        if len(codes) == 0:
            return [], []
        span = self.span
        if self._kbase is None:
            self._kbase = int(buckets.min()) - (self._KSPAN >> 1)
        self._registry = names
        ent = codes
        first = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        seg = np.repeat(np.arange(len(first)), np.diff(np.r_[first, len(codes)]))
        ent_first = ent[first]
        self._grow(int(ent_first.max()) + 1)
        is_new = ~self._seen[ent_first]
        self._seen[ent_first] = True
        old_top = np.where(is_new, buckets[first], self._top[ent_first])[seg]
        late = buckets < old_top - span
        ok = ~late
        top = np.maximum(old_top, buckets)
        floor = top - span
        # Stored part (step 1): the runs of the known entities, gathered.
        kspan = self._KSPAN
        known = np.flatnonzero(~is_new)
        run_lo = np.searchsorted(self._keys, ent_first[known] * kspan, "left")
        run_hi = np.searchsorted(self._keys, ent_first[known] * kspan + kspan, "left")
        gather = concat_ranges(run_lo, run_hi)
        size = run_hi - run_lo
        sub_at = np.cumsum(size) - size
        sub_keys = self._keys[gather]
        sub_cum = np.zeros(len(gather) + 1, dtype=np.int64)
        np.cumsum(self._posts[gather], out=sub_cum[1:])
        run_s = np.zeros(len(first), dtype=np.int64)
        run_t = np.zeros(len(first), dtype=np.int64)
        run_s[known], run_t[known] = sub_at, sub_at + size
        s_row, t_row = run_s[seg], run_t[seg]

        def find(bucket: I64) -> I64:
            """Index in the gathered copy of the first stored key >= (entity, bucket)."""
            at: I64 = np.clip(np.searchsorted(sub_keys, self._key(ent, bucket)), s_row, t_row)
            return at

        # Each row's bucket as stored (step 3 merges there); a bucket holds at most
        # `bucket_cap` posts, so a row adds what fits (`bucket_cap`).
        keys = self._key(ent, buckets)
        at_bucket = find(buckets)
        inside = at_bucket < t_row
        hit = ok & inside
        hit[hit] = sub_keys[at_bucket[hit]] == keys[hit]
        held = np.zeros(len(posts), dtype=np.int64)
        held[hit] = self._posts[gather[at_bucket[hit]]]
        posts = np.minimum(posts, self.cap - held)
        at_floor = find(floor)
        stored = sub_cum[t_row] - sub_cum[at_floor]
        stored_floor = sub_cum[find(floor + 1)] - sub_cum[at_floor]
        # Batch part: rows of the same entity up to this one with bucket >= floor.
        q = np.where(ok, posts, 0)
        bcum = np.zeros(len(q) + 1, dtype=np.int64)
        np.cumsum(q, out=bcum[1:])
        bkey = seg * (self._KSPAN * 2) + (buckets - self._kbase)
        lo = np.searchsorted(bkey, seg * (self._KSPAN * 2) + (floor - self._kbase), "left")
        mid = np.searchsorted(bkey, seg * (self._KSPAN * 2) + (floor + 1 - self._kbase), "left")
        row = np.arange(len(q))
        total = stored + bcum[row + 1] - bcum[lo]
        lower = (
            total - stored_floor - (bcum[np.minimum(mid, row + 1)] - bcum[np.minimum(lo, row + 1)])
        )
        at = np.minimum(latest, (buckets + 1) * self.bucket_us - 1)
        # Alert levels: armed = running max of the level since the last row under 50 %
        # (re-arm), starting from the entity's armed level.
        level = alert_levels(total, self.terms.threshold)
        checked = np.flatnonzero(ok)
        raised: list[Alert] = []
        last_ok = np.zeros(0, dtype=np.int64)
        if len(checked):
            c_seg = seg[checked]
            c_level = level[checked]
            start_of = np.r_[True, c_seg[1:] != c_seg[:-1]]
            starts = np.flatnonzero(start_of)
            group = np.cumsum(start_of) - 1
            # Partitions restart at each entity's first row and at each row under 50 %.
            part = np.cumsum((c_level == 0) | start_of)
            initial = np.where(is_new, 0, self._level[ent[first]])[c_seg]
            carries = (part == part[starts][group]) & (c_level[starts][group] > 0)
            value = np.where(carries, np.maximum(c_level, initial), c_level)
            armed = np.maximum.accumulate(part * 1000 + value) - part * 1000
            prev = np.r_[0, armed[:-1]]
            prev[starts] = initial[starts]
            threshold = self.terms.threshold
            for i in np.flatnonzero(c_level > prev).tolist():
                r = int(checked[i])
                up, low_b = int(total[r]), int(lower[r])
                for lv in ALERT_LEVELS:
                    if prev[i] < lv <= c_level[i]:
                        confirmed = reaches(low_b, lv, threshold)
                        raised.append(Alert(names[codes[r]], lv, int(at[r]), low_b, up, confirmed))
            last = np.r_[starts[1:], len(checked)] - 1
            last_ok = checked[last]
            self._level[ent[last_ok]] = armed[last]
        self._alerts += raised
        self.late += int(late.sum())
        # New state per entity: the values after its last row that counted.
        fresh = ent[first][is_new]
        self._latest[fresh] = latest[first][is_new]
        if len(last_ok):
            e = ent[last_ok]
            self._top[e] = top[last_ok]
            self._total[e] = total[last_ok]
            self._latest[e] = np.maximum(self._latest[e], latest[last_ok])
        # Merge the counted rows (step 3): a key found in its entity's run is added to,
        # else inserted before the first larger key of the run, or at the run's end (a
        # new entity's empty run is where its keys belong).
        self._posts[gather[at_bucket[hit]]] += posts[hit]
        run_end = np.zeros(len(first), dtype=np.int64)
        run_end[known] = run_hi
        run_end[is_new] = np.searchsorted(self._keys, ent_first[is_new] * kspan, "left")
        put = ok & ~hit
        pos = np.where(
            inside, gather[np.where(inside, at_bucket, 0)] if len(gather) else 0, run_end[seg]
        )
        self._insert(pos[put], keys[put], posts[put])
        if len(self._keys) > max(2 * self._compacted, 65_536):
            self._compact()
        out = BatchBounds(
            names, ent[last_ok], self._latest[ent[last_ok]], lower[last_ok], total[last_ok]
        )
        return out, raised

    def _insert(self, pos: I64, keys: I64, posts: I64) -> None:
        """Insert sorted keys at their positions (one mask for both arrays, where two
        `np.insert` would build it twice)."""
        dest = pos + np.arange(len(pos))
        kept = np.ones(len(self._keys) + len(dest), dtype=bool)
        kept[dest] = False
        for name, add in (("_keys", keys), ("_posts", posts)):
            merged = np.empty(len(kept), dtype=np.int64)
            merged[kept] = getattr(self, name)
            merged[dest] = add
            setattr(self, name, merged)

    def _compact(self) -> None:
        ent = self._keys // self._KSPAN
        bucket = self._keys % self._KSPAN + (self._kbase or 0)
        live = bucket >= self._top[ent] - self.span
        self._keys, self._posts = self._keys[live], self._posts[live]
        self._compacted = len(self._keys)

    def bounds(self, entity: str) -> Bounds | None:
        if len(self._ids) < len(self._registry):
            start = len(self._ids)
            self._ids.update(zip(islice(self._registry, start, None), count(start)))
        e = self._ids.get(entity)
        if e is None or e >= len(self._seen) or not self._seen[e]:
            return None
        top = int(self._top[e])
        total = int(self._total[e])
        key = e * self._KSPAN + (top - self.span - (self._kbase or 0))
        pos = int(np.searchsorted(self._keys, key, side="left"))
        oldest = int(self._posts[pos]) if pos < len(self._keys) and self._keys[pos] == key else 0
        return Bounds(entity, int(self._latest[e]), total - oldest, total)

    def alerts(self) -> list[Alert]:
        return list(self._alerts)

    def entities(self) -> list[str]:
        return sorted(map(self._registry.__getitem__, np.flatnonzero(self._seen).tolist()))
