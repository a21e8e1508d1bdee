"""The online meter: exact bounds, alerts, and counters shared through real Redis."""

from __future__ import annotations

import multiprocessing as mp
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from importlib.resources import files

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from consentry.schema import arrow_schema
from consentry.scraping.attribution import check_owners
from consentry.scraping.meter import (
    ALERT_LEVELS,
    Meter,
    RedisMeter,
    alert_levels,
    hash_tags,
    reaches,
)
from consentry.scraping.rules import Terms
from tests.services import ensure_redis

MIN = 60_000_000
TERMS = Terms(100, 10 * MIN, Decimal("15000"), "USD", "pro_rata")
NO_OWNERS = check_owners(arrow_schema("entities").empty_table(), location="entities")


@contextmanager
def redis_store() -> Iterator[RedisMeter]:
    """A Redis backend on the real server under a fresh key prefix, emptied afterwards."""
    store = RedisMeter(TERMS, MIN, ensure_redis(), f"test7:{uuid.uuid4().hex}")
    try:
        yield store
    finally:
        store.clear()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40 * MIN), st.integers(0, 30)), min_size=1, max_size=40),
    st.integers(1, 7),
)
def test_bounds_enclose_the_true_trailing_count(rows: list[tuple[int, int]], batches: int) -> None:
    rows.sort()
    meter = Meter(TERMS, NO_OWNERS)
    ts = np.array([t for t, _ in rows], dtype=np.int64)
    posts = np.array([p for _, p in rows], dtype=np.int64)
    for part in np.array_split(np.arange(len(rows)), batches):
        if len(part) == 0:
            continue
        meter.ingest(ts[part], ["ak"] * len(part), posts[part])
        t = int(ts[part[-1]])
        seen = ts[: part[-1] + 1]
        true = int(posts[: part[-1] + 1][(seen > t - TERMS.window_us) & (seen <= t)].sum())
        b = meter.bounds("ak")
        assert b is not None
        assert b.lower <= true <= b.upper
        # Lower: whole minutes inside the window; upper adds the oldest, partial minute.
        k = t // MIN
        inside = seen // MIN
        assert b.upper == int(posts[: part[-1] + 1][inside >= k - 10].sum())
        assert b.lower == int(posts[: part[-1] + 1][inside >= k - 9].sum())


def test_alerts_at_50_80_100_percent_once_each() -> None:
    meter = Meter(TERMS, NO_OWNERS)
    levels = []
    for minute, posts in enumerate([30, 25, 30, 10, 10]):
        _, alerts = meter.ingest(
            np.array([minute * MIN], dtype=np.int64), ["ak"], np.array([posts], dtype=np.int64)
        )
        levels += [(a.level, a.upper, a.confirmed) for a in alerts]
    assert levels == [(50, 55, True), (80, 85, True), (100, 105, True)]
    assert [a.level for a in meter.alerts()] == [50, 80, 100]


def _feed(url: str, prefix: str, worker: int) -> None:
    meter = Meter(TERMS, NO_OWNERS, RedisMeter(TERMS, MIN, url, prefix))
    rng = np.random.default_rng(worker)
    for _ in range(20):
        ts = np.sort(rng.integers(0, 5 * MIN, 50)).astype(np.int64)
        meter.ingest(
            ts, pa.array(["ak_shared"] * 25 + [f"ak_{worker}"] * 25), np.ones(50, np.int64)
        )


