"""The columnar DuckDB path's pieces against plain counterparts, and its chunked paths."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import ibis
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from consentry.engine import connect
from consentry.scraping.assessment import assess
from consentry.scraping.attribution import check_owners
from consentry.scraping.canonical import (
    canonical_lines,
    canonical_lines_columns,
    escaped_binary,
    format_instants,
    tabbed,
)
from consentry.scraping.columnar import (
    earliest_all,
    evidence,
    exact_pass,
    forward_ends,
    pair_search,
    sort_accesses,
    tuning,
)
from consentry.scraping.reference import reference_assessment
from consentry.scraping.results import Assessment
from consentry.scraping.rules import Terms, forward_counts, select_windows
from tests.scraping.cases import DAY_US, ENTITIES, TERMS, events_table, rows

instants = st.one_of(
    st.integers(-(10**12), 10**12),
    st.integers(1_700_000_000_000_000, 1_800_000_000_000_000),
    st.integers(-30_000_000_000_000_000, 200_000_000_000_000_000),  # years 1019-8307
    st.sampled_from([-62_135_596_800_000_000, 253_402_300_799_999_999]),  # years 1 and 9999
)


# The table lookups cover 1000-01-01 .. 9999-12-31 over spans of at most 100,000 days;
# every edge, one microsecond either side, is a fixed example.
FIRST_US = -354_285 * DAY_US  # 1000-01-01T00:00:00Z
LAST_US = 2_932_897 * DAY_US - 1  # 9999-12-31T23:59:59.999999Z


@settings(max_examples=80, deadline=None)
@given(st.lists(instants, min_size=1, max_size=20))
@example([FIRST_US])
@example([FIRST_US - 1])
@example([FIRST_US - 1, FIRST_US])
@example([LAST_US])
@example([LAST_US - DAY_US, LAST_US])
@example([0, 100_000 * DAY_US])
@example([0, 100_001 * DAY_US])
@example([DAY_US - 1, DAY_US, 59_999_999, 3_599_999_999])
def test_format_instants_matches_strftime(values: list[int]) -> None:
    ts = np.array(values, dtype=np.int64)
    expected = pc.strftime(pa.array(ts, pa.timestamp("us", tz="UTC")), "%Y-%m-%dT%H:%M:%SZ")
    assert [b.decode() for b in format_instants(ts).to_pylist()] == expected.to_pylist()


text = st.text(alphabet=st.sampled_from(["a", "Z", "\\", "\t", "\n", "\r", "é", "0"]), max_size=6)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(text, instants, text, st.integers(0, 10**12)), min_size=1, max_size=12))
def test_canonical_lines_from_columns_match_the_table_form(
    items: list[tuple[str, int, str, int]],
) -> None:
    table = pa.table(
        {
            "request_id": [r for r, _, _, _ in items],
            "ts": pa.array([t for _, t, _, _ in items], pa.timestamp("us", tz="UTC")),
            "credential": [c for _, _, c, _ in items],
            "posts": pa.array([p for _, _, _, p in items], pa.int64()),
        }
    )
    ordered = table.sort_by([("ts", "ascending"), ("request_id", "ascending")])
    got = canonical_lines_columns(
        ordered["ts"].cast(pa.int64()).to_numpy(),
        escaped_binary(ordered["request_id"]),
        tabbed(escaped_binary(ordered["credential"])),
        ordered["posts"].to_numpy(),
    )
    assert [b.decode() for b in got.to_pylist()] == canonical_lines(table).to_pylist()


accesses = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 40), st.integers(0, 9)), min_size=1, max_size=40
)


def _arrays(items: list[tuple[int, int, int]]) -> tuple[Any, Any, Any]:
    code = np.array([c for c, _, _ in items], dtype=np.int32)
    ts = np.array([t for _, t, _ in items], dtype=np.int64)
    posts = np.array([p for _, _, p in items], dtype=np.int64)
    return code, ts, posts


@settings(max_examples=80, deadline=None)
@given(accesses)
def test_packed_sort_equals_lexsort(items: list[tuple[int, int, int]]) -> None:
    code, ts, posts = _arrays(items)
    c1, t1, p1 = sort_accesses(code, ts, posts)
    order = np.lexsort((posts, ts, code))
    assert c1.tolist() == code[order].tolist()
    assert t1.tolist() == ts[order].tolist()
    assert p1.tolist() == posts[order].tolist()
    # Posts too wide to pack: the lexsort path gives the same (code, ts) order and sums.
    big = posts + (1 << 40)
    c2, t2, p2 = sort_accesses(code, ts + 10**15, big)
    assert c2.tolist() == c1.tolist()
    assert (t2 - 10**15).tolist() == t1.tolist()
    assert sorted(zip(c2.tolist(), t2.tolist(), p2.tolist(), strict=True)) == sorted(
        zip(c1.tolist(), (t1 + 10**15).tolist(), (p1 + (1 << 40)).tolist(), strict=True)
    )


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(-50, 50), min_size=1, max_size=40), st.integers(1, 30))
def test_forward_ends_is_a_left_search(values: list[int], window: int) -> None:
    key = np.sort(np.array(values, dtype=np.int64))
    expected = np.searchsorted(key, key + window, side="left")
    assert forward_ends(key, window).tolist() == expected.tolist()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(-20, 20)), min_size=1, max_size=15),
    st.lists(st.tuples(st.integers(0, 4), st.integers(-25, 25)), min_size=1, max_size=15),
    st.booleans(),
)
def test_pair_search_both_ways(
    keys: list[tuple[int, int]], queries: list[tuple[int, int]], huge: bool
) -> None:
    keys = sorted(set(keys))
    scale = 2**58 if huge else 1  # huge: the composite key would overflow
    km = np.array([k for k, _ in keys], dtype=np.int64)
    kn = np.array([v for _, v in keys], dtype=np.int64) * scale
    qm = np.array([k for k, _ in queries], dtype=np.int64)
    qn = np.array([v for _, v in queries], dtype=np.int64) * scale
    got = pair_search(km, kn, qm, qn).tolist()
    pairs = list(zip(km.tolist(), kn.tolist(), strict=True))
    for (m, v), g in zip(zip(qm.tolist(), qn.tolist(), strict=True), got, strict=True):
        expected = max((i for i, p in enumerate(pairs) if p <= (m, v)), default=-1)
        assert g == expected


@pytest.mark.parametrize("mode", ["earliest", "max_total"])
@settings(max_examples=60, deadline=None)
@given(accesses, st.integers(0, 25))
# Ties at the threshold (10) and accesses at window edges (t, t + 10, t + 9): entity 0's
# [0, 10) holds exactly 10, [9, 19) 11; entity 1's [0, 10) holds 11, the access at 10 is
# the next window's.
@example([(0, 0, 5), (0, 9, 5), (0, 10, 6), (1, 0, 6), (1, 9, 5), (1, 10, 6), (1, 20, 5)], 10)
# The defect of issue 16 (max_total bills 8 with a chain of four windows end to start)
# next to an entity at exactly the threshold everywhere.
@example([(2, 0, 1), (2, 1, 1), (2, 10, 2), (2, 20, 2), (2, 22, 1), (2, 30, 1), (3, 5, 1)], 1)
def test_exact_pass_matches_the_rules_per_entity(
    mode: str, items: list[tuple[int, int, int]], threshold: int
) -> None:
    code, ts, posts = _arrays(items)
    c, t, p = sort_accesses(code, ts, posts)
    terms = Terms(threshold, 10, TERMS.amount_per_million, "USD", "pro_rata")
    res = exact_pass(c, t, p, terms, mode)
    got_windows = list(
        zip(
            res.w_code.tolist(),
            res.w_start.tolist(),
            res.w_lo.tolist(),
            res.w_hi.tolist(),
            res.w_posts.tolist(),
            strict=True,
        )
    )
    expected_windows = []
    for k, entity in enumerate(res.codes.tolist()):
        rows = np.flatnonzero(c == entity)
        counts, _, _ = forward_counts(t[rows], p[rows], 10)
        assert res.maxima[k] == counts.max()
        assert res.max_start[k] == t[rows][np.argmax(counts == counts.max())]
        assert res.totals[k] == p[rows].sum()
        first = int(rows[0])
        expected_windows += [
            (entity, w.start_us, first + w.lo, first + w.hi, w.posts)
            for w in select_windows(t[rows], p[rows], terms, mode)
        ]
    assert got_windows == expected_windows


def test_earliest_all_with_nothing_over_the_line() -> None:
    z = np.zeros(3, dtype=np.int64)
    out = earliest_all(z, z, z, z, z, z, Terms(5, 10, TERMS.amount_per_million, "USD", "pro_rata"))
    assert all(len(x) == 0 for x in out)


@contextmanager
def _constants(**values: int) -> Iterator[None]:
    """The columnar path's sizes (`columnar.tuning`) set to `values` inside the block,
    restored after."""
    saved = {name: getattr(tuning, name) for name in values}
    for name, value in values.items():
        setattr(tuning, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(tuning, name, value)


def _assess(events: pa.Table, **kw: Any) -> Assessment:
    """The columnar path on embedded DuckDB over `events` with the test entities."""
    owners = check_owners(ENTITIES, location="entities")
    return assess(
        connect("duckdb"),
        ibis.memtable(events.combine_chunks()),
        owners,
        TERMS,
        policy_version="test",
        method="numpy",
        **kw,
    )


def _engine(events: pa.Table, mode: str, **kw: Any) -> dict[str, Any]:
    doc = _assess(events, mode=mode, **kw).to_json()
    doc.pop("engine")
    return doc


@pytest.mark.parametrize("mode", ["earliest", "max_total"])
@settings(max_examples=15, deadline=None)
@given(items=rows)
def test_tiny_chunks_and_evidence_groups_change_nothing(
    mode: str, items: list[tuple[int, int, str, int]]
) -> None:
    events = events_table(items)
    expected = reference_assessment(events, ENTITIES, TERMS, mode=mode, policy_version="test")
    # One access per exact-pass chunk and evidence group; packed keys with room for one
    # bit of entity code (two entities per sort chunk).
    bits = (3 * DAY_US).bit_length() + 3 + 1
    with _constants(CHUNK_ROWS=1, EVIDENCE_ROWS=1, PACK_BITS=bits, MIN_CHUNK_BITS=1):
        assert _engine(events, mode) == expected


@settings(max_examples=30, deadline=None)
@given(items=rows, ids=st.sampled_from(["fixed", "ragged", "fixed with TAB"]))
@example(items=[(1, 0, "ak_a", 6), (2, 5, "ak_a", 6)], ids="fixed with TAB")
@example(items=[(1, 0, "ak_a", 6), (2, 5, "ak_a", 6), (4, 9, "ak_a", 1)], ids="ragged")
def test_small_evidence_groups_with_packed_sorts_change_nothing(
    items: list[tuple[int, int, str, int]], ids: str
) -> None:
    """Groups of a few accesses: the partition by group and the order inside each group
    run as packed sorts (the test above forces their lexsort fallbacks). Request ids of
    one width take the fixed-width path unless one needs escaping; ragged ones, some
    with a TAB to escape, the Arrow path."""
    events = events_table(items)
    if ids != "fixed":
        names = events["request_id"].to_pylist()
        if ids == "ragged":
            names = [r + "\t" * (int(r[1:]) % 2) + "x" * (int(r[1:]) % 3) for r in names]
        else:
            names = [r + "\t" for r in names]
        field = pa.field("request_id", pa.string(), nullable=False)
        events = events.set_column(0, field, pa.array(names, pa.string()))
    expected = reference_assessment(events, ENTITIES, TERMS, mode="earliest", policy_version="test")
    with _constants(EVIDENCE_ROWS=3):
        assert _engine(events, "earliest") == expected


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=60), st.booleans())
def test_partition_is_a_stable_sort_by_group(groups: list[int], tight: bool) -> None:
    group = np.array(groups, dtype=np.int64)
    count = int(group.max()) + 1 if len(group) else 1
    # tight: (group, row) does not pack, the stable argsort answers.
    with _constants(PACK_BITS=3) if tight else nullcontext():
        order, ends = evidence._partition(group, count)
    assert order.tolist() == np.argsort(group, kind="stable").tolist()
    assert ends.tolist() == np.cumsum(np.bincount(group, minlength=count)).tolist()


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 7), st.integers(0, 99)), min_size=1, max_size=60),
    st.booleans(),
)
def test_window_order_equals_lexsort(items: list[tuple[int, int]], tight: bool) -> None:
    win = np.array([w for w, _ in items], dtype=np.int64)
    rel = np.array([r for _, r in items], dtype=np.int64)
    # tight: the packed key does not fit, the lexsort fallback answers.
    with _constants(PACK_BITS=8) if tight else nullcontext():
        w, r, order = evidence._window_order(win, rel, 7)
    expected = np.lexsort((rel, win))
    assert order.tolist() == expected.tolist()  # ties keep their input order
    assert w.tolist() == win[expected].tolist()
    assert r.tolist() == rel[expected].tolist()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(st.text(max_size=5), max_size=6), max_size=6),
    st.integers(0, 3),
    st.integers(0, 3),
)
@example([["aa", "bb"], ["aaaaaaaa", "", "é"]], 0, 0)  # longer strings after the estimate
@example([["x", "y", "z"], ["w"]], 1, 2)  # a slice (offsets not from 0), rows to spare
def test_string_column_gives_back_what_was_appended(
    chunks: list[list[str]], skip: int, spare: int
) -> None:
    arrays = [pa.array(chunk, pa.string()) for chunk in chunks]
    if arrays:
        arrays[0] = arrays[0].slice(skip)
    expected = [value for array in arrays for value in array.to_pylist()]
    column = evidence.StringColumn(len(expected) + spare)
    for array in arrays:
        column.append(array)
    assert column.array().to_pylist() == expected


def test_string_column_refuses_more_rows_than_announced() -> None:
    column = evidence.StringColumn(1)
    with pytest.raises(ValueError, match="more strings than the rows announced"):
        column.append(pa.array(["a", "b"]))


def test_only_one_entity_keeps_its_accesses() -> None:
    items = [
        (1, 0, "ak_b", 6),
        (2, 5, "ak_b", 6),
        (3, 7, "10.0.0.5", 20),
        (4, DAY_US + 3, "ak_a", 11),
        (4, DAY_US + 3, "ak_a", 11),  # an exact duplicate row counts once
    ]
    events = events_table(items)
    full = _engine(events, "earliest")
    one = _assess(events, only=["alpha"])
    (alpha,) = one.to_json()["entities"]
    assert alpha == next(e for e in full["entities"] if e["entity"] == "alpha")
    assert one.events["alpha"].num_rows == 2
    assert [e["entity"] for e in full["entities"]] == ["alpha", "beta", "delta"]
