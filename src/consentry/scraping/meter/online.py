"""The meter as the library, the API and the CLI use it: attribute a batch, sum it per
(entity, bucket), update a backend (`Meter`); build one for a home (`meter_for`); replay
access files through it (`replay`)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from consentry.errors import BadInput, Problem
from consentry.schema import MAX_POSTS_PER_ACCESS
from consentry.scraping.arrays import BitLayout, run_start_mask
from consentry.scraping.attribution import Owners
from consentry.scraping.meter.attributor import Attributor
from consentry.scraping.meter.memory import MemoryMeter
from consentry.scraping.meter.redis_backend import RedisMeter
from consentry.scraping.meter.rule import I64, Alert, Bounds, MeterBackend
from consentry.scraping.rules import Terms
from consentry.settings import Settings

__all__ = ["Meter", "meter_for", "replay"]

_MINUTE_US = 60_000_000
"""Buckets are minutes when the window is whole minutes, else seconds (rule 2)."""


class Meter:
    """The library object: attribute a batch, sum it per (entity, bucket), update a backend."""

    def __init__(self, terms: Terms, owners: Owners, backend: MeterBackend | None = None) -> None:
        self.terms = terms
        self.bucket_us = _MINUTE_US if terms.window_us % _MINUTE_US == 0 else 1_000_000
        self.attributor = Attributor(owners)
        self.backend: MeterBackend = backend or MemoryMeter(terms, self.bucket_us)
        self.events = 0

    def ingest(
        self, ts_us: I64, credentials: pa.Array | Sequence[str], posts: I64
    ) -> tuple[Sequence[Bounds], list[Alert]]:
        """Feed one batch; returns the touched entities' bounds and newly raised alerts.

        Each access counts 0 to MAX_POSTS_PER_ACCESS posts (BadInput otherwise, nothing
        counted), so the per-bucket sums of any batch that fits in memory are exact.
        """
        creds = (
            credentials
            if isinstance(credentials, pa.Array | pa.ChunkedArray)
            else pa.array(list(credentials), pa.string())
        )
        ts = np.asarray(ts_us, dtype=np.int64)
        p = np.asarray(posts, dtype=np.int64)
        if len(ts) == 0:
            return [], []
        if int(p.min()) < 0 or int(p.max()) > MAX_POSTS_PER_ACCESS:
            raise BadInput(
                Problem(
                    "access events",
                    None,
                    "posts",
                    f"each access counts 0 to {MAX_POSTS_PER_ACCESS:,} posts",
                )
            )
        ids = self.attributor.entities(creds, ts)
        buckets = ts // self.bucket_us
        # Sum per (entity, bucket) with one sort of a packed key; the latest instant per
        # entity rides along (maximum per entity run).
        b0 = int(buckets.min())
        layout = BitLayout.fitting(
            int(ids.max()).bit_length(), (int(buckets.max()) - b0).bit_length(), bits=62
        )
        if layout is not None:
            order = np.argsort(layout.pack(ids, buckets - b0), kind="stable")
        else:
            order = np.lexsort((buckets, ids))
        c, b, q, t = ids[order], buckets[order], p[order], ts[order]
        new_entity = run_start_mask(c)
        starts = np.flatnonzero(new_entity | run_start_mask(b))
        sums = np.add.reduceat(q, starts)
        ent_starts = np.flatnonzero(new_entity)
        ent_latest = np.maximum.reduceat(t, ent_starts)
        rows_per_entity = np.diff(np.r_[np.searchsorted(starts, ent_starts), len(starts)])
        self.events += len(ts)
        return self.backend.add(
            self.attributor.names,
            c[starts],
            b[starts],
            sums,
            np.repeat(ent_latest, rows_per_entity),
        )

    def ingest_table(self, events: pa.Table) -> tuple[Sequence[Bounds], list[Alert]]:
        """Feed canonical access events (request_id, ts, credential, posts, ...)."""
        ts = np.asarray(
            events["ts"].cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(),
            dtype=np.int64,
        )
        return self.ingest(
            ts,
            events["credential"].combine_chunks(),
            np.asarray(events["posts"].to_numpy(), dtype=np.int64),
        )

    def alerts(self) -> list[Alert]:
        return self.backend.alerts()

    def bounds(self, entity: str) -> Bounds | None:
        return self.backend.bounds(entity)

    def top_entities(self, n: int) -> list[Bounds]:
        """The `n` entities this meter has attributed with the largest rolling counts (upper
        bound; ties by name), for monitoring.

        An entity that is not named in the entities table is a bare credential (an API
        key, an IP address): it is shown as `credential:` and the first 16 hex digits of
        its SHA-256, never as itself.
        """
        named = set(self.attributor.owners.exact.column("entity").to_pylist())
        named |= set(self.attributor.owners.ranges.column("entity").to_pylist())
        found = []
        for name in list(self.attributor.names):
            bounds = self.backend.bounds(name)
            if bounds is not None:
                shown = name if name in named else _credential_label(name)
                found.append(bounds._replace(entity=shown))
        found.sort(key=lambda b: (-b.upper, b.entity))
        return found[:n]


def _credential_label(credential: str) -> str:
    return "credential:" + hashlib.sha256(credential.encode("utf-8")).hexdigest()[:16]


def meter_for(
    settings: Settings,
    *,
    backend: str = "memory",
    policy_file: Path | None = None,
    policy_version: str | None = None,
    prefix: str = "consentry:meter",
    entities: Path | None = None,
) -> Meter:
    """A meter for this home: terms from the policy, owners from `entities` or the lake."""
    from consentry.policy import load_policy
    from consentry.scraping.service import load_owners, resolve_terms

    policy = load_policy(policy_file or settings.policy_file)
    _, terms = resolve_terms(policy, policy_version, None, None)
    owners = load_owners(settings, entities)
    probe = Meter(terms, owners)
    if backend == "memory":
        return probe
    if backend == "redis":
        return Meter(terms, owners, RedisMeter(terms, probe.bucket_us, settings.redis_url, prefix))
    raise BadInput(Problem("--backend", None, None, f"{backend!r}: use memory or redis"))


def replay(meter: Meter, files: Iterable[Path], batch: int = 100_000) -> dict[str, Any]:
    """Feed validated access-event files through `meter` in time order, in batches."""
    from consentry.scraping.service import load_events

    events = load_events(list(files)).sort_by("ts")
    last: dict[str, Bounds] = {}
    for start in range(0, events.num_rows, batch):
        bounds, _ = meter.ingest_table(events.slice(start, batch))
        for b in bounds:
            last[b.entity] = b
    levels: dict[str, int] = {}
    for a in meter.alerts():
        levels[a.entity] = max(levels.get(a.entity, 0), a.level)
    ranked = sorted(last.values(), key=lambda b: (-b.upper, b.entity))
    return {
        "events": events.num_rows,
        "entities": [
            {
                "entity": b.entity,
                "lower": b.lower,
                "upper": b.upper,
                "level": f"{levels[b.entity]}%" if b.entity in levels else None,
            }
            for b in ranked
        ],
        "alerts": [a.to_json() for a in meter.alerts()],
    }