def test_two_processes_share_counters_in_redis() -> None:
    url = ensure_redis()
    with redis_store() as backend:
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_feed, args=(url, backend.prefix, w)) for w in (1, 2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        shared = backend.bounds("ak_shared")
        assert shared is not None
        # Every access lies within 5 minutes of the start, inside one 10-minute window.
        assert shared.lower == shared.upper == 2 * 20 * 25
        for w in (1, 2):
            own = backend.bounds(f"ak_{w}")
            assert own is not None
            assert own.upper == 20 * 25
        levels = [(a.entity, a.level) for a in backend.alerts()]
        assert [lv for e, lv in levels if e == "ak_shared"] == [50, 80, 100]
        # Hash tags: every key of one entity sits in the same cluster slot.
        keys = [k.decode() for k in backend.client.scan_iter(match=f"{backend.prefix}:*")]
        assert f"{backend.prefix}:{{ak_shared}}:m" in keys
        assert f"{backend.prefix}:{{ak_shared}}:alerts" in keys


def test_redis_matches_memory() -> None:
    rng = np.random.default_rng(3)
    ts = np.sort(rng.integers(0, 60 * MIN, 2_000)).astype(np.int64)
    creds = pa.array([f"ak_{i}" for i in rng.integers(0, 5, 2_000)])
    posts = rng.integers(0, 5, 2_000).astype(np.int64)
    memory = Meter(TERMS, NO_OWNERS)
    with redis_store() as store:
        redis_meter = Meter(TERMS, NO_OWNERS, store)
        for a in range(0, 2_000, 250):
            memory.ingest(ts[a : a + 250], creds[a : a + 250], posts[a : a + 250])
            redis_meter.ingest(ts[a : a + 250], creds[a : a + 250], posts[a : a + 250])
        for i in range(5):
            assert memory.bounds(f"ak_{i}") == redis_meter.bounds(f"ak_{i}")
        assert [
            (a.entity, a.level, a.at_us)
            for a in sorted(memory.alerts(), key=lambda a: (a.entity, a.at_us, a.level))
        ] == [
            (a.entity, a.level, a.at_us)
            for a in sorted(redis_meter.alerts(), key=lambda a: (a.entity, a.at_us, a.level))
        ]


class _RowByRow:
    """The meter's rules applied one (entity, bucket) row at a time (the plain reading)."""

    def __init__(self, terms: Terms, bucket: int) -> None:
        self.terms, self.bucket, self.span = terms, bucket, terms.window_us // bucket
        self.store: dict[str, dict[int, int]] = {}
        self.top: dict[str, int] = {}
        self.latest: dict[str, int] = {}
        self.armed: dict[str, int] = {}
        self.alerts: list[tuple[str, int, int, int, int, bool]] = []

    def feed(self, ts: list[int], ents: list[str], posts: list[int]) -> None:
        sums: dict[tuple[str, int], int] = {}
        newest: dict[str, int] = {}
        for t, e, p in zip(ts, ents, posts, strict=True):
            sums[(e, t // self.bucket)] = sums.get((e, t // self.bucket), 0) + p
            newest[e] = max(newest.get(e, t), t)
        thr = self.terms.threshold
        for (e, k), p in sorted(sums.items()):
            store = self.store.setdefault(e, {})
            if e not in self.top:
                self.top[e], self.latest[e] = k, newest[e]
            if k < self.top[e] - self.span:
                continue  # late
            self.top[e] = max(self.top[e], k)
            for old in [b for b in store if b < self.top[e] - self.span]:
                del store[old]
            store[k] = store.get(k, 0) + p
            self.latest[e] = max(self.latest[e], newest[e])
            upper = sum(store.values())
            lower = upper - store.get(self.top[e] - self.span, 0)
            level = (
                100
                if upper > thr
                else 80
                if upper * 100 >= thr * 80
                else 50
                if upper * 100 >= thr * 50
                else 0
            )
            armed = self.armed.get(e, 0)
            if level == 0:
                self.armed[e] = 0
                continue
            at = min(newest[e], (k + 1) * self.bucket - 1)
            for lv in (50, 80, 100):
                if armed < lv <= level:
                    ok = lower > thr if lv == 100 else lower * 100 >= thr * lv
                    self.alerts.append((e, lv, at, lower, upper, ok))
            self.armed[e] = max(armed, level)

    def bounds(self, e: str) -> tuple[int, int, int]:
        store = self.store[e]
        upper = sum(v for b, v in store.items() if b >= self.top[e] - self.span)
        return self.latest[e], upper - store.get(self.top[e] - self.span, 0), upper


# Instants at bucket and window edges (a bucket is a minute, the window ten): t, t + 1 µs,
# t + window - 1 µs, t + window, ... and anywhere in an hour.
_EDGES = sorted({max(0, k * MIN + d) for k in (0, 1, 9, 10, 11, 20, 21) for d in (-1, 0, 1)})
# Posts that put a rolling count exactly at an alert level (50, 80 or 100 % of 100) or one
# past it, and small ones.
_LEVEL_POSTS = [1, 20, 29, 30, 49, 50, 51, 79, 80, 81, 99, 100, 101]
meter_rows = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(_EDGES), st.integers(0, 60 * MIN)),
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.integers(0, 40), st.sampled_from(_LEVEL_POSTS)),
    ),
    min_size=1,
    max_size=60,
)
# Exactly 50, 80 and the threshold (100: not over, level 80), then 101 (over); a, b and c
# one batch each way.
_AT_LEVELS = [(0, "a", 50), (MIN, "a", 30), (2 * MIN, "a", 20), (3 * MIN, "a", 1)]
# 100 at 0, then one post at exactly a window later: the upper bound (101) counts the
# oldest bucket, the lower (1) does not, so 100 % is raised unconfirmed; the access one
# µs before the window's end falls in the last bucket of the first window; a minute later
# the first bucket has left and the level re-arms.
_AT_EDGES = [
    (0, "b", 100),
    (10 * MIN - 1, "b", 0),
    (10 * MIN, "b", 1),
    (11 * MIN, "b", 0),
    (11 * MIN + 1, "b", 100),
    (21 * MIN - 1, "b", 1),
]

