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
