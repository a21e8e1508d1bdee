"""The designed scrapers, checked by an exact, independent computation over the files.

Requests are attributed to entities from the entities table alone (exact credentials, and
IPs inside CIDR ranges via the stdlib `ipaddress`, within validity intervals); then the
largest number of posts in any half-open 24 h window [s, s + 24 h) is found per entity with
a two-pointer search over the sorted instants.
"""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consentry.demo import SCRAPERS, SCRAPING_THRESHOLD, generate, read_facts
from consentry.demo.scrapers import request_plan, split_exact
from tests.demo.conftest import Demo
from tests.demo.test_generator import NULL, strings, us

I64 = npt.NDArray[np.int64]
WINDOW = 24 * 3600 * 1_000_000
NEVER = np.iinfo(np.int64).min


def attribute(access: pa.Table, entities: pa.Table) -> npt.NDArray[np.object_]:
    """Each request's entity; an unmapped credential is its own entity."""
    creds = strings(access["credential"])
    ts = us(access["ts"])
    owner = creds.copy()
    mapped = np.zeros(len(creds), dtype=bool)
    distinct, inverse = np.unique(creds, return_inverse=True)
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address | None] = []
    for c in distinct:  # test-only loop over distinct credentials
        try:
            addresses.append(ipaddress.ip_address(c))
        except ValueError:
            addresses.append(None)
    frm = us(entities["valid_from"])
    to = us(entities["valid_to"])
    for i, row in enumerate(entities.to_pylist()):
        try:
            network = ipaddress.ip_network(row["credential"])
        except ValueError:
            network = None
        if network is not None:
            hit = np.array([a is not None and a in network for a in addresses])
        else:
            hit = distinct == row["credential"]
        lo = NEVER if frm[i] == NULL else frm[i]
        rows = hit[inverse] & (ts >= lo) & (ts < to[i])
        assert not (mapped & rows).any(), f"{row['credential']} mapped twice"
        mapped |= rows
        owner[rows] = row["entity"]
    return owner


def windows(ts: I64, posts: I64) -> tuple[I64, I64]:
    """Sorted instants and, for each, the posts in [ts_i, ts_i + 24 h)."""
    order = np.argsort(ts, kind="stable")
    ts, posts = ts[order], posts[order]
    cum = np.concatenate([[0], np.cumsum(posts)])
    end = np.searchsorted(ts, ts + WINDOW, side="left")
    sums: I64 = cum[end] - cum[np.arange(len(ts))]
    return ts, sums


def per_entity(demo_out: Path) -> dict[str, tuple[I64, I64, I64]]:
    access = pq.read_table(demo_out / "access_events.parquet")
    entities = pq.read_table(demo_out / "entities.parquet")
    owner = attribute(access, entities)
    ts = us(access["ts"])
    posts = np.asarray(access["posts"].to_numpy(), dtype=np.int64)
    out = {}
    for entity in np.unique(owner):
        mine = owner == entity
        sorted_ts, sums = windows(ts[mine], posts[mine])
        out[str(entity)] = (sorted_ts, sums, posts[mine])
    return out


def at(value: datetime) -> int:
    return int(value.timestamp()) * 1_000_000


@pytest.fixture(scope="module")
def measured(small_demo: Demo) -> dict[str, tuple[I64, I64, I64]]:
    return per_entity(small_demo.out)


def test_alpha_is_far_above_the_threshold_in_one_day(
    measured: dict[str, tuple[I64, I64, I64]], small_demo: Demo
) -> None:
    ts, sums, posts = measured["scraper-alpha"]
    facts = small_demo.facts.scraper("scraper-alpha")
    assert posts.sum() == 3_500_000 == facts.total_posts
    assert sums.max() == 3_500_000 == facts.max_24h_posts
    assert facts.over_threshold
    assert not facts.straddles_midnight
    over = sums > SCRAPING_THRESHOLD
    assert ts[over][0] == at(facts.window_start) == at(datetime(2025, 3, 5, 2, tzinfo=UTC))
    assert ts[-1] - ts[0] < WINDOW


def test_bravo_stays_just_under_in_every_window(
    measured: dict[str, tuple[I64, I64, I64]], small_demo: Demo
) -> None:
    ts, sums, posts = measured["scraper-bravo"]
    facts = small_demo.facts.scraper("scraper-bravo")
    assert sums.max() == 990_000 == facts.max_24h_posts
    assert (sums <= SCRAPING_THRESHOLD).all()
    assert not facts.over_threshold
    assert posts.sum() == 200_000 + 990_000 + 250_000 == facts.total_posts
    assert ts[np.argmax(sums)] == at(facts.window_start)
    # The rotated key: requests after 2025-03-07 still belong to bravo.
    assert (ts >= at(datetime(2025, 3, 8, 12, tzinfo=UTC))).sum() == facts.blocks[2].requests


