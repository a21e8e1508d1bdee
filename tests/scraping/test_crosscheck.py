"""The engine path (DuckDB both methods, Spark) against the NumPy reference and brute force."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import ibis
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import example, given, settings

from consentry.engine import connect
from consentry.scraping.assessment import assess
from consentry.scraping.attribution import check_owners
from consentry.scraping.reference import reference_assessment
from consentry.scraping.rules import forward_counts, select_windows
from tests.scraping import brute
from tests.scraping.cases import (
    BASE,
    CHAIN,
    DAY_US,
    ENTITIES,
    TERMS,
    TIES,
    entity_accesses,
    events_table,
    rows,
)


def engine_json(backend: Any, events: pa.Table, mode: str, method: str) -> dict[str, Any]:
    owners = check_owners(ENTITIES, location="entities")
    result = assess(
        backend,
        ibis.memtable(events.combine_chunks()),
        owners,
        TERMS,
        mode=mode,
        policy_version="test",
        method=method,
    ).to_json()
    result.pop("engine")
    return result


def offset(text: str) -> int:
    """An RFC 3339 instant of a document as µs after BASE."""
    return (datetime.fromisoformat(text) - BASE) // timedelta(microseconds=1)


Summary = dict[str, tuple[int, int, int, int, list[tuple[int, int]]]]


def summary(doc: dict[str, Any]) -> Summary:
    """Per entity of an assessment document: posts total, accesses, densest window (posts,
    start) and billed windows (start, posts), instants as µs after BASE."""
    return {
        e["entity"]: (
            e["posts_total"],
            e["accesses"],
            e["max_posts_in_window"],
            offset(e["max_window_start"]),
            [(offset(w["start"]), w["posts"]) for w in e["windows"]],
        )
        for e in doc["entities"]
    }


def plain(items: list[tuple[int, int, str, int]], mode: str) -> Summary:
    """The same from the plain rules in rules.py (`forward_counts`, `select_windows`) on each
    entity's accesses, attributed by the hand-written oracle (`cases.owner`)."""
    out: Summary = {}
    for entity, (t, p) in entity_accesses(items).items():
        ts, posts = np.array(t, np.int64), np.array(p, np.int64)
        counts, _, _ = forward_counts(ts, posts, DAY_US)
        best = int(counts.max())
        windows = select_windows(ts, posts, TERMS, mode)
        first = int(ts[int(np.argmax(counts == best))])
        out[entity] = (sum(p), len(t), best, first, [(w.start_us, w.posts) for w in windows])
    return out


@pytest.mark.parametrize("mode", ["earliest", "max_total"])
@settings(max_examples=25, deadline=None)
@given(items=rows)
@example(items=CHAIN)
@example(items=TIES)
def test_duckdb_matches_reference(mode: str, items: list[tuple[int, int, str, int]]) -> None:
    """DuckDB's exact passes (method `numpy`: the columnar path; method `window`: a SQL
    RANGE window) against the reference, and both against the plain rules, with ties at
    the threshold and accesses at window edges (`cases.EDGES`, CHAIN, TIES)."""
    events = events_table(items)
    expected = reference_assessment(events, ENTITIES, TERMS, mode=mode, policy_version="test")
    assert summary(expected) == plain(items, mode)
    backend = connect("duckdb")
    for method in ("numpy", "window"):
        assert engine_json(backend, events, mode, method) == expected, method


@pytest.mark.parametrize("mode", ["earliest", "max_total"])
@settings(max_examples=40, deadline=None)
@given(items=rows)
@example(items=CHAIN)
@example(items=TIES)
def test_reference_maxima_match_brute_force(
    mode: str, items: list[tuple[int, int, str, int]]
) -> None:
    """Per entity (attributed by the hand-written oracle): totals, the densest window and
    the billed windows of the reference against brute force over every access start
    (earliest) or every normal-form placement (max_total)."""
    expected = reference_assessment(
        events_table(items), ENTITIES, TERMS, mode=mode, policy_version="test"
    )
    accesses = entity_accesses(items)
    assert sorted(e["entity"] for e in expected["entities"]) == sorted(accesses)
    for entity in expected["entities"]:
        ts, posts = accesses[entity["entity"]]
        assert (entity["posts_total"], entity["accesses"]) == (sum(posts), len(ts))
        best, at = brute.max_window(ts, posts, DAY_US)
        assert entity["max_posts_in_window"] == best
        assert offset(entity["max_window_start"]) == at
        billed = [(offset(w["start"]), w["posts"]) for w in entity["windows"]]
        for w in entity["windows"]:
            start, end = offset(w["start"]), offset(w["end"])
            assert end - start == DAY_US
            assert w["posts"] == brute.window_posts(ts, posts, start, DAY_US) > TERMS.threshold
            assert w["accesses"] == len([t for t in ts if start <= t < end])
        if mode == "earliest":
            assert billed == brute.earliest(ts, posts, DAY_US, TERMS.threshold)
        else:
            for (a, _), (b, _) in itertools.pairwise(billed):
                assert b >= a + DAY_US  # disjoint: no post billed twice
            total = sum(n for _, n in billed)
            assert total == brute.max_total(ts, posts, DAY_US, TERMS.threshold)


