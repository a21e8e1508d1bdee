"""The meter's rule: alert levels, the bounds it reports, and the backend interface.

Rule 4 of the meter (docs/scraping.md, "The online meter"): alerts at ALERT_LEVELS percent
of the threshold; a level below 100 is reached when the count is at least that share of
the threshold, 100 only when the count is strictly more than the threshold, as billing.
Both backends apply it: `MemoryMeter` through `alert_levels` and `reaches`, `RedisMeter`'s
Lua script with the levels passed in ARGV (never as literals).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, overload

import numpy as np
import numpy.typing as npt

from consentry.instants import rfc3339

__all__ = [
    "ALERT_LEVELS",
    "EXACT_TOTAL",
    "Alert",
    "BatchBounds",
    "Bounds",
    "MeterBackend",
    "alert_levels",
    "bucket_cap",
    "reaches",
]

ALERT_LEVELS: tuple[int, ...] = (50, 80, 100)
"""Percentages of the threshold at which alerts are raised."""

I64 = npt.NDArray[np.int64]


class Bounds(NamedTuple):
    """An entity's rolling count at its latest access: lower <= true count <= upper.

    (A named tuple: a batch returns one per touched entity, so it must be cheap to build.)
    """

    entity: str
    latest_us: int
    lower: int
    upper: int


class BatchBounds(Sequence[Bounds]):
    """The bounds of the entities a batch touched, kept as arrays; a `Bounds` is built only
    when read (a batch may touch tens of thousands of entities nobody looks at)."""

    __slots__ = ("_ids", "_latest", "_lower", "_names", "_upper")

    def __init__(self, names: Sequence[str], ids: I64, latest: I64, lower: I64, upper: I64) -> None:
        self._names, self._ids = names, ids
        self._latest, self._lower, self._upper = latest, lower, upper

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, index: int) -> Bounds: ...

    @overload
    def __getitem__(self, index: slice) -> list[Bounds]: ...

    def __getitem__(self, index: int | slice) -> Bounds | list[Bounds]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return Bounds(
            self._names[int(self._ids[index])],
            int(self._latest[index]),
            int(self._lower[index]),
            int(self._upper[index]),
        )

    def __iter__(self) -> Iterator[Bounds]:
        names = self._names
        return map(
            Bounds,
            [names[i] for i in self._ids.tolist()],
            self._latest.tolist(),
            self._lower.tolist(),
            self._upper.tolist(),
        )


@dataclass(frozen=True, slots=True)
class Alert:
    """A level reached by an entity's rolling count."""

    entity: str
    level: int
    at_us: int
    lower: int
    upper: int
    confirmed: bool

    def to_json(self) -> dict[str, Any]:
        from consentry.scraping.results import from_us

        return {
            "entity": self.entity,
            "level": self.level,
            "at": rfc3339(from_us(self.at_us)),
            "lower": self.lower,
            "upper": self.upper,
            "confirmed": self.confirmed,
        }


class MeterBackend(Protocol):
    """Where bucket counts live. `add` takes one batch summed per (entity, bucket): row i is
    entity `names[codes[i]]`, bucket `buckets[i]`, `posts[i]` posts, rows sorted by (code,
    bucket); `latest[i]` is the latest instant of row i's entity in the batch. `names` is
    the meter's entity registry: a code always names the same entity."""

    def add(
        self, names: Sequence[str], codes: I64, buckets: I64, posts: I64, latest: I64
    ) -> tuple[Sequence[Bounds], list[Alert]]: ...

    def bounds(self, entity: str) -> Bounds | None: ...

    def alerts(self) -> list[Alert]: ...


EXACT_TOTAL = 2**52
"""No rolling count the meter computes exceeds this (`bucket_cap`)."""


def bucket_cap(span: int) -> int:
    """The most posts one bucket holds, for a window of `span` + 1 buckets.

    1. A window's buckets then sum to at most EXACT_TOTAL (2^52): exact in int64 and in the
       doubles Redis keeps (exact below 2^53), and 100 x the sum (alert levels) still fits
       int64, so no sum, bound or comparison can overflow or turn negative.
    2. A bucket that would hold more keeps the cap (it saturates): 3.1 x 10^12 posts in one
       minute of a 24-hour window, millions of times any threshold, so every alert still
       fires; the assessment stays the exact account.
    """
    return EXACT_TOTAL // (span + 1)


def reaches(count: int, level: int, threshold: int) -> bool:
    """Rule 4 for one count: whether `count` posts reach alert `level` (a percentage).

    1. Below 100 %: `count >= threshold x level / 100`, compared as `100 x count >=
       threshold x level` (integers; no rounding).
    2. At 100 %: strictly more than the threshold, as billing counts (`rules.over_line`).
    """
    return count > threshold if level == 100 else count * 100 >= threshold * level


def alert_levels(upper: I64, threshold: int) -> I64:
    """Rule 4 vectorised: the highest of ALERT_LEVELS each upper bound `reaches`, 0 for
    none (`100 x upper` cannot overflow: `bucket_cap`). Held to `reaches` by
    test_alert_levels_are_reaches (tests/scraping/test_meter.py)."""
    level = np.zeros(len(upper), dtype=np.int64)
    for lv in ALERT_LEVELS:
        hit = upper > threshold if lv == 100 else upper * 100 >= threshold * lv
        level[hit] = lv
    return level
