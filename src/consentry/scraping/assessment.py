"""Assess access logs against the scraping clause: per entity, exact windows and damages.

On DuckDB with method `numpy` (the default) the columnar path in
`consentry.scraping.columnar` runs instead (same results, built for volume). The Ibis
path (PySpark, or DuckDB with method `window`):

1. Attribution (`consentry.scraping.attribution.attribute`): deduplicated accesses with
   their entity and instant in microseconds.
2. The exact pass finds, for every entity, its total posts and the largest number of posts
   in any window `[s, s + window)` with s an access instant, and the earliest such s:
   - method `numpy` (default on DuckDB): the engine sorts (entity code, ts) once; NumPy
     computes every access's forward window with prefix sums and one binary search over a
     composite (entity, instant) key, then per-entity maxima with `reduceat`;
   - method `window` (default on Spark): a RANGE window `[ts, ts + window - 1 µs]` per
     entity in the engine (closed on both ends at microsecond resolution = half-open).
3. Screen: only entities whose maximum is over the line (strictly more than the threshold)
   have their accesses fetched and billed by the pure rules (`consentry.scraping.rules`).
4. Amounts per window (Decimal, half-up to cents once), per entity and in total.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from consentry.scraping.arrays import run_bounds, run_ids, run_starts
from consentry.scraping.attribution import Owners, attribute
from consentry.scraping.canonical import canonical_lines, digests_of_ranges
from consentry.scraping.results import (
    Assessment,
    BilledWindow,
    assemble_assessment,
    from_us,
    rolling_series,
)
from consentry.scraping.rules import I64, MODES, Terms, select_windows, window_amount

if TYPE_CHECKING:
    import ibis
    import ibis.expr.types as ir

__all__ = [
    "METHODS",
    "assess",
    "bill_entity",
    "exact_stats_numpy",
]

METHODS: tuple[str, ...] = ("numpy", "window")
SPARKLINE_ENTITIES = 50
"""How many entities (largest maxima first) get an hourly rolling series for the console."""


# ------------------------------------------------------------------- exact pass (NumPy)


def _forward_counts_segmented(codes: I64, ts: I64, posts: I64, window_us: int) -> I64:
    """Posts in `[ts[i], ts[i] + window)` of access i's own entity, for sorted (code, ts):
    `rules.forward_counts` for many entities at once (held to it, through the maxima, by
    `test_duckdb_matches_reference` and `test_spark_matches_reference`, method `numpy`).

    A composite key `rank * stride + (ts - t0)` keeps entities apart in one sorted array
    (stride > span + window), so one vectorised binary search serves every entity. When the
    key would overflow int64, entities are processed in groups that fit.
    """
    n = len(ts)
    counts = np.zeros(n, dtype=np.int64)
    if n == 0:
        return counts
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(posts, out=cum[1:])
    t0 = int(ts.min())
    stride = int(ts.max()) - t0 + window_us + 1
    starts = run_starts(codes)
    per_group = max(1, (2**62) // stride)
    bounds = np.r_[starts[::per_group], n]
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        key = run_ids(codes[a:b]) * stride + (ts[a:b] - t0)
        lo = np.searchsorted(key, key, side="left")
        hi = np.searchsorted(key, key + window_us, side="left")
        counts[a:b] = cum[a + hi] - cum[a + lo]
    return counts


def exact_stats_numpy(
    codes: I64, ts: I64, posts: I64, window_us: int
) -> tuple[I64, I64, I64, I64, I64, I64]:
    """Per entity (arrays sorted by code, ts): code, posts total, accesses, max window
    posts, earliest start (µs) of a window with that many posts, and segment start index."""
    counts = _forward_counts_segmented(codes, ts, posts, window_us)
    bounds = run_bounds(codes)
    starts = bounds[:-1]
    if len(starts) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty, empty, empty
    totals = np.add.reduceat(posts, starts)
    lengths = np.diff(bounds)
    maxima = np.maximum.reduceat(counts, starts)
    seg_of = np.repeat(np.arange(len(starts)), lengths)
    hits = np.flatnonzero(counts == maxima[seg_of])
    _, first = np.unique(seg_of[hits], return_index=True)
    max_start = ts[hits[first]]
    return codes[starts], totals, lengths.astype(np.int64), maxima, max_start, starts


# --------------------------------------------------------------------------- billing


def bill_entity(entity: str, events: pa.Table, terms: Terms, mode: str) -> tuple[BilledWindow, ...]:
    """The billed windows of one entity from its accesses (request_id, ts, credential,
    posts, ts_us), any order."""
    ordered = events.sort_by([("ts_us", "ascending"), ("request_id", "ascending")])
    ts: I64 = ordered["ts_us"].to_numpy().astype(np.int64)
    posts: I64 = ordered["posts"].to_numpy().astype(np.int64)
    spans = select_windows(ts, posts, terms, mode)
    if not spans:
        return ()
    # Canonical order is (ts, request_id): each window is a run of `ordered`, so the
    # entity's lines are built once and every window hashes its own slice.
    lines = canonical_lines(ordered)
    ranges = [
        (
            int(np.searchsorted(ts, span.start_us, side="left")),
            int(np.searchsorted(ts, span.start_us + terms.window_us, side="left")),
        )
        for span in spans
    ]
    digests = digests_of_ranges(lines, ranges)
    creds = ordered["credential"].combine_chunks()
    billed: list[BilledWindow] = []
    for span, (lo, hi), digest in zip(spans, ranges, digests, strict=True):
        billed.append(
            BilledWindow(
                start=from_us(span.start_us),
                end=from_us(span.start_us + terms.window_us),
                posts=span.posts,
                amount=window_amount(span.posts, terms),
                credentials=tuple(sorted(pc.unique(creds.slice(lo, hi - lo)).to_pylist())),
                evidence_sha256=digest,
                accesses=hi - lo,
            )
        )
    return tuple(billed)


# --------------------------------------------------------------------------- engine path


def _to_numpy(column: pa.ChunkedArray | pa.Array) -> I64:
    return np.asarray(column.to_numpy(), dtype=np.int64)


def _stats_numpy(backend: ibis.BaseBackend, att: ir.Table, window_us: int) -> pa.Table:
    import ibis

    names = backend.to_pyarrow(att.select("entity").distinct())["entity"].combine_chunks()
    names = names.take(pc.sort_indices(names))
    table = pa.table({"entity": names, "code": pa.array(np.arange(len(names), dtype=np.int64))})
    joined = att.inner_join(ibis.memtable(table), "entity").select("code", "ts_us", "posts")
    data = backend.to_pyarrow(joined.order_by(["code", "ts_us"]))
    codes, totals, lengths, maxima, max_start, _ = exact_stats_numpy(
        _to_numpy(data["code"]), _to_numpy(data["ts_us"]), _to_numpy(data["posts"]), window_us
    )
    del data
    return pa.table(
        {
            "entity": names.take(pa.array(codes, pa.int64())),
            "posts_total": pa.array(totals, pa.int64()),
            "accesses": pa.array(lengths, pa.int64()),
            "max_posts": pa.array(maxima, pa.int64()),
            "max_start_us": pa.array(max_start, pa.int64()),
        }
    )


def _stats_window(backend: ibis.BaseBackend, att: ir.Table, window_us: int) -> pa.Table:
    """Per entity: totals and the densest window in the engine's SQL. The RANGE frame
    `[ts, ts + window - 1 µs]` is `rules.forward_counts`' half-open window at µs resolution
    (held to the plain rules by `test_duckdb_matches_reference` and
    `test_spark_matches_reference`, method `window`, with ties at the threshold and
    accesses at window edges)."""
    import ibis

    w = ibis.window(group_by=att.entity, order_by=att.ts_us, range=(0, window_us - 1))
    counted = att.mutate(cnt=att.posts.sum().over(w))
    counted = counted.mutate(densest=counted.cnt.max().over(group_by=counted.entity))
    stats = counted.group_by("entity").agg(
        posts_total=counted.posts.sum(),
        accesses=counted.count(),
        max_posts=counted.densest.max(),
        max_start_us=counted.ts_us.min(where=counted.cnt == counted.densest),
    )
    result = backend.to_pyarrow(stats)
    return result.cast(
        pa.schema(
            [
                ("entity", pa.string()),
                ("posts_total", pa.int64()),
                ("accesses", pa.int64()),
                ("max_posts", pa.int64()),
                ("max_start_us", pa.int64()),
            ]
        )
    )


def assess(
    backend: ibis.BaseBackend,
    events: ir.Table,
    owners: Owners,
    terms: Terms,
    *,
    mode: str = "earliest",
    policy_version: str,
    method: str | None = None,
    sparklines: int = SPARKLINE_ENTITIES,
    only: Sequence[str] | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> Assessment:
    """Assess `events` (canonical access_events on `backend`) under `terms` (see module doc).

    Entities come sorted by name; every entity with any access is listed (or only those
    named in `only`, e.g. for one entity's evidence pack). The accesses fetched for billing
    and for the console's series are kept in `Assessment.events`.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    chosen = method or ("numpy" if backend.name == "duckdb" else "window")
    if chosen not in METHODS:
        raise ValueError(f"unknown method {chosen!r}")
    step = on_progress or (lambda _: None)
    if backend.name == "duckdb" and chosen == "numpy":
        from consentry.scraping.columnar import assess_columnar

        return assess_columnar(
            backend,
            events,
            owners,
            terms,
            mode=mode,
            policy_version=policy_version,
            sparklines=sparklines,
            only=only,
            step=step,
        )
    step("attributing accesses")
    att = attribute(backend, events, owners)
    if only is not None:
        import ibis

        names = ibis.memtable(pa.table({"entity": pa.array(list(only), pa.string())}))
        att = att.semi_join(names, "entity")
    return _assess_materialised(
        backend,
        att,
        terms,
        mode=mode,
        policy_version=policy_version,
        method=chosen,
        sparklines=sparklines,
        step=step,
    )


def _assess_materialised(
    backend: ibis.BaseBackend,
    att: ir.Table,
    terms: Terms,
    *,
    mode: str,
    policy_version: str,
    method: str,
    sparklines: int,
    step: Callable[[str], None],
) -> Assessment:
    """`_assess_attributed` over the attributed accesses stored once as a table on DuckDB,
    dropped after: the exact pass and the billing fetch both read them. Spark recomputes
    the lineage (its path is for cross-checks and clusters)."""
    table_name = f"scraping_attributed_{uuid.uuid4().hex[:12]}"
    if backend.name == "duckdb":
        att = backend.create_table(table_name, att)
    try:
        return _assess_attributed(
            backend,
            att,
            terms,
            mode=mode,
            policy_version=policy_version,
            method=method,
            sparklines=sparklines,
            step=step,
        )
    finally:
        if backend.name == "duckdb":
            backend.drop_table(table_name, force=True)


def _assess_attributed(
    backend: ibis.BaseBackend,
    att: ir.Table,
    terms: Terms,
    *,
    mode: str,
    policy_version: str,
    method: str,
    sparklines: int,
    step: Callable[[str], None],
) -> Assessment:
    """Steps 2-4 of the module doc over the attributed accesses `att`.

    1. The exact pass per entity (`_exact_stats`), sorted by entity name.
    2. The accesses of the over-line entities and of the `sparklines` entities with the
       largest maxima are fetched (`_fetch_entities`).
    3. Over-line entities are billed by the pure rules (`bill_entity`); the top entities
       get their hourly series (`_series`).
    """
    step("exact pass")
    stats = _exact_stats(backend, att, terms, method)
    entities = stats["entity"]
    maxima = _to_numpy(stats["max_posts"])
    over = np.flatnonzero(maxima > terms.threshold)
    top = np.argsort(-maxima, kind="stable")[:sparklines]
    wanted = sorted(set(entities.take(pa.array(np.union1d(over, top))).to_pylist()))
    step("billing")
    detail = _fetch_entities(backend, att, wanted)
    over_names = set(entities.take(pa.array(over)).to_pylist()) if len(over) else set()
    billed = {name: bill_entity(name, detail[name], terms, mode) for name in sorted(over_names)}
    series, series_from = _series(detail, entities.take(pa.array(top)).to_pylist(), terms)
    return assemble_assessment(
        policy_version=policy_version,
        terms=terms,
        mode=mode,
        engine=backend.name if backend.name == "duckdb" else "spark",
        method=method,
        entities=entities.to_pylist(),
        posts_total=stats["posts_total"].to_pylist(),
        accesses=stats["accesses"].to_pylist(),
        max_posts=stats["max_posts"].to_pylist(),
        max_start_us=stats["max_start_us"].to_pylist(),
        windows=billed,
        sparklines=series,
        sparkline_from=series_from,
        events=detail,
    )


def _exact_stats(backend: ibis.BaseBackend, att: ir.Table, terms: Terms, method: str) -> pa.Table:
    """Per entity, sorted by name: posts total, accesses, max posts in a window and its
    earliest start, by the method's exact pass."""
    if method == "numpy":
        stats = _stats_numpy(backend, att, terms.window_us)
    else:
        stats = _stats_window(backend, att, terms.window_us)
    return stats.sort_by([("entity", "ascending")])


def _fetch_entities(
    backend: ibis.BaseBackend, att: ir.Table, wanted: Sequence[str]
) -> dict[str, pa.Table]:
    """The accesses (entity, request_id, ts, credential, posts, ts_us) of each `wanted`
    entity, in one fetch sorted by entity and cut at the runs of entity names (the runs of
    their dictionary codes: equal names are adjacent)."""
    if not wanted:
        return {}
    import ibis

    keep = ibis.memtable(pa.table({"entity": pa.array(list(wanted), pa.string())}))
    subset = att.semi_join(keep, "entity").select(
        "entity", "request_id", "ts", "credential", "posts", "ts_us"
    )
    fetched = backend.to_pyarrow(subset).sort_by([("entity", "ascending")])
    ents = fetched["entity"].combine_chunks()
    bounds = run_bounds(np.asarray(ents.dictionary_encode().indices.to_numpy()))
    return {
        str(ents[a].as_py()): fetched.slice(a, b - a)
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
    }


def _series(
    detail: dict[str, pa.Table], top_names: Sequence[str], terms: Terms
) -> tuple[dict[str, list[int]], datetime | None]:
    """Console series of the `top_names` entities: posts in the window ending at each whole
    hour, over the span of every fetched access (`rolling_series`)."""
    series: dict[str, list[int]] = {}
    if not detail:
        return series, None
    all_ts = np.concatenate([_to_numpy(t["ts_us"]) for t in detail.values()])
    hour = 3_600_000_000
    t_from = int(all_ts.min()) // hour * hour + hour
    t_to = (int(all_ts.max()) // hour + 1) * hour + terms.window_us
    for name in top_names:
        t = detail[name].sort_by("ts_us")
        series[name] = rolling_series(
            _to_numpy(t["ts_us"]), _to_numpy(t["posts"]), terms.window_us, t_from, t_to
        )
    return series, from_us(t_from)


def entity_names(assessment: Assessment) -> Sequence[str]:
    """Entities of an assessment, in output order."""
    return [e.entity for e in assessment.entities]