# The lower bound exactly at a level when it is raised: the oldest bucket holds 1, so c's
# 50 % alert has lower = 50 (confirmed: at least 50 %) and a's 100 % alert lower = 100
# (not confirmed: the threshold is not exceeded).
_LOWER_AT_LEVELS = [(0, "c", 1), (10 * MIN, "c", 50), (0, "a", 1), (10 * MIN + 1, "a", 100)]

# Instants before 1970: negative buckets, an entity's first bucket far below 0 is its top
# (no bucket 0 is implied), and b, new in the same batch, starts at its own bucket.
_BEFORE_1970 = [(-30 * MIN, "a", 5), (-25 * MIN - 1, "a", 7), (-21 * MIN, "b", 50), (0, "b", 1)]


def _check_against_row_by_row(meter: Meter, rows: list[tuple[int, str, int]], batches: int) -> None:
    """Feed `rows` to `meter` and to the plain reading in `batches`; bounds after every
    batch and the alerts must agree."""
    # Batches roughly in time order but overlapping, so late rows and re-arming happen.
    rows.sort(key=lambda r: r[0] // (15 * MIN))
    plain = _RowByRow(TERMS, MIN)
    for part in np.array_split(np.arange(len(rows)), batches):
        if len(part) == 0:
            continue
        ts = [rows[i][0] for i in part]
        ents = [rows[i][1] for i in part]
        ps = [rows[i][2] for i in part]
        bounds, _ = meter.ingest(np.array(ts, np.int64), ents, np.array(ps, np.int64))
        plain.feed(ts, ents, ps)
        for b in bounds:
            assert (b.latest_us, b.lower, b.upper) == plain.bounds(b.entity)
    for e in plain.store:
        got = meter.bounds(e)
        assert got is not None
        assert (got.latest_us, got.lower, got.upper) == plain.bounds(e)
    # Per entity, in the order raised (across entities a batch goes in registry order).
    got_alerts = [
        (a.entity, a.level, a.at_us, a.lower, a.upper, a.confirmed) for a in meter.alerts()
    ]
    assert sorted(got_alerts, key=lambda a: a[0]) == sorted(plain.alerts, key=lambda a: a[0])


@settings(max_examples=60, deadline=None)
@given(meter_rows, st.integers(1, 6))
@example(_AT_LEVELS, 1)
@example(_AT_LEVELS, 4)
@example(_AT_EDGES, 1)
@example(_AT_EDGES, 6)
@example(_LOWER_AT_LEVELS, 1)
@example(_BEFORE_1970, 1)
def test_vectorised_meter_equals_row_by_row(rows: list[tuple[int, str, int]], batches: int) -> None:
    _check_against_row_by_row(Meter(TERMS, NO_OWNERS), rows, batches)


@settings(max_examples=25, deadline=None)
@given(meter_rows, st.integers(1, 6))
@example(_AT_LEVELS, 1)
@example(_AT_LEVELS, 4)
@example(_AT_EDGES, 1)
@example(_AT_EDGES, 6)
@example(_LOWER_AT_LEVELS, 1)
def test_redis_meter_equals_row_by_row(rows: list[tuple[int, str, int]], batches: int) -> None:
    """The Lua script held to the plain reading itself, not only to `MemoryMeter`."""
    with redis_store() as store:
        _check_against_row_by_row(Meter(TERMS, NO_OWNERS, store), rows, batches)


def test_redis_alert_instants_are_exact_at_real_timestamps() -> None:
    base = 1_741_140_000_123_457  # 2025-03-05, 16 digits
    ts = base + np.arange(4, dtype=np.int64) * MIN
    posts = np.array([30, 25, 30, 10], dtype=np.int64)
    memory = Meter(TERMS, NO_OWNERS)
    with redis_store() as store:
        shared = Meter(TERMS, NO_OWNERS, store)
        want, got = [], []
        for i in range(4):  # one access per batch: an alert is dated by that access
            want += memory.ingest(ts[i : i + 1], ["ak"], posts[i : i + 1])[1]
            got += shared.ingest(ts[i : i + 1], ["ak"], posts[i : i + 1])[1]
        assert got == want
        assert [(a.level, a.at_us) for a in want] == [(50, int(ts[1])), (80, int(ts[2]))]
        assert store.alerts() == want  # read back from the alert list


def _same_slot_names() -> tuple[str, str]:
    """Two entity names whose hash tags fall in one Redis Cluster slot (CRC16 mod 16384)."""
    import binascii

    seen: dict[int, str] = {}
    for i in range(100_000):
        name = f"e{i}"
        slot = binascii.crc_hqx(name.encode(), 0) % 16384
        if slot in seen:
            return seen[slot], name
        seen[slot] = name
    raise AssertionError("no two names share a slot")


_PAIR = _same_slot_names()
_NAMES = ["a", "b{x}", "c%7B", "", _PAIR[0], _PAIR[1]]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 45),
            st.integers(0, 59),
            st.sampled_from(range(len(_NAMES))),
            st.integers(0, 40),
        ),
        min_size=1,
        max_size=150,
    ),
    st.integers(1, 8),
    st.sampled_from(["ordered", "overlapping", "shuffled"]),
)
@example(  # the floor reaches the old top bucket exactly (the last stored pair)
    [(0, 0, 0, 60), (2, 0, 0, 1), (12, 0, 0, 5)], 3, "ordered"
)
@example(  # rows between the oldest kept bucket and the top (out of time order), then
    # buckets leave: a pair written out of order would stay
    [
        (0, 0, 0, 1),
        (3, 0, 0, 2),
        (6, 0, 0, 3),
        (9, 0, 0, 4),
        (4, 0, 0, 5),
        (5, 0, 0, 9),
        (14, 0, 0, 1),
    ],
    3,
    "shuffled",
)
@example(  # a row exactly at the new floor, which is also a stored bucket
    [(0, 0, 0, 7), (3, 0, 0, 2), (5, 0, 0, 9), (3, 0, 0, 4), (13, 0, 0, 60)], 2, "shuffled"
)
def test_redis_and_memory_give_the_same_bounds_and_alerts(
    rows: list[tuple[int, int, int, int]], batches: int, order: str
) -> None:
    # Minutes 0-45 against a 10-minute window: buckets leave the window, floors fall on
    # stored buckets, idle gaps and entities with many buckets occur. Ordered batches take
    # the script's fast path; overlapping and shuffled ones send rows older than an
    # entity's top (slow path) and late rows.
    if order == "ordered":
        rows.sort()
    elif order == "overlapping":
        rows.sort(key=lambda r: r[0] // 15)
    memory = Meter(TERMS, NO_OWNERS)
    with redis_store() as store:
        shared = Meter(TERMS, NO_OWNERS, store)
        for part in np.array_split(np.arange(len(rows)), batches):
            if len(part) == 0:
                continue
            ts = np.array([rows[i][0] * MIN + rows[i][1] * 1_000_000 for i in part], np.int64)
            creds = pa.array([_NAMES[rows[i][2]] for i in part], pa.string())
            posts = np.array([rows[i][3] for i in part], np.int64)
            want_bounds, want_alerts = memory.ingest(ts, creds, posts)
            got_bounds, got_alerts = shared.ingest(ts, creds, posts)
            assert list(got_bounds) == list(want_bounds)
            assert got_alerts == want_alerts
            for name in _NAMES:
                assert store.bounds(name) == memory.bounds(name)
        by_entity = sorted(memory.alerts(), key=lambda a: a.entity)  # stable: per entity order
        assert store.alerts() == by_entity


def test_entities_of_one_slot_share_a_call() -> None:
    with redis_store() as store:
        meter = Meter(TERMS, NO_OWNERS, store)
        names = [*_PAIR, "other"]
        ts = np.array([0, MIN, 2 * MIN], np.int64)
        meter.ingest(ts, pa.array(names), np.array([30, 60, 5], np.int64))
        ids = meter.attributor.entities(pa.array(names), ts)
        order = np.argsort(ids)
        codes = ids[order]
        _, entities, call_first = store._encode(
            meter.attributor.names, codes, ts[order] // MIN, np.ones(3, np.int64), ts[order]
        )
        assert len(entities) == 3
        assert len(call_first) == 2  # the pair in one call
        assert [b.upper for b in map(store.bounds, names) if b] == [30, 60, 5]
        # One call updated both entities of the slot; each keeps its own keys.
        keys = {k.decode() for k in store.client.scan_iter(match=f"{store.prefix}:*")}
        assert {f"{store.prefix}:{{{n}}}:m" for n in names} <= keys


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="%{}7BDa0", max_size=6), min_size=1, max_size=12, unique=True))
@example(["", "%00", "%", "{", "}", "%7B", "%25"])
def test_hash_tags_are_distinct_non_empty_and_brace_free(names: list[str]) -> None:
    tags = hash_tags(pa.array(names, pa.string())).to_pylist()
    assert len(set(tags)) == len(names)  # distinct names never share their keys
    assert all(tags)
    assert not any("{" in t or "}" in t for t in tags)


