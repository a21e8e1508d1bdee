"""The online meter: per-entity minute buckets, exact bounds of the rolling count, alerts.

Rules (docs/scraping.md):

1. Accesses are attributed like the assessment does (exact credential, then the longest
   prefix, within validity; unmapped credentials are their own entity).
2. Each entity keeps the posts of every bucket (one minute when the window is whole minutes,
   else one second) of the last `window / bucket + 1` buckets, up to its latest access t.
3. The rolling count at t is the posts in `(t - window, t]`. Buckets after the oldest are
   wholly inside it, the oldest only partly: lower bound = all buckets but the oldest,
   upper bound = all buckets. Both are exact bounds of the true count.
4. Alerts at 50 %, 80 % and 100 % of the threshold: a level is raised once when the upper
   bound reaches it (100 %: exceeds the threshold), `confirmed` when the lower bound does
   too; levels re-arm when the upper bound falls below 50 %.
5. An access older than the entity's oldest kept bucket is too late to count (`late`).
   The meter counts what it is fed: feed each request once (it keeps no request ids).
   Alerts are warnings, never evidence: the assessment is the exact account.

Backends: `MemoryMeter` (one process) and `RedisMeter` (Lua scripts; every key of one
entity carries the hash tag `{entity}` so a script touches one Redis Cluster slot).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consentry.instants import rfc3339
from consentry.scraping.attribution import Owners, owner_candidates
from consentry.scraping.rules import Terms
from consentry.settings import Settings

__all__ = [
    "ALERT_LEVELS",
    "Alert",
    "Attributor",
    "Bounds",
    "MemoryMeter",
    "Meter",
    "MeterBackend",
    "RedisMeter",
    "meter_for",
    "replay",
]

ALERT_LEVELS: tuple[int, ...] = (50, 80, 100)
"""Percentages of the threshold at which alerts are raised."""

I64 = npt.NDArray[np.int64]
_MINUTE_US = 60_000_000


@dataclass(frozen=True, slots=True)
class Bounds:
    """An entity's rolling count at its latest access: lower <= true count <= upper."""

    entity: str
    latest_us: int
    lower: int
    upper: int


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
        from consentry.scraping.assessment import from_us

        return {
            "entity": self.entity,
            "level": self.level,
            "at": rfc3339(from_us(self.at_us)),
            "lower": self.lower,
            "upper": self.upper,
            "confirmed": self.confirmed,
        }


def _level_of(upper: int, threshold: int) -> int:
    """The highest alert level the upper bound reaches (0: none)."""
    reached = 0
    for level in ALERT_LEVELS:
        limit = threshold * level / 100
        if (upper > threshold) if level == 100 else (upper >= limit):
            reached = level
    return reached


class MeterBackend(Protocol):
    """Where bucket counts live; `add` takes one batch already summed per (entity, bucket)."""

    def add(
        self, entities: Sequence[str], buckets: I64, posts: I64, latest: I64
    ) -> tuple[list[Bounds], list[Alert]]: ...

    def bounds(self, entity: str) -> Bounds | None: ...

    def alerts(self) -> list[Alert]: ...