def test_charlie_is_over_only_across_midnight(
    measured: dict[str, tuple[I64, I64, I64]], small_demo: Demo
) -> None:
    ts, sums, posts = measured["scraper-charlie"]
    facts = small_demo.facts.scraper("scraper-charlie")
    assert sums.max() == 1_200_000 == facts.max_24h_posts
    assert facts.over_threshold
    assert facts.straddles_midnight
    midnight = at(datetime(2025, 3, 8, tzinfo=UTC))
    over = sums > SCRAPING_THRESHOLD
    assert over.any()
    assert (ts[over] < midnight).all()
    assert (ts[over] + WINDOW > midnight).all()
    assert ts[over][0] == at(facts.window_start)
    day = ts // (24 * 3600 * 1_000_000)
    by_day = np.bincount(day - day.min(), weights=posts)
    assert by_day.max() == 600_000 == facts.max_calendar_day_posts
    assert (by_day < SCRAPING_THRESHOLD).all()


def test_no_one_else_comes_near_the_threshold(
    measured: dict[str, tuple[I64, I64, I64]],
) -> None:
    others = {e: v for e, v in measured.items() if not e.startswith("scraper-")}
    assert {"acme-research", "newsdesk-bot", "uni-lab"} <= set(others)
    assert len(others) > 200
    assert max(int(sums.max()) for _, sums, _ in others.values()) < SCRAPING_THRESHOLD // 2


def test_blocks_hold_their_exact_volumes_and_request_counts(small_demo: Demo) -> None:
    access = small_demo.tables["access_events"]
    ts = us(access["ts"])
    creds = strings(access["credential"])
    posts = np.asarray(access["posts"].to_numpy(), dtype=np.int64)
    for s in small_demo.facts.scrapers:
        for b in s.blocks:
            inside = (ts >= at(b.start)) & (ts < at(b.end)) & np.isin(creds, b.credentials)
            assert posts[inside].sum() == b.posts, (s.entity, b.start)
            assert inside.sum() == b.requests
            assert (posts[inside] >= 100).all()
            assert (posts[inside] <= 1_000).all()
            assert ts[inside].min() == at(b.start)


def test_volumes_are_exact_whatever_the_number_of_access_events(tmp_path: Path) -> None:
    generate(tmp_path / "d", users=300, posts=1_000, access_events=1_000, seed=5)
    facts = read_facts(tmp_path / "d")
    measured = per_entity(tmp_path / "d")
    assert pq.read_metadata(tmp_path / "d" / "access_events.parquet").num_rows == 1_000
    for s in facts.scrapers:
        _, sums, posts = measured[s.entity]
        assert posts.sum() == s.total_posts
        assert sums.max() == s.max_24h_posts
    scraper_requests = sum(b.requests for s in facts.scrapers for b in s.blocks)
    assert scraper_requests <= 1_000 * 3 // 5 + 7


def test_designed_blocks_are_a_day_apart_except_charlies_pair() -> None:
    for design in SCRAPERS:
        for a, b in zip(design.blocks, design.blocks[1:], strict=False):
            apart = b.start - a.end >= timedelta(hours=24)
            assert apart or design.entity == "scraper-charlie", design.entity


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 300),
    lo=st.integers(0, 500),
    span=st.integers(0, 1_000),
    pick=st.floats(0, 1),
    seed=st.integers(0, 2**32),
)
def test_split_exact_hits_the_total_within_bounds(
    n: int, lo: int, span: int, pick: float, seed: int
) -> None:
    hi = lo + span
    total = n * lo + round(pick * n * span)
    counts = split_exact(np.random.default_rng(seed), total, n, lo, hi)
    assert len(counts) == n
    assert int(counts.sum()) == total
    assert counts.min() >= lo
    assert counts.max() <= hi


def test_split_exact_rejects_impossible_totals() -> None:
    with pytest.raises(ValueError, match="cannot split"):
        split_exact(np.random.default_rng(0), 10_000, 5, 100, 1_000)


@given(st.integers(1_000, 10_000_000))
def test_request_plan_fits_half_the_budget(access_events: int) -> None:
    plan = request_plan(access_events)
    flat = [n for blocks in plan for n in blocks]
    assert all(n >= 1 for n in flat)
    assert sum(flat) <= access_events * 3 // 5 + len(flat)
    if access_events >= 19_100:
        natural = [max(1, round(b.posts / 550)) for d in SCRAPERS for b in d.blocks]
        assert flat == natural
