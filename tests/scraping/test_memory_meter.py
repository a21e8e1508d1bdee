"""The in-process meter's own rules, fed per-(entity, bucket) rows directly: the key span,
the bucket cap, compaction, late rows, and entity codes the batch tests do not reach."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import overload

import numpy as np
import pytest

from consentry.scraping.meter import Alert, Bounds
from consentry.scraping.meter.memory import MemoryMeter
from consentry.scraping.meter.rule import EXACT_TOTAL, bucket_cap
from consentry.scraping.rules import Terms

MIN = 60_000_000
TERMS = Terms(100, 10 * MIN, Decimal("15000"), "USD", "pro_rata")  # a span of 10 buckets
HALF_KSPAN = MemoryMeter._KSPAN >> 1


class _Names(Sequence[str]):
    """A registry of `size` entity names `e0`, `e1`, ... built only when read."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.size))]
        if not 0 <= index < self.size:
            raise IndexError(index)
        return f"e{index}"


def _add(
    meter: MemoryMeter,
    names: Sequence[str],
    codes: Sequence[int] | np.ndarray,
    buckets: Sequence[int] | np.ndarray,
    posts: Sequence[int] | np.ndarray,
) -> tuple[list[Bounds], list[Alert]]:
    """One batch of rows sorted by (code, bucket); an entity's latest instant is the start
    of its newest bucket in the batch."""
    c = np.asarray(codes, dtype=np.int64)
    b = np.asarray(buckets, dtype=np.int64)
    first = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    newest = np.maximum.reduceat(b, first) * meter.bucket_us
    latest = np.repeat(newest, np.diff(np.r_[first, len(c)]))
    bounds, alerts = meter.add(names, c, b, np.asarray(posts, dtype=np.int64), latest)
    return list(bounds), alerts


def _window(posts: np.ndarray, top: int, span: int = 10) -> tuple[int, int]:
    """(lower, upper) of consecutive buckets 0.. holding `posts`, at bucket `top`."""
    upper = int(posts[top - span : top + 1].sum())
    return upper - int(posts[top - span]), upper


def test_compaction_drops_only_buckets_that_left_the_window_once_the_store_has_doubled() -> None:
    """Buckets older than an entity's floor are dropped when the store holds more than
    max(2 x its size after the last compaction, 65,536) keys; the floor bucket stays.
    The first bucket is half the key span, so the meter's key base is exactly 0."""
    meter = MemoryMeter(TERMS, MIN)
    names = [f"e{i}" for i in range(70_003)]
    start = HALF_KSPAN
    posts = np.arange(70_013, dtype=np.int64) % 7 + 1  # neighbouring buckets differ
    # 65,536 keys: not more than 65,536, so nothing is dropped yet.
    _add(meter, names, [0] * 65_536, start + np.arange(65_536), posts[:65_536])
    assert len(meter._keys) == 65_536
    # One more key: e0 keeps its 11 window buckets (floor included), e1 its one.
    _add(meter, names, [1], [start], [5])
    assert len(meter._keys) == 12
    b = meter.bounds("e0")
    assert b is not None
    assert (b.lower, b.upper) == _window(posts, 65_535)
    # 70,000 new entities in one batch (the state grows past 1,024 at once); all live.
    codes = np.arange(2, 70_002)
    got, _ = _add(meter, names, codes, np.full(70_000, start), codes % 5)
    assert [(x.entity, x.upper) for x in got[-2:]] == [("e70000", 0), ("e70001", 1)]
    assert len(meter._keys) == 70_012
    # Up to 2 x 70,012 keys nothing is dropped; one more and e70002 keeps 11 buckets.
    _add(meter, names, [70_002] * 70_012, start + np.arange(70_012), posts[:70_012])
    assert len(meter._keys) == 140_024
    _add(meter, names, [70_002], [start + 70_012], [posts[70_012]])
    assert len(meter._keys) == 70_012 + 11
    b = meter.bounds("e70002")
    assert b is not None
    assert (b.lower, b.upper) == _window(posts, 70_012)
    b = meter.bounds("e0")
    assert b is not None
    assert (b.lower, b.upper) == _window(posts, 65_535)


def test_compaction_reads_buckets_relative_to_the_key_base() -> None:
    """The same rule with the first bucket at 0 (a key base of -2^33): one batch of 65,537
    buckets keeps the 11 of the window."""
    meter = MemoryMeter(TERMS, MIN)
    posts = np.arange(65_537, dtype=np.int64) % 7 + 1
    _add(meter, ["a"], [0] * 65_537, np.arange(65_537), posts)
    assert len(meter._keys) == 11
    b = meter.bounds("a")
    assert b is not None
    assert (b.lower, b.upper) == _window(posts, 65_536)


def test_the_key_span_reaches_half_of_it_either_side_of_the_first_bucket() -> None:
    """Buckets are stored relative to the first one: a row's floor (its bucket minus the
    span) may go down to first - 2^33, its bucket up to first + 2^33 - 1; both extremes in
    one batch, the far one first, keep their own bounds. One bucket further either way is
    refused."""
    names = ["first", "high", "low"]
    meter = MemoryMeter(TERMS, MIN)
    _add(meter, names, [0], [0], [1])
    got, _ = _add(meter, names, [1, 2], [HALF_KSPAN - 1, -HALF_KSPAN + 10], [3, 4])
    assert [(b.entity, b.lower, b.upper) for b in got] == [("high", 3, 3), ("low", 4, 4)]
    for bucket in (HALF_KSPAN, -HALF_KSPAN + 9):
        refusing = MemoryMeter(TERMS, MIN)
        _add(refusing, names, [0], [0], [1])
        with pytest.raises(ValueError, match="too far"):
            _add(refusing, names, [1], [bucket], [1])


