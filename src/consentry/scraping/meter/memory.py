"""The in-process meter backend (one process; the default): rules 2-6 of the meter with
array operations."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import count, islice
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from consentry.scraping.arrays import concat_ranges, run_start_mask, run_starts
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

_Mask = npt.NDArray[np.bool_]


class _Runs(NamedTuple):
    """A batch's entity runs (its rows are sorted by entity, then bucket).

    Per run: `first` its first row, `entity` its entity code, `is_new` whether the entity
    had no state before the batch. Per row: `run` its run, `late` whether its bucket had
    already left the entity's window (`counted` the others), `top` the entity's newest
    bucket once the row is added and `floor` the oldest bucket of that window.
    """

    first: I64
    entity: I64
    is_new: _Mask
    run: I64
    late: _Mask
    counted: _Mask
    top: I64
    floor: I64


class _Stored(NamedTuple):
    """The stored buckets of a batch's known entities, copied out of the store.

    `at`: their positions in the store, entity run after entity run; `keys`: their keys;
    `cum`: prefix sums of their posts (`cum[i]`: the posts of copied items before i). Per
    row, `row_lo` and `row_hi` bound its entity's run in the copy (empty for a new entity).
    `known`: the runs whose entity was stored; `store_hi`: where their runs end in the store.
    """

    at: I64
    keys: I64
    cum: I64
    row_lo: I64
    row_hi: I64
    known: I64
    store_hi: I64


class _Slots(NamedTuple):
    """Where each row's bucket is in the copy (`_Stored`): `keys` its store key, `at` the
    first copied key at or after it within its entity's run, `inside` whether `at` is in
    that run, `hit` whether the row counts and its bucket is stored (at `at`)."""

    keys: I64
    at: I64
    inside: _Mask
    hit: _Mask


class MemoryMeter:
    """In-process bucket store (one process; the default), updated with array operations.

    State: per entity (dense ids) its top bucket, total, latest instant and armed alert
    level; the buckets of all entities in one array sorted by (entity, bucket). Buckets that
    fall out of an entity's span are ignored by every query (the span only moves forward)
    and dropped when the array has doubled since the last compaction.
    """

    _KSPAN = 1 << 34
    """Store keys an entity spans: key = entity x _KSPAN + bucket - the meter's key base."""

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

    def _key(self, entity: I64, bucket: I64) -> I64:
        rel = bucket - (self._kbase or 0)
        if len(rel) and (int(rel.min()) < 0 or int(rel.max()) >= self._KSPAN):
            raise ValueError("access instant too far from the meter's first access")
        key: I64 = entity * self._KSPAN + rel
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
           with their prefix sums (`_stored_runs`), and each row's stored posts from its
           floor on come from a search in that small copy (`_rolling_bounds`).
        2. The batch's own earlier rows of the entity are added with prefix sums over
           the batch (`_rolling_bounds`); the armed alert level is a running maximum that
           restarts at each row under 50 % (`_armed_levels`, `_raise_alerts`).
        3. New (entity, bucket) keys are inserted at the positions found in step 1
           (`_merge`).
        """
        if len(codes) == 0:
            return [], []
        if self._kbase is None:
            self._kbase = int(buckets.min()) - (self._KSPAN >> 1)
        self._registry = names
        runs = self._entity_runs(codes, buckets)
        stored = self._stored_runs(runs)
        slots = self._slots(stored, codes, buckets, runs.counted)
        posts = self._capped(stored, slots, posts)
        upper, lower = self._rolling_bounds(runs, stored, codes, buckets, posts)
        at_us = np.minimum(latest, (buckets + 1) * self.bucket_us - 1)
        raised, last_counted = self._raise_alerts(names, codes, runs, upper, lower, at_us)
        self.late += int(runs.late.sum())
        self._keep_entity_state(runs, codes, latest, upper, last_counted)
        self._merge(runs, stored, slots, posts)
        touched = codes[last_counted]
        out = BatchBounds(
            names, touched, self._latest[touched], lower[last_counted], upper[last_counted]
        )
        return out, raised

    def _entity_runs(self, codes: I64, buckets: I64) -> _Runs:
        """The batch's entity runs and each row's window (`_Runs`); registers new entities.

        1. An entity seen before keeps its stored top bucket; a new one starts at its first
           row's bucket.
        2. A row whose bucket is older than the entity's oldest kept bucket (that top
           minus the span) is late and not counted (rule 5).
        3. A row's top is the larger of the stored top and its bucket (rows of an entity
           come in bucket order) and its window's floor is that top minus the span.
        """
        first = run_starts(codes)
        run = np.repeat(np.arange(len(first)), np.diff(np.r_[first, len(codes)]))
        entity = codes[first]
        self._grow(int(entity.max()) + 1)
        is_new = ~self._seen[entity]
        self._seen[entity] = True
        old_top = np.where(is_new, buckets[first], self._top[entity])[run]
        late = buckets < old_top - self.span
        top = np.maximum(old_top, buckets)
        return _Runs(first, entity, is_new, run, late, ~late, top, top - self.span)

    def _stored_runs(self, runs: _Runs) -> _Stored:
        """The stored buckets of the batch's known entities (`_Stored`; `add`, step 1): two
        binary searches per entity bound its run in the sorted store, and the runs are
        copied with the prefix sums of their posts."""
        kspan = self._KSPAN
        known = np.flatnonzero(~runs.is_new)
        store_lo = np.searchsorted(self._keys, runs.entity[known] * kspan, "left")
        store_hi = np.searchsorted(self._keys, runs.entity[known] * kspan + kspan, "left")
        at = concat_ranges(store_lo, store_hi)
        size = store_hi - store_lo
        copy_lo = np.cumsum(size) - size
        cum = np.zeros(len(at) + 1, dtype=np.int64)
        np.cumsum(self._posts[at], out=cum[1:])
        run_lo = np.zeros(len(runs.first), dtype=np.int64)
        run_hi = np.zeros(len(runs.first), dtype=np.int64)
        run_lo[known], run_hi[known] = copy_lo, copy_lo + size
        return _Stored(at, self._keys[at], cum, run_lo[runs.run], run_hi[runs.run], known, store_hi)

    @staticmethod
    def _search(stored: _Stored, keys: I64) -> I64:
        """Per row, the index in the copy of the first stored key >= `keys[row]`, kept
        within the row's entity run."""
        at: I64 = np.clip(np.searchsorted(stored.keys, keys), stored.row_lo, stored.row_hi)
        return at

    def _slots(self, stored: _Stored, codes: I64, buckets: I64, counted: _Mask) -> _Slots:
        """Each row's bucket as stored (`_Slots`): where step 3 adds to it or inserts it."""
        keys = self._key(codes, buckets)
        at = self._search(stored, keys)
        inside = at < stored.row_hi
        hit = counted & inside
        hit[hit] = stored.keys[at[hit]] == keys[hit]
        return _Slots(keys, at, inside, hit)

    def _capped(self, stored: _Stored, slots: _Slots, posts: I64) -> I64:
        """The posts each row adds: a bucket holds at most `bucket_cap` posts (rule 6), so a
        row adds what fits beside the posts its bucket already stores."""
        held = np.zeros(len(posts), dtype=np.int64)
        held[slots.hit] = self._posts[stored.at[slots.at[slots.hit]]]
        capped: I64 = np.minimum(posts, self.cap - held)
        return capped

    def _rolling_bounds(
        self, runs: _Runs, stored: _Stored, codes: I64, buckets: I64, posts: I64
    ) -> tuple[I64, I64]:
        """Each row's (upper, lower) bound right after it is added (rule 3).

        1. The upper bound counts the buckets from the row's floor to its top, the lower
           bound leaves the floor bucket out (it may have partly left the window).
        2. Stored part: prefix sums of the copy between the first stored key at or after
           the floor (after it, for the lower bound) and the end of the entity's run.
        3. Batch part: the counted rows of the same entity up to this one with bucket >= the
           floor (> the floor, for the lower bound), from prefix sums over the batch and
           searches of (run, bucket) keys.
        """
        kbase = self._kbase or 0
        at_floor = self._search(stored, self._key(codes, runs.floor))
        past_floor = self._search(stored, self._key(codes, runs.floor + 1))
        stored_upper = stored.cum[stored.row_hi] - stored.cum[at_floor]
        stored_floor = stored.cum[past_floor] - stored.cum[at_floor]
        batch_cum = np.zeros(len(posts) + 1, dtype=np.int64)
        np.cumsum(np.where(runs.counted, posts, 0), out=batch_cum[1:])
        run_key = runs.run * (self._KSPAN * 2)
        batch_keys = run_key + (buckets - kbase)
        batch_at_floor = np.searchsorted(batch_keys, run_key + (runs.floor - kbase), "left")
        batch_past_floor = np.searchsorted(batch_keys, run_key + (runs.floor + 1 - kbase), "left")
        through = np.arange(1, len(posts) + 1)
        upper = stored_upper + batch_cum[through] - batch_cum[batch_at_floor]
        batch_floor = (
            batch_cum[np.minimum(batch_past_floor, through)]
            - batch_cum[np.minimum(batch_at_floor, through)]
        )
        lower: I64 = upper - stored_floor - batch_floor
        return upper, lower

    def _armed_levels(self, runs: _Runs, counted: I64, levels: I64) -> tuple[I64, I64, I64]:
        """The armed alert level before and after each counted row (`levels`: the rows'
        alert levels), and the index of each entity's first counted row among them.

        1. Partitions start at each entity's first counted row and at each row under 50 %.
        2. The armed level after a row is the running maximum of the levels in its
           partition; in an entity's first partition, unless that starts under 50 %, the
           level the entity was armed at before the batch joins the maximum.
        3. Before an entity's first row it is armed at its stored level.
        """
        run = runs.run[counted]
        is_start = run_start_mask(run)
        starts = np.flatnonzero(is_start)
        start_of = np.cumsum(is_start) - 1
        part = np.cumsum((levels == 0) | is_start)
        armed_at_start = np.where(runs.is_new, 0, self._level[runs.entity])[run]
        carries = (part == part[starts][start_of]) & (levels[starts][start_of] > 0)
        value = np.where(carries, np.maximum(levels, armed_at_start), levels)
        # Levels are below 1000: adding 1000 x the partition restarts the running maximum.
        after = np.maximum.accumulate(part * 1000 + value) - part * 1000
        before = np.r_[0, after[:-1]]
        before[starts] = armed_at_start[starts]
        return before, after, starts

    def _raise_alerts(
        self, names: Sequence[str], codes: I64, runs: _Runs, upper: I64, lower: I64, at_us: I64
    ) -> tuple[list[Alert], I64]:
        """The alerts the counted rows raise (rule 4), recorded; returns them and the last
        counted row of each entity with one.

        1. A row's level is the highest of ALERT_LEVELS its upper bound reaches.
        2. It raises every level above the armed level before it up to its own, confirmed
           when its lower bound reaches that level too (`_armed_levels`).
        3. Each entity keeps the armed level after its last counted row.
        """
        level = alert_levels(upper, self.terms.threshold)
        counted = np.flatnonzero(runs.counted)
        raised: list[Alert] = []
        last_counted = np.zeros(0, dtype=np.int64)
        if len(counted):
            counted_level = level[counted]
            before, after, starts = self._armed_levels(runs, counted, counted_level)
            threshold = self.terms.threshold
            for i in np.flatnonzero(counted_level > before).tolist():
                row = int(counted[i])
                row_upper, row_lower = int(upper[row]), int(lower[row])
                for alert_level in ALERT_LEVELS:
                    if before[i] < alert_level <= counted_level[i]:
                        confirmed = reaches(row_lower, alert_level, threshold)
                        raised.append(
                            Alert(
                                names[codes[row]],
                                alert_level,
                                int(at_us[row]),
                                row_lower,
                                row_upper,
                                confirmed,
                            )
                        )
            last = np.r_[starts[1:], len(counted)] - 1
            last_counted = counted[last]
            self._level[codes[last_counted]] = after[last]
        self._alerts += raised
        return raised, last_counted

    def _keep_entity_state(
        self, runs: _Runs, codes: I64, latest: I64, upper: I64, last_counted: I64
    ) -> None:
        """Each entity's state after the batch: a new entity's latest instant; for an entity
        with counted rows, the top bucket and total after its last one, and the later of
        its stored and its batch's latest instant."""
        self._latest[runs.entity[runs.is_new]] = latest[runs.first][runs.is_new]
        if len(last_counted):
            entity = codes[last_counted]
            self._top[entity] = runs.top[last_counted]
            self._total[entity] = upper[last_counted]
            self._latest[entity] = np.maximum(self._latest[entity], latest[last_counted])

    def _merge(self, runs: _Runs, stored: _Stored, slots: _Slots, posts: I64) -> None:
        """Add the counted rows to the store (`add`, step 3), compacting when it has doubled.

        1. A row whose bucket is stored adds its posts there.
        2. Any other counted row is inserted before the first larger key of its entity's
           run, or at the run's end (a new entity's empty run is where its keys belong).
        """
        self._posts[stored.at[slots.at[slots.hit]]] += posts[slots.hit]
        run_end = np.zeros(len(runs.first), dtype=np.int64)
        run_end[stored.known] = stored.store_hi
        new = runs.entity[runs.is_new]
        run_end[runs.is_new] = np.searchsorted(self._keys, new * self._KSPAN, "left")
        put = runs.counted & ~slots.hit
        inside = slots.inside
        pos = np.where(
            inside,
            stored.at[np.where(inside, slots.at, 0)] if len(stored.at) else 0,
            run_end[runs.run],
        )
        self._insert(pos[put], slots.keys[put], posts[put])
        if len(self._keys) > max(2 * self._compacted, 65_536):
            self._compact()

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
        entity = self._keys // self._KSPAN
        bucket = self._keys % self._KSPAN + (self._kbase or 0)
        live = bucket >= self._top[entity] - self.span
        self._keys, self._posts = self._keys[live], self._posts[live]
        self._compacted = len(self._keys)

    def bounds(self, entity: str) -> Bounds | None:
        if len(self._ids) < len(self._registry):
            start = len(self._ids)
            self._ids.update(zip(islice(self._registry, start, None), count(start)))
        code = self._ids.get(entity)
        if code is None or code >= len(self._seen) or not self._seen[code]:
            return None
        top = int(self._top[code])
        total = int(self._total[code])
        key = code * self._KSPAN + (top - self.span - (self._kbase or 0))
        pos = int(np.searchsorted(self._keys, key, side="left"))
        oldest = int(self._posts[pos]) if pos < len(self._keys) and self._keys[pos] == key else 0
        return Bounds(entity, int(self._latest[code]), total - oldest, total)

    def alerts(self) -> list[Alert]:
        return list(self._alerts)

    def entities(self) -> list[str]:
        return sorted(map(self._registry.__getitem__, np.flatnonzero(self._seen).tolist()))
