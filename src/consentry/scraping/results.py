"""The result of a scraping assessment, and the one place it is assembled.

Both paths (the columnar DuckDB path and the Ibis path on DuckDB or Spark) compute the
same per-entity figures and billed windows by their own means, then hand them to
`assemble_assessment`, so the result's shape, its amounts and its totals are defined once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

from consentry.instants import rfc3339
from consentry.scraping.rules import I64, Terms

__all__ = [
    "Assessment",
    "BilledWindow",
    "EntityAssessment",
    "assemble_assessment",
    "from_us",
    "rolling_series",
    "to_us",
]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    """A UTC datetime from microseconds since the epoch."""
    return _EPOCH + timedelta(microseconds=int(us))


def to_us(at: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (the inverse of `from_us`)."""
    return (at - _EPOCH) // _ONE_US


@dataclass(frozen=True, slots=True)
class BilledWindow:
    """One billed window: its span, posts, amount, credentials and evidence digest."""

    start: datetime
    end: datetime
    posts: int
    amount: Decimal
    credentials: tuple[str, ...]
    evidence_sha256: str
    accesses: int

    def to_json(self) -> dict[str, Any]:
        return {
            "start": rfc3339(self.start),
            "end": rfc3339(self.end),
            "posts": self.posts,
            "amount": f"{self.amount:.2f}",
            "credentials": list(self.credentials),
            "evidence_sha256": self.evidence_sha256,
            "accesses": self.accesses,
        }


@dataclass(frozen=True, slots=True)
class EntityAssessment:
    """One entity's result: totals, its densest window and the billed windows."""

    entity: str
    posts_total: int
    accesses: int
    max_posts_in_window: int
    max_window_start: datetime
    windows: tuple[BilledWindow, ...]
    amount: Decimal

    def to_json(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "posts_total": self.posts_total,
            "accesses": self.accesses,
            "max_posts_in_window": self.max_posts_in_window,
            "max_window_start": rfc3339(self.max_window_start),
            "windows": [w.to_json() for w in self.windows],
            "amount": f"{self.amount:.2f}",
        }


@dataclass(frozen=True, slots=True)
class Assessment:
    """The whole result, in the shape `consentry scraping assess --json` prints."""

    policy_version: str
    terms: Terms
    mode: str
    engine: str
    method: str
    entities: tuple[EntityAssessment, ...]
    accesses: int
    sparklines: dict[str, list[int]] = field(default_factory=dict)
    """Entity -> rolling-window posts sampled hourly (for the console), top entities only."""
    sparkline_from: datetime | None = None
    events: dict[str, pa.Table] = field(default_factory=dict, repr=False)
    """Accesses fetched per entity, with `ts_us`: on the Ibis path the over-line and top
    entities; on the columnar DuckDB path only the entities named in `only` (evidence)."""

    @property
    def total_amount(self) -> Decimal:
        return sum((e.amount for e in self.entities), Decimal("0.00"))

    @property
    def billed(self) -> list[EntityAssessment]:
        return [e for e in self.entities if e.windows]

    def entity(self, name: str) -> EntityAssessment | None:
        return next((e for e in self.entities if e.entity == name), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy_version": self.policy_version,
            "threshold_posts": self.terms.threshold,
            "window_seconds": self.terms.window_us // 1_000_000,
            "rounding": self.terms.rounding,
            "mode": self.mode,
            "currency": self.terms.currency,
            "engine": self.engine,
            "accesses": self.accesses,
            "entities": [e.to_json() for e in self.entities],
            "total_amount": f"{self.total_amount:.2f}",
        }


def rolling_series(ts: I64, posts: I64, window_us: int, t_from: int, t_to: int) -> list[int]:
    """Posts in the window ending at each whole hour from t_from to t_to: `[h - window, h)`."""
    hours = np.arange(t_from, t_to + 3_600_000_000, 3_600_000_000, dtype=np.int64)
    cum = np.zeros(len(ts) + 1, dtype=np.int64)
    np.cumsum(posts, out=cum[1:])
    hi = np.searchsorted(ts, hours, side="left")
    lo = np.searchsorted(ts, hours - window_us, side="left")
    result: list[int] = (cum[hi] - cum[lo]).tolist()
    return result


def assemble_assessment(
    *,
    policy_version: str,
    terms: Terms,
    mode: str,
    engine: str,
    method: str,
    entities: Sequence[str],
    posts_total: Sequence[int],
    accesses: Sequence[int],
    max_posts: Sequence[int],
    max_start_us: Sequence[int],
    windows: Mapping[str, Sequence[BilledWindow]],
    sparklines: dict[str, list[int]],
    sparkline_from: datetime | None,
    events: dict[str, pa.Table],
) -> Assessment:
    """The assessment of `entities` (in that order) from their exact-pass figures.

    1. One `EntityAssessment` per entity: its total posts, accesses, densest window (posts
       and start) and its billed windows in start order (none when it never went over).
    2. An entity's amount is the sum of its windows' amounts (0.00 without windows); the
       assessment's total is the sum over entities (`Assessment.total_amount`).
    3. The accesses counted are the sum of the entities' accesses.
    """
    zero = Decimal("0.00")
    assessed: list[EntityAssessment] = []
    for name, total, count, densest, start in zip(
        entities, posts_total, accesses, max_posts, max_start_us, strict=True
    ):
        billed = tuple(windows.get(name, ()))
        assessed.append(
            EntityAssessment(
                entity=name,
                posts_total=int(total),
                accesses=int(count),
                max_posts_in_window=int(densest),
                max_window_start=from_us(int(start)),
                windows=billed,
                amount=sum((w.amount for w in billed), zero),
            )
        )
    return Assessment(
        policy_version=policy_version,
        terms=terms,
        mode=mode,
        engine=engine,
        method=method,
        entities=tuple(assessed),
        accesses=int(sum(int(a) for a in accesses)),
        sparklines=sparklines,
        sparkline_from=sparkline_from,
        events=events,
    )