def test_the_empty_entity_name_keeps_its_keys_in_one_slot() -> None:
    """Redis Cluster hashes the whole key when its tag is empty; `%00` stands in."""
    with redis_store() as store:
        meter = Meter(TERMS, NO_OWNERS, store)
        meter.ingest(np.array([0, MIN], np.int64), pa.array(["", "%00"]), np.array([7, 9]))
        keys = {k.decode() for k in store.client.scan_iter(match=f"{store.prefix}:*")}
        assert f"{store.prefix}:{{%00}}:m" in keys
        assert f"{store.prefix}:{{%2500}}:m" in keys  # the name "%00" is another entity
        assert [b.upper for b in map(store.bounds, ["", "%00"]) if b] == [7, 9]


def test_a_lost_script_is_loaded_again() -> None:
    memory = Meter(TERMS, NO_OWNERS)
    with redis_store() as store:
        meter = Meter(TERMS, NO_OWNERS, store)
        ts = np.array([0, MIN, 2 * MIN, 3 * MIN], np.int64)
        creds = pa.array(["x", "y", "x", "z"])
        posts = np.array([30, 25, 30, 60], np.int64)
        store.sha = "0" * 40  # as if the server had been restarted: NOSCRIPT for every call
        got = meter.ingest(ts, creds, posts)
        want = memory.ingest(ts, creds, posts)
        assert (list(got[0]), got[1]) == (list(want[0]), want[1])
        assert store.sha != "0" * 40


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.lists(st.text(max_size=12) | st.sampled_from(["a", "b", "ab", "ba", ""]), max_size=30),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([0, 1, 3, None]),
)
def test_string_table_ids_are_exact_even_when_hashes_collide(
    batches: list[list[str]], mask: int | None
) -> None:
    from consentry.scraping.meter.attributor import _StringTable

    table = _StringTable()
    if mask is not None:
        # Few distinct hashes: every lookup probes past strings of the same hash, and new
        # strings race for the same free slots; ids must still follow the bytes.
        real = table._hashes
        table._hashes = lambda off, data: real(off, data) & np.uint64(mask)  # type: ignore[method-assign]
    want: dict[str, int] = {}
    for batch in batches:
        distinct = list(dict.fromkeys(s for s in batch if "\x00" not in s))
        got = table.find(pa.array(distinct, pa.string())).tolist()
        for s, i in zip(distinct, got, strict=True):
            assert want.setdefault(s, len(want)) == i
        assert table.size == len(want)


