"""The meter endpoints at their limits: counts past MAX_POSTS_PER_ACCESS are 422, and the
largest allowed counts, however many, never make a bound negative or an alert wrong, in
memory and in Redis (a bucket saturates at `bucket_cap`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import numpy as np
import pytest
from fastapi.testclient import TestClient

from consentry.api.app import create_app
from consentry.cli.admin import init_home
from consentry.keys import Keyring
from consentry.schema import MAX_POSTS_PER_ACCESS, arrow_schema
from consentry.scraping.attribution import check_owners
from consentry.scraping.meter import (
    EXACT_TOTAL,
    MemoryMeter,
    Meter,
    MeterBackend,
    RedisMeter,
    bucket_cap,
)
from consentry.scraping.rules import Terms
from consentry.serving.auth import issue_token
from consentry.settings import Settings
from tests.api.conftest import problem_items
from tests.services import ensure_redis

MIN = 60_000_000
DAY = 24 * 60 * MIN
TERMS = Terms(1_000_000, DAY, Decimal("15000"), "USD", "pro_rata")
NO_OWNERS = check_owners(arrow_schema("entities").empty_table(), location="entities")


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[MeterBackend]:
    if request.param == "memory":
        yield MemoryMeter(TERMS, MIN)
        return
    store = RedisMeter(TERMS, MIN, ensure_redis(), f"test-limits:{uuid.uuid4().hex}")
    try:
        yield store
    finally:
        store.clear()


def _client(settings: Settings, backend: MeterBackend) -> tuple[TestClient, dict[str, str]]:
    init_home(settings)
    app = create_app(settings)
    app.state.scraping_meter = Meter(TERMS, NO_OWNERS, backend)
    token = issue_token(Keyring.for_home(settings.home).platform_secret, "ops", "admin")
    return TestClient(app), {"Authorization": f"Bearer {token}"}


def _event(i: int, posts: int, minute: int = 0) -> dict[str, object]:
    return {
        "request_id": f"r{i}",
        "ts": f"2025-03-05T00:{minute:02d}:{i % 60:02d}Z",
        "credential": "ak_big",
        "posts": posts,
    }


@pytest.mark.parametrize("posts", [MAX_POSTS_PER_ACCESS + 1, 2**62, 2**63, 2**64, -1])
def test_counts_past_the_maximum_are_422(settings: Settings, posts: int) -> None:
    client, admin = _client(settings, MemoryMeter(TERMS, MIN))
    response = client.post(
        "/v1/meter/events", json={"events": [_event(0, posts), _event(1, posts)]}, headers=admin
    )
    assert response.status_code == 422, response.text
    assert problem_items(response)[0][:3] == ("body", 1, "events[0].posts")
    assert client.get("/v1/meter/alerts", headers=admin).json()["alerts"] == []


def test_the_largest_allowed_counts_keep_bounds_and_alerts_right(
    settings: Settings, backend: MeterBackend
) -> None:
    """Batches of maximal accesses until one minute's bucket saturates: every bound stays
    between 0 and EXACT_TOTAL, lower <= upper, and the alerts are raised once, confirmed."""
    client, admin = _client(settings, backend)
    cap = bucket_cap(DAY // MIN)
    per_batch = 2_000
    batches = -(-cap // (per_batch * MAX_POSTS_PER_ACCESS)) + 1
    seen: list[tuple[int, int]] = []
    for b in range(batches):
        events = [_event(b * per_batch + i, MAX_POSTS_PER_ACCESS) for i in range(per_batch)]
        response = client.post("/v1/meter/events", json={"events": events}, headers=admin)
        assert response.status_code == 200, response.text
        (entity,) = response.json()["entities"]
        seen.append((entity["lower"], entity["upper"]))
    for lower, upper in seen:
        assert 0 <= lower <= upper <= EXACT_TOTAL
    assert seen[-1][1] == cap  # the minute's bucket saturated
    assert [u for _, u in seen] == sorted(u for _, u in seen)
    # A later minute adds on top of the saturated one, still exact and below EXACT_TOTAL.
    response = client.post(
        "/v1/meter/events",
        json={"events": [_event(10**9, MAX_POSTS_PER_ACCESS, minute=5)]},
        headers=admin,
    )
    (entity,) = response.json()["entities"]
    assert entity["upper"] == cap + MAX_POSTS_PER_ACCESS
    alerts = client.get("/v1/meter/alerts", headers=admin).json()["alerts"]
    assert [(a["level"], a["confirmed"]) for a in alerts] == [(50, True), (80, True), (100, True)]


def test_bucket_sums_saturate_instead_of_wrapping(backend: MeterBackend) -> None:
    """Per-(entity, bucket) sums far past any allowed batch (2^62 each, as a library caller
    could pass): the window's total stays at most EXACT_TOTAL and never negative."""
    cap = bucket_cap(DAY // MIN)
    names = ["e"]
    big = np.int64(2**62)
    for step in range(3):
        buckets = np.array([10 * step, 10 * step + 1], dtype=np.int64)
        bounds, _ = backend.add(
            names,
            np.zeros(2, dtype=np.int64),
            buckets,
            np.array([big, big], dtype=np.int64),
            (buckets + 1) * MIN - 1,
        )
        (last,) = list(bounds)
        assert 0 <= last.lower <= last.upper <= EXACT_TOTAL
        assert last.upper == 2 * (step + 1) * cap
    stored = backend.bounds("e")
    assert stored is not None
    assert stored.upper == 6 * cap
    assert 0 <= stored.lower <= stored.upper


def test_the_library_refuses_counts_past_the_maximum() -> None:
    from consentry.errors import BadInput

    meter = Meter(TERMS, NO_OWNERS)
    with pytest.raises(BadInput, match="posts"):
        meter.ingest(
            np.array([0, 1], dtype=np.int64),
            ["a", "a"],
            np.array([2**62, 2**62], dtype=np.int64),
        )
    assert meter.alerts() == []
    assert meter.bounds("a") is None
