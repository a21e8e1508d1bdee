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
from consentry.scraping.rules import Terms, select_windows, window_amount

__all__ = ["reference_assessment"]

_NEVER = np.iinfo(np.int64).min
_ALWAYS = np.iinfo(np.int64).max


def _us(column: pa.ChunkedArray, fill: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    values = column.cast(pa.int64()).to_pylist()
    return np.array([fill if v is None else v for v in values], dtype=np.int64)


def reference_assessment(
    events: pa.Table, entities: pa.Table, terms: Terms, *, mode: str, policy_version: str
) -> dict[str, Any]:
    """The `--json` document for `events` and `entities` (canonical tables)."""
    from consentry.scraping.results import from_us

    # 1. One row per request_id: the first by (ts, credential, posts).
    rows = sorted(
        events.select(["request_id", "ts", "credential", "posts"]).to_pylist(),
        key=lambda r: (r["request_id"], r["ts"], r["credential"], r["posts"]),
    )
    unique: list[dict[str, Any]] = []
    for r in rows:
        if not unique or unique[-1]["request_id"] != r["request_id"]:
            unique.append(r)
    n = len(unique)
    epoch = from_us(0)
    deltas = [r["ts"] - epoch for r in unique]
    ts = np.array(
        [(d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds for d in deltas],
        dtype=np.int64,
    )
    creds = [r["credential"] for r in unique]
    # 2. Attribution: the most specific owner valid at the access instant.
    best_spec = np.full(n, -1, dtype=np.int64)
    owner = np.array(creds, dtype=object)
    frm = _us(entities["valid_from"], _NEVER)
    to = _us(entities["valid_to"], _ALWAYS)
    for k, row in enumerate(entities.to_pylist()):
        try:
            network = ipaddress.ip_network(row["credential"], strict=True)
            spec = network.prefixlen if "/" in row["credential"] else 1000
        except ValueError:
            network = None
            spec = 1000
        hit = np.zeros(n, dtype=bool)
        for i, c in enumerate(creds):
            if c == row["credential"]:
                hit[i] = True
            elif network is not None and "/" in row["credential"]:
                try:
                    hit[i] = ipaddress.ip_address(c) in network
                except ValueError:
                    hit[i] = False
        hit &= (ts >= frm[k]) & (ts < to[k])
        better = hit & (spec > best_spec)
        owner[better] = row["entity"]
        best_spec[better] = spec
    # 3. Per entity: totals, the densest window, billed windows.
    out: list[dict[str, Any]] = []
    table = pa.table(
        {
            "request_id": [r["request_id"] for r in unique],
            "ts": pa.array([r["ts"] for r in unique], pa.timestamp("us", tz="UTC")),
            "credential": creds,
            "posts": pa.array([r["posts"] for r in unique], pa.int64()),
        }
    )
    total = Decimal("0.00")
    for name in sorted(set(owner.tolist())):
        idx = np.flatnonzero(owner == name)
        order = idx[np.argsort(ts[idx], kind="stable")]
        t = ts[order]
        p = np.array([unique[i]["posts"] for i in order.tolist()], dtype=np.int64)
        cum = np.concatenate([[0], np.cumsum(p)])
        counts = (
            cum[np.searchsorted(t, t + terms.window_us, "left")]
            - cum[np.searchsorted(t, t, "left")]
        )
        best = int(counts.max())
        start = int(t[int(np.argmax(counts == best))])
        windows = []
        amount = Decimal("0.00")
        for span in select_windows(t, p, terms, mode):
            inside = order[(t >= span.start_us) & (t < span.start_us + terms.window_us)]
            part = table.take(pa.array(inside))
            money = window_amount(span.posts, terms)
            amount += money
            windows.append(
                {
                    "start": rfc3339(from_us(span.start_us)),
                    "end": rfc3339(from_us(span.start_us + terms.window_us)),
                    "posts": int(
                        p[(t >= span.start_us) & (t < span.start_us + terms.window_us)].sum()
                    ),
                    "amount": f"{money:.2f}",
                    "credentials": sorted(set(part["credential"].to_pylist())),
                    "evidence_sha256": evidence_sha256(part),
                    "accesses": part.num_rows,
                }
            )
        total += amount
        out.append(
            {
                "entity": name,
                "posts_total": int(p.sum()),
                "accesses": len(order),
                "max_posts_in_window": best,
                "max_window_start": rfc3339(from_us(start)),
                "windows": windows,
                "amount": f"{amount:.2f}",
            }
        )
    return {
        "policy_version": policy_version,
        "threshold_posts": terms.threshold,
        "window_seconds": terms.window_us // 1_000_000,
        "rounding": terms.rounding,
        "mode": mode,
        "currency": terms.currency,
        "accesses": n,
        "entities": out,
        "total_amount": f"{total:.2f}",
    }
