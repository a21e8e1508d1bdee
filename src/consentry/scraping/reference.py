"""An independent, plain implementation of the whole assessment, for cross-checking.

It shares no code with the engine path except the billing rules (checked on their own
against a brute force) and the canonical digest: attribution uses the standard library's
`ipaddress`, windows are found entity by entity with NumPy prefix sums and half-open
binary searches. Slow on purpose-free clarity; meant for tests and small inputs.
"""

from __future__ import annotations

import ipaddress
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

from consentry.instants import rfc3339
from consentry.scraping.canonical import evidence_sha256
from consentry.scraping.rules import Terms, WindowSpan, select_windows, window_amount

__all__ = ["reference_assessment"]

_NEVER = np.iinfo(np.int64).min
_ALWAYS = np.iinfo(np.int64).max
_EXACT = 1000
"""Specificity of an exact credential match (beats any prefix length)."""

I64 = np.ndarray[Any, np.dtype[np.int64]]


def _us(column: pa.ChunkedArray, fill: int) -> I64:
    """A timestamp column as microseconds since the epoch, nulls as `fill`."""
    values = column.cast(pa.int64()).to_pylist()
    return np.array([fill if v is None else v for v in values], dtype=np.int64)


def reference_assessment(
    events: pa.Table, entities: pa.Table, terms: Terms, *, mode: str, policy_version: str
) -> dict[str, Any]:
    """The `--json` document for `events` and `entities` (canonical tables).

    1. One row per request_id: the first by (ts, credential, posts) (`_unique_accesses`).
    2. Attribution: the most specific owner valid at the access instant (`_owners`).
    3. Per entity: totals, the densest window, billed windows (`_entity_json`).
    """
    unique, ts = _unique_accesses(events)
    owner = _owners(unique, ts, entities)
    table = pa.table(
        {
            "request_id": [r["request_id"] for r in unique],
            "ts": pa.array([r["ts"] for r in unique], pa.timestamp("us", tz="UTC")),
            "credential": [r["credential"] for r in unique],
            "posts": pa.array([r["posts"] for r in unique], pa.int64()),
        }
    )
    posts = np.array([r["posts"] for r in unique], dtype=np.int64)
    out: list[dict[str, Any]] = []
    total = Decimal("0.00")
    for name in sorted(set(owner.tolist())):
        rows = np.flatnonzero(owner == name)
        entity, amount = _entity_json(name, rows, ts, posts, table, terms, mode)
        total += amount
        out.append(entity)
    return {
        "policy_version": policy_version,
        "threshold_posts": terms.threshold,
        "window_seconds": terms.window_us // 1_000_000,
        "rounding": terms.rounding,
        "mode": mode,
        "currency": terms.currency,
        "accesses": len(unique),
        "entities": out,
        "total_amount": f"{total:.2f}",
    }


def _unique_accesses(events: pa.Table) -> tuple[list[dict[str, Any]], I64]:
    """Step 1: the first row of each request_id by (ts, credential, posts), in request_id
    order, and their instants in microseconds since the epoch."""
    from consentry.scraping.results import to_us

    rows = sorted(
        events.select(["request_id", "ts", "credential", "posts"]).to_pylist(),
        key=lambda r: (r["request_id"], r["ts"], r["credential"], r["posts"]),
    )
    unique: list[dict[str, Any]] = []
    for row in rows:
        if not unique or unique[-1]["request_id"] != row["request_id"]:
            unique.append(row)
    ts = np.array([to_us(r["ts"]) for r in unique], dtype=np.int64)
    return unique, ts


