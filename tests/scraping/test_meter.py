"""The online meter: exact bounds, alerts, and counters shared through real Redis."""

from __future__ import annotations

import multiprocessing as mp
import uuid
from decimal import Decimal

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from consentry.scraping.attribution import check_owners
from consentry.scraping.meter import Meter, RedisMeter
from consentry.scraping.rules import Terms
from consentry.sources.schema import arrow_schema
from tests.services import ensure_redis

MIN = 60_000_000
TERMS = Terms(100, 10 * MIN, Decimal("15000"), "USD", "pro_rata")
NO_OWNERS = check_owners(arrow_schema("entities").empty_table(), location="entities")


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
    prefix = f"test7:{uuid.uuid4().hex}"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_feed, args=(url, prefix, w)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    backend = RedisMeter(TERMS, MIN, url, prefix)
    try:
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
        keys = [k.decode() for k in backend.client.scan_iter(match=f"{prefix}:*")]
        assert f"{prefix}:{{ak_shared}}:b" in keys
        assert f"{prefix}:{{ak_shared}}:alerts" in keys
    finally:
        backend.clear()


def test_redis_matches_memory(tmp_path: object) -> None:
    url = ensure_redis()
    prefix = f"test7:{uuid.uuid4().hex}"
    rng = np.random.default_rng(3)
    ts = np.sort(rng.integers(0, 60 * MIN, 2_000)).astype(np.int64)
    creds = pa.array([f"ak_{i}" for i in rng.integers(0, 5, 2_000)])
    posts = rng.integers(0, 5, 2_000).astype(np.int64)
    memory = Meter(TERMS, NO_OWNERS)
    redis_meter = Meter(TERMS, NO_OWNERS, RedisMeter(TERMS, MIN, url, prefix))
    try:
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
    finally:
        assert isinstance(redis_meter.backend, RedisMeter)
        redis_meter.backend.clear()


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


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 60 * MIN), st.sampled_from(["a", "b", "c"]), st.integers(0, 40)),
        min_size=1,
        max_size=60,
    ),
    st.integers(1, 6),
)
def test_vectorised_meter_equals_row_by_row(rows: list[tuple[int, str, int]], batches: int) -> None:
    # Batches roughly in time order but overlapping, so late rows and re-arming happen.
    rows.sort(key=lambda r: r[0] // (15 * MIN))
    meter = Meter(TERMS, NO_OWNERS)
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


def test_redis_alert_instants_are_exact_at_real_timestamps() -> None:
    url = ensure_redis()
    prefix = f"test7:{uuid.uuid4().hex}"
    base = 1_741_140_000_123_457  # 2025-03-05, 16 digits
    ts = base + np.arange(4, dtype=np.int64) * MIN
    posts = np.array([30, 25, 30, 10], dtype=np.int64)
    memory = Meter(TERMS, NO_OWNERS)
    shared = Meter(TERMS, NO_OWNERS, RedisMeter(TERMS, MIN, url, prefix))
    try:
        want, got = [], []
        for i in range(4):  # one access per batch: an alert is dated by that access
            want += memory.ingest(ts[i : i + 1], ["ak"], posts[i : i + 1])[1]
            got += shared.ingest(ts[i : i + 1], ["ak"], posts[i : i + 1])[1]
        assert got == want
        assert [(a.level, a.at_us) for a in want] == [(50, int(ts[1])), (80, int(ts[2]))]
        assert isinstance(shared.backend, RedisMeter)
        assert shared.backend.alerts() == want  # read back from the alert list
    finally:
        assert isinstance(shared.backend, RedisMeter)
        shared.backend.clear()