class Attributor:
    """Credential -> entity for batches, with the assessment's rules (cached per credential)."""

    def __init__(self, owners: Owners) -> None:
        self.owners = owners
        # credential -> (entity if static else None, candidate rows)
        self._cache: dict[str, tuple[str | None, list[tuple[str, int, int, int]]]] = {}

    def _resolve(self, credentials: list[str]) -> None:
        missing = [c for c in credentials if c not in self._cache]
        if not missing:
            return
        found = owner_candidates(pa.array(missing, pa.string()), self.owners)
        found = found.filter(pc.is_in(found["credential"], value_set=pa.array(missing)))
        rows: dict[str, list[tuple[str, int, int, int]]] = {c: [] for c in missing}
        frm = found["valid_from"].cast(pa.int64()).to_pylist()
        to = found["valid_to"].cast(pa.int64()).to_pylist()
        for cred, ent, a, b, spec in zip(
            found["credential"].to_pylist(),
            found["entity"].to_pylist(),
            frm,
            to,
            found["specificity"].to_pylist(),
            strict=True,
        ):
            rows[cred].append((ent, a, b, spec))
        for cred, cands in rows.items():
            cands.sort(key=lambda r: -r[3])
            static: str | None = None
            if not cands:
                static = cred
            elif len(cands) == 1 and cands[0][1] <= -(2**62) and cands[0][2] >= 2**62:
                static = cands[0][0]
            self._cache[cred] = (static, cands)

    def entities(self, credentials: pa.Array, ts: I64) -> tuple[list[str], I64]:
        """(entity names, code of each access into them) for one batch."""
        encoded = (
            pc.dictionary_encode(credentials).combine_chunks()
            if isinstance(credentials, pa.ChunkedArray)
            else pc.dictionary_encode(credentials)
        )
        distinct = encoded.dictionary.to_pylist()
        idx = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        self._resolve(distinct)
        names: list[str] = []
        index: dict[str, int] = {}
        per_cred = np.zeros(len(distinct), dtype=np.int64)
        dynamic: list[int] = []
        for k, cred in enumerate(distinct):
            static, _ = self._cache[cred]
            if static is None:
                dynamic.append(k)
                continue
            per_cred[k] = index.setdefault(static, len(names))
            if per_cred[k] == len(names):
                names.append(static)
        codes = per_cred[idx]
        for k in dynamic:
            _, cands = self._cache[distinct[k]]
            rows = np.flatnonzero(idx == k)
            best = np.full(len(rows), -1, dtype=np.int64)
            chosen = np.full(len(rows), -1, dtype=np.int64)
            for ent, a, b, spec in cands:
                hit = (ts[rows] >= a) & (ts[rows] < b) & (spec > best)
                code = index.setdefault(ent, len(names))
                if code == len(names):
                    names.append(ent)
                chosen[hit] = code
                best[hit] = spec
            own = index.setdefault(distinct[k], len(names))
            if own == len(names):
                names.append(distinct[k])
            codes[rows] = np.where(chosen < 0, own, chosen)
        return names, codes


class MemoryMeter:
    """In-process bucket store (one process; the default)."""

    def __init__(self, terms: Terms, bucket_us: int) -> None:
        self.terms = terms
        self.bucket_us = bucket_us
        self.span = terms.window_us // bucket_us
        self._buckets: dict[str, dict[int, int]] = {}
        self._top: dict[str, int] = {}
        self._total: dict[str, int] = {}
        self._latest: dict[str, int] = {}
        self._level: dict[str, int] = {}
        self._alerts: list[Alert] = []
        self.late = 0

    def add(
        self, entities: Sequence[str], buckets: I64, posts: I64, latest: I64
    ) -> tuple[list[Bounds], list[Alert]]:
        """Add per-(entity, bucket) sums; `latest[i]` is the latest instant of row i's entity."""
        touched: dict[str, None] = {}
        raised: list[Alert] = []
        span = self.span
        for name, k, p, t in zip(
            entities, buckets.tolist(), posts.tolist(), latest.tolist(), strict=True
        ):
            store = self._buckets.get(name)
            if store is None:
                store = self._buckets[name] = {}
                self._top[name] = k
                self._total[name] = 0
                self._latest[name] = t
            top = self._top[name]
            if k > top:
                self._top[name] = top = k
                for old in [b for b in store if b < top - span]:
                    self._total[name] -= store.pop(old)
            if k < top - span:
                self.late += 1
                continue
            store[k] = store.get(k, 0) + p
            self._total[name] += p
            if t > self._latest[name]:
                self._latest[name] = t
            touched[name] = None
            # Checked after every bucket, so a peak inside one batch still alerts.
            total = self._total[name]
            at = min(t, (k + 1) * self.bucket_us - 1)
            raised += self._check(Bounds(name, at, total - store.get(top - span, 0), total))
        out = [b for b in (self.bounds(name) for name in touched) if b is not None]
        return out, raised

    def _check(self, b: Bounds) -> list[Alert]:
        level = _level_of(b.upper, self.terms.threshold)
        armed = self._level.get(b.entity, 0)
        if level == 0:
            self._level[b.entity] = 0
            return []
        new: list[Alert] = []
        for lv in ALERT_LEVELS:
            if armed < lv <= level:
                limit = self.terms.threshold * lv / 100
                confirmed = b.lower > self.terms.threshold if lv == 100 else b.lower >= limit
                new.append(Alert(b.entity, lv, b.latest_us, b.lower, b.upper, confirmed))
        self._level[b.entity] = max(armed, level)
        self._alerts += new
        return new

    def bounds(self, entity: str) -> Bounds | None:
        store = self._buckets.get(entity)
        if store is None:
            return None
        top = self._top[entity]
        total = self._total[entity]
        oldest = store.get(top - self.span, 0)
        return Bounds(entity, self._latest[entity], total - oldest, total)

    def alerts(self) -> list[Alert]:
        return list(self._alerts)

    def entities(self) -> list[str]:
        return sorted(self._buckets)