def _owners(unique: list[dict[str, Any]], ts: I64, entities: pa.Table) -> np.ndarray[Any, Any]:
    """Step 2: each access's entity (an object array).

    1. An `entities` row owns its credential during `[valid_from, valid_to)`; a credential
       with a `/` that parses as a network owns every address in it, anything else is
       matched exactly.
    2. The most specific owner wins: an exact match, then the longest prefix; the first
       row wins among equals.
    3. An access nobody owns is its credential's own entity.
    """
    credentials = [r["credential"] for r in unique]
    best_specificity = np.full(len(unique), -1, dtype=np.int64)
    owner = np.array(credentials, dtype=object)
    valid_from = _us(entities["valid_from"], _NEVER)
    valid_to = _us(entities["valid_to"], _ALWAYS)
    for index, row in enumerate(entities.to_pylist()):
        owned, specificity = _owned_by(row["credential"], credentials)
        owned &= (ts >= valid_from[index]) & (ts < valid_to[index])
        better = owned & (specificity > best_specificity)
        owner[better] = row["entity"]
        best_specificity[better] = specificity
    return owner


def _owned_by(owned: str, credentials: list[str]) -> tuple[np.ndarray[Any, Any], int]:
    """Which of `credentials` the entity credential `owned` matches (a boolean array), and
    the match's specificity (the prefix length of a network, else `_EXACT`)."""
    try:
        network = ipaddress.ip_network(owned, strict=True)
        specificity = network.prefixlen if "/" in owned else _EXACT
    except ValueError:
        network = None
        specificity = _EXACT
    hit = np.zeros(len(credentials), dtype=bool)
    for i, credential in enumerate(credentials):
        if credential == owned:
            hit[i] = True
        elif network is not None and "/" in owned:
            try:
                hit[i] = ipaddress.ip_address(credential) in network
            except ValueError:
                hit[i] = False
    return hit, specificity


def _entity_json(
    name: str, rows: I64, ts: I64, posts: I64, table: pa.Table, terms: Terms, mode: str
) -> tuple[dict[str, Any], Decimal]:
    """Step 3 for the entity `name` owning the accesses `rows` (indexes into `table`, `ts`
    and `posts`): its `--json` entry and its amount.

    1. Totals: posts and accesses.
    2. The densest window: the most posts in `[t, t + window)` over its access instants t,
       the earliest such t.
    3. The windows billed under `mode` (`select_windows`), each with its amount, the
       credentials and the evidence digest of the accesses inside it.
    """
    from consentry.scraping.results import from_us

    order = rows[np.argsort(ts[rows], kind="stable")]
    entity_ts, entity_posts = ts[order], posts[order]
    cum = np.concatenate([[0], np.cumsum(entity_posts)])
    counts = (
        cum[np.searchsorted(entity_ts, entity_ts + terms.window_us, "left")]
        - cum[np.searchsorted(entity_ts, entity_ts, "left")]
    )
    best = int(counts.max())
    start = int(entity_ts[int(np.argmax(counts == best))])
    windows = []
    amount = Decimal("0.00")
    for span in select_windows(entity_ts, entity_posts, terms, mode):
        window, money = _window_json(span, order, entity_ts, entity_posts, table, terms)
        amount += money
        windows.append(window)
    entity = {
        "entity": name,
        "posts_total": int(entity_posts.sum()),
        "accesses": len(order),
        "max_posts_in_window": best,
        "max_window_start": rfc3339(from_us(start)),
        "windows": windows,
        "amount": f"{amount:.2f}",
    }
    return entity, amount


def _window_json(
    span: WindowSpan, order: I64, ts: I64, posts: I64, table: pa.Table, terms: Terms
) -> tuple[dict[str, Any], Decimal]:
    """One billed window's entry and amount: the entity's accesses (`order`, instants `ts`,
    `posts`) in `[start, start + window)` give its posts, credentials and evidence."""
    from consentry.scraping.results import from_us

    end_us = span.start_us + terms.window_us
    inside = (ts >= span.start_us) & (ts < end_us)
    part = table.take(pa.array(order[inside]))
    money = window_amount(span.posts, terms)
    window = {
        "start": rfc3339(from_us(span.start_us)),
        "end": rfc3339(from_us(end_us)),
        "posts": int(posts[inside].sum()),
        "amount": f"{money:.2f}",
        "credentials": sorted(set(part["credential"].to_pylist())),
        "evidence_sha256": evidence_sha256(part),
        "accesses": part.num_rows,
    }
    return window, money