_T0 = 1_741_132_800_000_000  # 2025-03-05T00:00:00Z


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ak_1", "ak_2", "10.1.2.3", "10.1.9.9", "10.2.0.1", "org-a"]),
            st.integers(0, 4 * 60),
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 4),
)
@example(  # every validity end exactly (valid_to is open, valid_from closed), in one batch
    [
        ("ak_2", 60),
        ("ak_2", 120),
        ("ak_2", 180),
        ("10.1.2.3", 30),
        ("10.1.2.3", 90),
        ("10.1.2.3", 100),
        ("org-a", 200),
    ],
    1,
)
def test_attributor_follows_the_ownership_rules(
    accesses: list[tuple[str, int]], batches: int
) -> None:
    from consentry.scraping.attribution import owner_candidates
    from consentry.scraping.meter import Attributor

    def at(minutes: int) -> object:
        from consentry.scraping.results import from_us

        return from_us(_T0 + minutes * MIN)

    rows = [
        {"credential": "ak_1", "entity": "org-a", "valid_from": None, "valid_to": None},
        {"credential": "ak_2", "entity": "org-b", "valid_from": at(60), "valid_to": at(120)},
        {"credential": "ak_2", "entity": "org-c", "valid_from": at(180), "valid_to": None},
        {"credential": "10.1.0.0/16", "entity": "hoster", "valid_from": None, "valid_to": None},
        {"credential": "10.1.2.0/24", "entity": "lab", "valid_from": at(30), "valid_to": at(90)},
        {"credential": "10.1.2.3", "entity": "ak_1", "valid_from": at(100), "valid_to": None},
        {"credential": "org-a", "entity": "org-z", "valid_from": None, "valid_to": at(200)},
    ]
    owners = check_owners(pa.Table.from_pylist(rows, schema=arrow_schema("entities")), location="e")
    attributor = Attributor(owners)
    accesses.sort(key=lambda a: a[1])
    for part in np.array_split(np.arange(len(accesses)), batches):
        if len(part) == 0:
            continue
        creds = [accesses[i][0] for i in part]
        ts = np.array([_T0 + accesses[i][1] * MIN for i in part], np.int64)
        ids = attributor.entities(pa.array(creds, pa.string()), ts)
        for cred, t, got in zip(creds, ts.tolist(), ids.tolist(), strict=True):
            cands = owner_candidates(pa.array([cred]), owners).to_pylist()
            valid = [
                c
                for c in cands
                if c["credential"] == cred
                and c["valid_from"].timestamp() * 1e6 <= t < c["valid_to"].timestamp() * 1e6
            ]
            want = max(valid, key=lambda c: c["specificity"])["entity"] if valid else cred
            assert attributor.names[got] == want
    assert len(set(attributor.names)) == len(attributor.names)  # one id per entity


