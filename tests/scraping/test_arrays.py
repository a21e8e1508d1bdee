"""The scraping kernels' array helpers (`consentry.scraping.arrays`) against plain Python."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from consentry.scraping.arrays import (
    BitLayout,
    concat_ranges,
    run_bounds,
    run_ids,
    run_lasts,
    run_start_mask,
    run_starts,
    with_room,
)

# Few distinct values, so that runs of equal items (ties) are common.
tied = st.lists(st.integers(-3, 3), max_size=40)


def plain_runs(items: list[int]) -> list[tuple[int, int]]:
    """`[start, stop)` of each run of equal consecutive items, by a loop."""
    runs: list[tuple[int, int]] = []
    for i, value in enumerate(items):
        if runs and items[runs[-1][0]] == value:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


@settings(max_examples=200)
@given(tied, st.sampled_from([np.int64, np.int32, np.uint64, np.float64]))
@example([], np.int64)
@example([5], np.int64)
@example([2, 2, 2], np.int32)
@example([1, 2, 1], np.int64)
def test_runs_match_a_plain_loop(items: list[int], dtype: type[np.generic]) -> None:
    values = [abs(v) for v in items] if dtype is np.uint64 else items
    x = np.array(values, dtype=dtype)
    runs = plain_runs(values)
    starts = [a for a, _ in runs]
    assert run_starts(x).tolist() == starts
    assert run_start_mask(x).tolist() == [i in starts for i in range(len(values))]
    assert run_bounds(x).tolist() == [*starts, len(values)]
    assert run_lasts(x).tolist() == [b - 1 for _, b in runs]
    assert run_ids(x).tolist() == [k for k, (a, b) in enumerate(runs) for _ in range(a, b)]
    for result in (run_starts(x), run_bounds(x), run_lasts(x), run_ids(x)):
        assert result.dtype == np.int64


@settings(max_examples=100)
@given(tied)
def test_runs_match_the_idioms_they_replace(items: list[int]) -> None:
    x = np.array(items, dtype=np.int64)
    if len(x):
        assert run_starts(x).tolist() == np.flatnonzero(np.r_[True, x[1:] != x[:-1]]).tolist()
        assert run_bounds(x).tolist() == (
            np.flatnonzero(np.r_[True, x[1:] != x[:-1], True]).tolist()
        )
        assert run_lasts(x).tolist() == np.flatnonzero(np.r_[x[1:] != x[:-1], True]).tolist()
    assert run_ids(x).tolist() == np.cumsum(np.r_[0, x[1:] != x[:-1]]).tolist()[: len(x)]


def test_run_helpers_on_a_view_leave_it_alone() -> None:
    base = np.array([9, 1, 1, 2, 2, 2, 9], dtype=np.int64)
    view = base[1:6]
    assert run_bounds(view).tolist() == [0, 2, 5]
    assert base.tolist() == [9, 1, 1, 2, 2, 2, 9]


# --------------------------------------------------------------------------- bit layout

widths_3 = st.lists(st.integers(0, 63), min_size=1, max_size=4).filter(lambda w: sum(w) <= 64)


@st.composite
def packed_fields(draw: st.DrawFn) -> tuple[tuple[int, ...], list[list[int]]]:
    """Field widths that fit in 64 bits and rows of values within them, the extremes
    (0 and 2**width - 1) drawn often."""
    widths = tuple(draw(widths_3))
    n = draw(st.integers(0, 12))
    columns = [
        draw(
            st.lists(
                st.one_of(st.sampled_from([0, (1 << w) - 1]), st.integers(0, max((1 << w) - 1, 0))),
                min_size=n,
                max_size=n,
            )
        )
        for w in widths
    ]
    return widths, columns


def plain_pack(widths: tuple[int, ...], row: tuple[int, ...]) -> int:
    key = 0
    for width, value in zip(widths, row, strict=True):
        key = (key << width) | value
    return key


@settings(max_examples=300)
@given(packed_fields())
@example(((64 - 63, 63), [[1, 0], [(1 << 63) - 1, 0]]))  # all 64 bits set
@example(((31, 26, 7), [[(1 << 31) - 1], [(1 << 26) - 1], [127]]))  # the access key
@example(((0, 64 - 1), [[0, 0], [5, (1 << 63) - 1]]))  # a field of width 0
@example(((63,), [[(1 << 63) - 1, 0, 1]]))  # one field
def test_pack_unpack_round_trip(case: tuple[tuple[int, ...], list[list[int]]]) -> None:
    widths, columns = case
    layout = BitLayout(widths)
    fields = [np.array(c, dtype=np.int64) for c in columns]
    before = [f.copy() for f in fields]
    key = layout.pack(*fields)
    assert key.dtype == np.uint64
    rows = list(zip(*columns, strict=True))
    assert key.tolist() == [plain_pack(widths, row) for row in rows]
    assert all((f == b).all() for f, b in zip(fields, before, strict=True))  # untouched
    # Sorting the keys sorts the rows by the fields in order.
    order = np.argsort(key, kind="stable")
    assert [rows[i] for i in order] == sorted(rows)
    for index in range(len(widths)):
        assert layout.field(key, index).tolist() == columns[index]
    n = len(key)
    into = [np.full(n + 2, -1, dtype=np.int64) for _ in widths]
    unpacked = layout.unpack(key.copy(), out=[o[1 : n + 1] for o in into])
    assert [u.tolist() for u in unpacked] == columns
    assert all(o[0] == -1 and o[-1] == -1 for o in into)  # only the slices written
    assert [u.tolist() for u in layout.unpack(key)] == columns


@given(packed_fields())
def test_field_overwrites_the_key_in_place_when_asked(
    case: tuple[tuple[int, ...], list[list[int]]],
) -> None:
    widths, columns = case
    layout = BitLayout(widths)
    key = layout.pack(*[np.array(c, dtype=np.int64) for c in columns])
    last = len(widths) - 1
    assert layout.field(key, last, out=key).tolist() == columns[last]
    assert key.tolist() == columns[last]


def test_pack_takes_any_integer_dtype_without_changing_it() -> None:
    layout = BitLayout((31, 20, 7))
    code = np.array([3, 0, (1 << 31) - 1], dtype=np.int32)
    ts = np.array([5, (1 << 20) - 1, 0], dtype=np.int64)
    row = np.arange(3, dtype=np.uint64)
    key = layout.pack(code, ts, row)
    assert [u.tolist() for u in layout.unpack(key)] == [code.tolist(), ts.tolist(), [0, 1, 2]]
    assert row.tolist() == [0, 1, 2]


def test_layout_widths_are_checked() -> None:
    assert BitLayout.fitting(31, 26, 7) == BitLayout((31, 26, 7))
    assert BitLayout.fitting(31, 26, 8) is None
    assert BitLayout.fitting(3, 4, bits=7) is not None
    assert BitLayout.fitting(3, 5, bits=7) is None
    assert BitLayout.fitting(64, 0) is None  # a field over 63 bits: the caller sorts otherwise
    assert BitLayout((7, 9)).shift(0) == 9
    assert BitLayout((7, 9)).shift(1) == 0
    for bad in [(), (64,), (-1, 3)]:
        with pytest.raises(ValueError, match="0 to 63 bits"):
            BitLayout(bad)
    with pytest.raises(ValueError, match="do not fit in 64"):
        BitLayout((40, 30))
    with pytest.raises(ValueError, match="2 fields expected"):
        BitLayout((3, 3)).pack(np.zeros(1, dtype=np.int64))
    with pytest.raises(ValueError, match="2 outputs expected"):
        BitLayout((3, 3)).unpack(np.zeros(1, dtype=np.uint64), out=[np.zeros(1, np.int64)])


# ------------------------------------------------------------------- buffers and ranges


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 5)), max_size=10))
def test_concat_ranges_match_a_plain_loop(spans: list[tuple[int, int]]) -> None:
    lo = np.array([a for a, _ in spans], dtype=np.int64)
    hi = np.array([a + n for a, n in spans], dtype=np.int64)
    expected = [i for a, n in spans for i in range(a, a + n)]
    assert concat_ranges(lo, hi).tolist() == expected


def test_with_room_keeps_the_contents() -> None:
    arr = np.arange(5, dtype=np.int64)
    assert with_room(arr, 3) is arr
    grown = with_room(arr, 6)
    assert len(grown) >= 1024
    assert grown[:5].tolist() == [0, 1, 2, 3, 4]