def test_buckets_near_the_int64_limit_are_keyed_from_the_first_bucket() -> None:
    """One-microsecond buckets near 2^63: keys are offsets from the first bucket, so the
    batch's (entity, bucket) order holds however large the buckets are."""
    meter = MemoryMeter(TERMS, 1)
    far = 2**63 - 2**33
    got, _ = _add(meter, ["a", "b"], [0, 1], [far, far], [3, 4])
    assert [(b.entity, b.upper) for b in got] == [("a", 3), ("b", 4)]


def test_a_bucket_saturates_at_the_cap_across_batches() -> None:
    """A bucket holds at most `bucket_cap` posts (rule 6): a later batch adds only what
    still fits beside what the bucket stores; other buckets are unaffected."""
    cap = bucket_cap(10)
    meter = MemoryMeter(TERMS, MIN)
    names = ["a"]
    _add(meter, names, [0], [0], [cap - 5])
    got, _ = _add(meter, names, [0], [0], [20])
    assert got[0].upper == cap
    got, _ = _add(meter, names, [0, 0], [0, 1], [1, 7])
    assert got[0].upper == cap + 7


def test_alert_levels_are_exact_integers_near_the_largest_counts() -> None:
    """At counts near 2^52 (`bucket_cap`), 100 x the count is compared as an integer: 80 %
    is not reached 20 posts short of it, where doubles would round the two sides together."""
    cap = bucket_cap(10)
    count = 5 * cap + 3
    threshold = count * 100 // 80 + 1  # count * 100 < threshold * 80, by 20
    meter = MemoryMeter(Terms(threshold, 10 * MIN, Decimal("1"), "USD", "pro_rata"), MIN)
    names = ["a"]
    _, alerts = _add(meter, names, [0] * 5, range(5), [cap] * 5)
    assert [a.level for a in alerts] == [50]
    got, alerts = _add(meter, names, [0], [5], [3])
    assert got[0].upper == count
    assert alerts == []


def test_late_rows_are_counted_across_batches() -> None:
    """Rows whose bucket had left the entity's window (rule 5) are not metered but counted."""
    meter = MemoryMeter(TERMS, MIN)
    names = ["a"]
    _add(meter, names, [0], [20], [1])
    _add(meter, names, [0], [0], [1])
    _add(meter, names, [0, 0], [1, 21], [1, 1])
    assert meter.late == 2
    b = meter.bounds("a")
    assert b is not None
    assert b.upper == 2


def test_an_entity_new_in_a_later_batch_with_a_smaller_code_keeps_the_store_sorted() -> None:
    """A code is a registry index, not an arrival order: an entity first metered after one
    with a larger code is stored before it, and both keep adding to their own buckets."""
    meter = MemoryMeter(TERMS, MIN)
    names = ["a", "b"]
    _add(meter, names, [1], [0], [5])
    _add(meter, names, [0], [0], [3])
    got, _ = _add(meter, names, [0, 1], [1, 1], [1, 2])
    assert [(b.entity, b.upper) for b in got] == [("a", 4), ("b", 7)]
    assert [(b.entity, b.upper) for b in map(meter.bounds, names) if b] == [("a", 4), ("b", 7)]


def test_store_keys_stay_exact_past_two_to_the_nineteen_entities() -> None:
    """Keys are int64 (entity x 2^34 + bucket offset): at entity codes past 2^19 doubles
    could no longer tell neighbouring buckets apart."""
    meter = MemoryMeter(TERMS, MIN)
    code = 1 << 20
    names = _Names(code + 1)
    _add(meter, names, [code], [0], [5])
    _add(meter, names, [code], [1], [7])
    got, _ = _add(meter, names, [code], [11], [0])  # bucket 0 has left; bucket 1 is the floor
    assert [(b.entity, b.lower, b.upper) for b in got] == [(f"e{code}", 0, 7)]


def test_only_metered_entities_have_bounds() -> None:
    """An entity in the registry that no batch metered has no bounds, whether or not its
    code is within the meter's allocated state; `entities` lists the metered ones."""
    meter = MemoryMeter(TERMS, MIN)
    names = _Names(100_000)
    _add(meter, names, [0, 3], [0, 0], [2, 1])
    allocated = len(meter._seen)  # the first code past the meter's state
    assert meter.bounds("e1") is None
    assert meter.bounds(f"e{allocated}") is None
    assert meter.bounds("e99999") is None
    assert meter.bounds("unknown") is None
    assert meter.entities() == ["e0", "e3"]


@pytest.mark.parametrize("span", [0, 1, 10, 1_440, 86_400])
def test_the_bucket_cap_is_the_most_that_keeps_a_full_window_at_most_two_to_the_52(
    span: int,
) -> None:
    """span + 1 full buckets sum to at most EXACT_TOTAL (2^52); one post more per bucket
    would exceed it."""
    cap = bucket_cap(span)
    assert cap * (span + 1) <= EXACT_TOTAL < (cap + 1) * (span + 1)