@settings(max_examples=300, deadline=None)
@given(
    threshold=st.integers(min_value=1, max_value=10**6),
    uppers=st.lists(st.integers(min_value=0, max_value=2 * 10**6), max_size=50),
)
@example(threshold=10, uppers=[4, 5, 7, 8, 9, 10, 11])
@example(threshold=3, uppers=[1, 2, 3, 4])
def test_alert_levels_are_reaches(threshold: int, uppers: list[int]) -> None:
    """The vectorised levels (MemoryMeter) are rule 4 read one count at a time: the highest
    level each count reaches (ties at 50 %, 80 % and exactly the threshold included)."""
    levels = alert_levels(np.array(uppers, dtype=np.int64), threshold)
    assert levels.dtype == np.int64  # levels are stored in the meter's int64 state
    got = levels.tolist()
    want = [
        max((lv for lv in ALERT_LEVELS if reaches(u, lv, threshold)), default=0) for u in uppers
    ]
    assert got == want
    assert reaches(threshold, 100, threshold) is False  # the threshold itself bills nothing
    assert reaches(threshold + 1, 100, threshold) is True


@pytest.mark.parametrize(
    ("count", "level", "reached"),
    [
        (499_999, 50, False),
        (500_000, 50, True),
        (792_080, 80, False),  # 1 % short of 80 %: a factor of 101 instead of 100 would fire
        (799_999, 80, False),
        (800_000, 80, True),
        (1_000_000, 100, False),  # the threshold itself bills nothing
        (1_000_001, 100, True),
    ],
)
def test_reaches_is_the_published_percentage_of_the_clauses_line(
    count: int, level: int, reached: bool
) -> None:
    """Rule 4 at the clause's own line (1,000,000 posts in 24 h): a level is reached at
    exactly its percentage of the line, 100 % only above the line."""
    assert reaches(count, level, 1_000_000) is reached