_ADD_SCRIPT = """
-- KEYS[1]: the entity's bucket hash, KEYS[2]: its alert list (same hash tag, same slot).
-- ARGV: span, threshold, latest_us, bucket_us, then bucket/posts pairs.
local span = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local latest = tonumber(ARGV[3])
local h = KEYS[1]
local top = tonumber(redis.call('HGET', h, 'top') or '-1')
local low = tonumber(redis.call('HGET', h, 'low') or '-1')
local total = tonumber(redis.call('HGET', h, 'total') or '0')
local late = 0
local seen = tonumber(redis.call('HGET', h, 'latest') or '0')
if latest > seen then seen = latest end
local armed = tonumber(redis.call('HGET', h, 'level') or '0')
local bucket_us = tonumber(ARGV[4])
if top < 0 then
  top = tonumber(ARGV[5]); low = top
end
local raised = 0
local lower = 0
-- Pairs come sorted by bucket; bounds and alert levels are checked after each one.
for i = 5, #ARGV, 2 do
  local k = tonumber(ARGV[i])
  local p = tonumber(ARGV[i + 1])
  if k > top then top = k end
  local floor = top - span
  if floor - low > 64 then
    -- A long gap: look at the buckets that exist instead of every number in between.
    local fields = redis.call('HKEYS', h)
    local newlow = top
    for _, f in ipairs(fields) do
      if string.sub(f, 1, 1) == 'b' then
        local b = tonumber(string.sub(f, 2))
        if b < floor then
          total = total - tonumber(redis.call('HGET', h, f)); redis.call('HDEL', h, f)
        elseif b < newlow then
          newlow = b
        end
      end
    end
    low = newlow
  else
    while low < floor do
      local v = redis.call('HGET', h, 'b' .. low)
      if v then total = total - tonumber(v); redis.call('HDEL', h, 'b' .. low) end
      low = low + 1
    end
  end
  if k < floor then
    late = late + 1
  else
    redis.call('HINCRBY', h, 'b' .. k, p)
    total = total + p
    if k < low then low = k end
    local oldest = tonumber(redis.call('HGET', h, 'b' .. floor) or '0')
    lower = total - oldest
    local level = 0
    if total * 100 >= threshold * 50 then level = 50 end
    if total * 100 >= threshold * 80 then level = 80 end
    if total > threshold then level = 100 end
    if level == 0 then
      armed = 0
    else
      local at = (k + 1) * bucket_us - 1
      if latest < at then at = latest end
      for _, lv in ipairs({50, 80, 100}) do
        if armed < lv and lv <= level then
          local confirmed = 0
          if lv == 100 then
            if lower > threshold then confirmed = 1 end
          elseif lower * 100 >= threshold * lv then
            confirmed = 1
          end
          redis.call('RPUSH', KEYS[2], cjson.encode({level = lv, at_us = at, lower = lower,
                                                     upper = total, confirmed = confirmed}))
          raised = raised + 1
        end
      end
      if level > armed then armed = level end
    end
  end
end
local oldest = tonumber(redis.call('HGET', h, 'b' .. (top - span)) or '0')
lower = total - oldest
redis.call('HSET', h, 'top', top, 'low', low, 'total', total, 'latest', seen, 'level', armed)
if late > 0 then redis.call('HINCRBY', h, 'late', late) end
return {lower, total, seen, raised}
"""


def _tag(entity: str) -> str:
    """The entity as a hash tag: braces would end the tag early, so they are escaped."""
    return entity.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