def test_known_case_brute_force() -> None:
    # One entity (ak_b -> alpha): accesses at 0, 1 µs, a day - 1 µs, a day, a day + 1 µs.
    items = [
        (1, 0, "ak_b", 3),
        (2, 1, "ak_b", 3),
        (3, DAY_US - 1, "ak_b", 5),
        (4, DAY_US, "ak_b", 6),
        (5, DAY_US + 1, "ak_b", 0),
        (5, DAY_US + 2, "ak_b", 6),  # duplicate request id: the later copy is dropped
    ]
    events = events_table(items)
    expected = reference_assessment(events, ENTITIES, TERMS, mode="earliest", policy_version="test")
    (alpha,) = expected["entities"]
    ts = [0, 1, DAY_US - 1, DAY_US, DAY_US + 1]
    posts = [3, 3, 5, 6, 0]
    best, _at = brute.max_window(ts, posts, DAY_US)
    assert alpha["max_posts_in_window"] == best == 14
    billed = brute.earliest(ts, posts, DAY_US, TERMS.threshold)
    assert [w["posts"] for w in alpha["windows"]] == [p for _, p in billed] == [11]
    assert alpha["windows"][0]["start"] == "2025-03-05T00:00:00Z"
    assert alpha["windows"][0]["end"] == "2025-03-06T00:00:00Z"
    assert alpha["windows"][0]["amount"] == "0.17"
    backend = connect("duckdb")
    assert engine_json(backend, events, "earliest", "numpy") == expected


def test_attribution_rules_in_the_reference_and_engine() -> None:
    day = DAY_US
    items = [
        (1, day - 1, "ak_a", 1),  # alpha (before the rotation)
        (2, day, "ak_a", 1),  # beta (rotation instant belongs to the new owner)
        (3, 10, "10.0.0.5", 1),  # delta: /24 beats /16
        (4, 10, "10.0.1.9", 1),  # gamma: only the /16
        (5, 10, "10.0.0.200", 1),  # beta: exact beats any prefix
        (6, 10, "2001:db8::7", 1),  # gamma via IPv6
        (7, 10, "ak_lone", 1),  # unmapped: its own entity
    ]
    events = events_table(items)
    expected = reference_assessment(events, ENTITIES, TERMS, mode="earliest", policy_version="test")
    by = {e["entity"]: e["posts_total"] for e in expected["entities"]}
    assert by == {"alpha": 1, "beta": 2, "delta": 1, "gamma": 2, "ak_lone": 1}
    assert engine_json(connect("duckdb"), events, "earliest", "numpy") == expected


def test_spark_matches_reference(spark_session: Any) -> None:
    """Spark's exact passes (method `window`: a RANGE window in Spark SQL; method `numpy`)
    against the reference and the plain rules, on one log: random rows at window edges,
    plus CHAIN and TIES on credentials of their own (each its own entity)."""
    import random

    rng = random.Random(7)
    from tests.scraping.cases import CREDENTIALS, EDGES

    items = [
        (
            rng.randrange(60),
            rng.choice([*EDGES, rng.randrange(3 * DAY_US)]),
            rng.choice(CREDENTIALS),
            rng.randrange(7),
        )
        for _ in range(80)
    ]
    items += [(100 + n, off, "chain", posts) for n, off, _, posts in CHAIN]
    items += [(200 + n, off, f"ties-{cred}", posts) for n, off, cred, posts in TIES]
    events = events_table(items)
    backend = connect("spark", spark=spark_session)
    for mode in ("earliest", "max_total"):
        expected = reference_assessment(events, ENTITIES, TERMS, mode=mode, policy_version="test")
        assert summary(expected) == plain(items, mode)
        assert any(e["windows"] for e in expected["entities"])
        for method in ("window", "numpy"):
            assert engine_json(backend, events, mode, method) == expected, (mode, method)