def test_the_lua_script_takes_the_alert_levels_from_argv() -> None:
    """Alert levels reach the Redis script through ARGV (one definition, `ALERT_LEVELS`):
    no level below 100 is written in the script's code."""
    script = (files("consentry.scraping.meter") / "add.lua").read_text(encoding="utf-8")
    code = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    for lv in ALERT_LEVELS[:-1]:
        assert not re.search(rf"\b{lv}\b", code), f"alert level {lv} is a literal in add.lua"
    assert "ARGV[2]" in code


def test_confirmed_at_exactly_the_threshold_is_not_over_the_line() -> None:
    """Step 4 on both backends (the Lua script in real Redis and MemoryMeter): 100 % is
    raised when the upper bound exceeds the threshold and confirmed only when the lower
    bound does too, so a lower bound of exactly the threshold (100 of 100) is unconfirmed;
    50 % and 80 % are confirmed at exactly their level (lower * 100 >= threshold * level)."""
    ts = np.array([0, 10 * MIN], np.int64)  # minute 0 is the partial, oldest bucket at 10:00
    posts = np.array([5, 100], np.int64)
    memory = Meter(TERMS, NO_OWNERS)
    with redis_store() as store:
        shared = Meter(TERMS, NO_OWNERS, store)
        for meter in (memory, shared):
            meter.ingest(ts[:1], ["ak"], posts[:1])
            _, alerts = meter.ingest(ts[1:], ["ak"], posts[1:])
            got = [(a.level, a.lower, a.upper, a.confirmed) for a in alerts]
            assert got == [(50, 100, 105, True), (80, 100, 105, True), (100, 100, 105, False)]
        # Lower bound exactly at 50 % and at 80 %: confirmed (closed at the level).
        for level, lower in ((50, 50), (80, 80)):
            meter = Meter(TERMS, NO_OWNERS, store)
            entity = f"ak{level}"
            meter.ingest(np.array([20 * MIN], np.int64), [entity], np.array([1], np.int64))
            _, alerts = meter.ingest(
                np.array([30 * MIN], np.int64), [entity], np.array([lower], np.int64)
            )
            top = [a for a in alerts if a.level == level]
            assert [(a.lower, a.upper, a.confirmed) for a in top] == [(lower, lower + 1, True)]


def test_an_access_exactly_at_valid_to_is_not_attributed() -> None:
    """Ownership is `[valid_from, valid_to)`: at valid_to the credential is its own entity
    again; one microsecond earlier it is still the owner's; at valid_from it is the owner's."""
    from consentry.scraping.meter import Attributor
    from consentry.scraping.results import from_us

    start, end = _T0, _T0 + 60 * MIN
    rows = [
        {
            "credential": "ak_t",
            "entity": "org-t",
            "valid_from": from_us(start),
            "valid_to": from_us(end),
        }
    ]
    owners = check_owners(pa.Table.from_pylist(rows, schema=arrow_schema("entities")), location="e")
    attributor = Attributor(owners)
    ts = np.array([start - 1, start, end - 1, end, end + 1], np.int64)
    ids = attributor.entities(pa.array(["ak_t"] * len(ts), pa.string()), ts)
    got = [attributor.names[i] for i in ids.tolist()]
    assert got == ["ak_t", "org-t", "org-t", "ak_t", "ak_t"]