class RedisMeter:
    """Bucket store in Redis shared by several processes (one Lua call per entity and batch,
    pipelined). Keys: `<prefix>:{<entity>}:b` (hash) and `<prefix>:{<entity>}:alerts`
    (list), plus the set `<prefix>:alerted` of entities with alerts."""

    def __init__(self, terms: Terms, bucket_us: int, url: str, prefix: str) -> None:
        import redis

        self.terms = terms
        self.bucket_us = bucket_us
        self.span = terms.window_us // bucket_us
        self.prefix = prefix
        self.client = redis.Redis.from_url(url)
        self.script = self.client.register_script(_ADD_SCRIPT)

    def _keys(self, entity: str) -> list[str]:
        base = f"{self.prefix}:{{{_tag(entity)}}}"
        return [f"{base}:b", f"{base}:alerts"]

    def add(
        self, entities: Sequence[str], buckets: I64, posts: I64, latest: I64
    ) -> tuple[list[Bounds], list[Alert]]:
        grouped: dict[str, list[int]] = {}
        newest: dict[str, int] = {}
        for name, k, p, t in zip(
            entities, buckets.tolist(), posts.tolist(), latest.tolist(), strict=True
        ):
            grouped.setdefault(name, []).extend((k, p))
            newest[name] = max(newest.get(name, t), t)
        pipe = self.client.pipeline(transaction=False)
        names = list(grouped)
        for name in names:
            self.script(
                keys=self._keys(name),
                args=[
                    self.span,
                    self.terms.threshold,
                    newest[name],
                    self.bucket_us,
                    *grouped[name],
                ],
                client=pipe,
            )
        results = pipe.execute()
        out: list[Bounds] = []
        alerted: list[str] = []
        counts: dict[str, int] = {}
        for name, (lower, upper, seen, raised) in zip(names, results, strict=True):
            out.append(Bounds(name, int(seen), int(lower), int(upper)))
            if int(raised):
                alerted.append(name)
                counts[name] = int(raised)
        raised_alerts: list[Alert] = []
        if alerted:
            self.client.sadd(f"{self.prefix}:alerted", *alerted)
            for name in alerted:
                raised_alerts += self._alerts_of(name)[-int(counts[name]) :]
        return out, raised_alerts

    def _alerts_of(self, entity: str) -> list[Alert]:
        out = []
        for raw in self.client.lrange(self._keys(entity)[1], 0, -1):
            item = json.loads(raw)
            out.append(
                Alert(
                    entity,
                    int(item["level"]),
                    int(item["at_us"]),
                    int(item["lower"]),
                    int(item["upper"]),
                    bool(item["confirmed"]),
                )
            )
        return out

    def bounds(self, entity: str) -> Bounds | None:
        h = self._keys(entity)[0]
        top, total, latest = self.client.hmget(h, "top", "total", "latest")
        if top is None:
            return None
        oldest = self.client.hget(h, f"b{int(top) - self.span}") or b"0"
        return Bounds(entity, int(latest or 0), int(total or 0) - int(oldest), int(total or 0))

    def alerts(self) -> list[Alert]:
        members: set[bytes] = self.client.smembers(f"{self.prefix}:alerted")  # type: ignore[assignment]
        names = sorted(m.decode() for m in members)
        return [a for n in names for a in self._alerts_of(n)]

    def clear(self) -> None:
        """Delete every key under this meter's prefix (tests, re-runs)."""
        for key in self.client.scan_iter(match=f"{self.prefix}:*", count=1000):
            self.client.delete(key)


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
    ) -> tuple[list[Bounds], list[Alert]]:
        """Feed one batch; returns the touched entities' bounds and newly raised alerts."""
        creds = (
            credentials
            if isinstance(credentials, pa.Array | pa.ChunkedArray)
            else pa.array(list(credentials), pa.string())
        )
        ts = np.asarray(ts_us, dtype=np.int64)
        p = np.asarray(posts, dtype=np.int64)
        if len(ts) == 0:
            return [], []
        names, codes = self.attributor.entities(creds, ts)
        buckets = ts // self.bucket_us
        # Sum per (entity, bucket) with one sort; the latest instant per entity rides along.
        order = np.lexsort((buckets, codes))
        c, b, q, t = codes[order], buckets[order], p[order], ts[order]
        starts = np.flatnonzero(np.r_[True, (c[1:] != c[:-1]) | (b[1:] != b[:-1])])
        sums = np.add.reduceat(q, starts)
        ent_latest = np.full(len(names), np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(ent_latest, c, t)
        self.events += len(ts)
        return self.backend.add(
            [names[i] for i in c[starts].tolist()], b[starts], sums, ent_latest[c[starts]]
        )

    def ingest_table(self, events: pa.Table) -> tuple[list[Bounds], list[Alert]]:
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
    from consentry.errors import BadInput, Problem
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
