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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, Protocol, overload

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consentry.instants import rfc3339
from consentry.scraping.attribution import FAR_FUTURE, FAR_PAST, Owners, owner_candidates
from consentry.scraping.rules import Terms
from consentry.settings import Settings

__all__ = [
    "ALERT_LEVELS",
    "Alert",
    "Attributor",
    "BatchBounds",
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
_OPEN_FROM = (FAR_PAST - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
_OPEN_TO = (FAR_FUTURE - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
"""Open validity ends as stored by `check_owners` (FAR_PAST / FAR_FUTURE), in µs."""


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
    """Where bucket counts live. `add` takes one batch summed per (entity, bucket): row i is
    entity `names[codes[i]]`, bucket `buckets[i]`, `posts[i]` posts, rows sorted by (code,
    bucket); `latest[i]` is the latest instant of row i's entity in the batch. `names` is
    the meter's entity registry: a code always names the same entity."""

    def add(
        self, names: Sequence[str], codes: I64, buckets: I64, posts: I64, latest: I64
    ) -> tuple[Sequence[Bounds], list[Alert]]: ...

    def bounds(self, entity: str) -> Bounds | None: ...

    def alerts(self) -> list[Alert]: ...


class Attributor:
    """Credential -> entity for batches, with the assessment's rules.

    Each credential is resolved once and cached: static credentials (one owner whatever the
    instant) map to an entity id directly; the few whose owner depends on the instant keep
    their candidate rows and are resolved per access. Entity ids index `names`.
    """

    def __init__(self, owners: Owners) -> None:
        self.owners = owners
        self.names: list[str] = []
        self._ids: dict[str, int] = {}
        # credential -> entity id (>= 0), or -(k + 1) for dynamic credential k
        self._cache: dict[str, int] = {}
        self._dynamic: list[tuple[int, list[tuple[int, int, int, int]]]] = []
        self._exact: dict[str, list[tuple[str, int, int, int]]] | None = None
        self._ranges: Owners | None = None

    def _id(self, name: str) -> int:
        found = self._ids.get(name)
        if found is None:
            found = self._ids[name] = len(self.names)
            self.names.append(name)
        return found

    def _resolve(self, missing: list[str]) -> None:
        if self._exact is None:
            # Exact rows once as a dict; ranges are matched per batch of new credentials.
            exact: dict[str, list[tuple[str, int, int, int]]] = {}
            table = owner_candidates(pa.array([], pa.string()), self.owners)
            for cred, ent, a, b, spec in zip(
                table["credential"].to_pylist(),
                table["entity"].to_pylist(),
                table["valid_from"].cast(pa.int64()).to_pylist(),
                table["valid_to"].cast(pa.int64()).to_pylist(),
                table["specificity"].to_pylist(),
                strict=True,
            ):
                exact.setdefault(cred, []).append((ent, a, b, spec))
            self._exact = exact
            self._ranges = Owners(
                exact=self.owners.exact.slice(0, 0),
                ranges=self.owners.ranges,
                networks=self.owners.networks,
            )
        rows: dict[str, list[tuple[str, int, int, int]]] = {
            c: list(self._exact.get(c, ())) for c in missing
        }
        if self._ranges is None or self._ranges.ranges.num_rows == 0:
            self._settle(rows)
            return
        found = owner_candidates(pa.array(missing, pa.string()), self._ranges)
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
        self._settle(rows)

    def _settle(self, rows: dict[str, list[tuple[str, int, int, int]]]) -> None:
        for cred, cands in rows.items():
            if not cands:
                self._cache[cred] = self._id(cred)
            else:
                cands.sort(key=lambda r: -r[3])
                best = cands[0]
                if best[1] <= _OPEN_FROM and best[2] >= _OPEN_TO:
                    # The most specific owner holds it at every instant: static.
                    self._cache[cred] = self._id(best[0])
                    continue
                resolved = [(self._id(e), a, b, spec) for e, a, b, spec in cands]
                self._cache[cred] = -(len(self._dynamic) + 1)
                self._dynamic.append((self._id(cred), resolved))

    def entities(self, credentials: pa.Array | pa.ChunkedArray, ts: I64) -> I64:
        """The entity id (into `names`) of each access of one batch."""
        encoded = pc.dictionary_encode(credentials)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        distinct = encoded.dictionary.to_pylist()
        idx = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        looked = list(map(self._cache.get, distinct))
        if None in looked:
            self._resolve([c for c, v in zip(distinct, looked, strict=True) if v is None])
            looked = list(map(self._cache.__getitem__, distinct))
        per_cred = np.array(looked, dtype=np.int64)
        codes = per_cred[idx]
        for k in np.flatnonzero(per_cred < 0).tolist():
            own, cands = self._dynamic[-int(per_cred[k]) - 1]
            rows = np.flatnonzero(idx == k)
            t = ts[rows]
            best = np.full(len(rows), -1, dtype=np.int64)
            chosen = np.full(len(rows), own, dtype=np.int64)
            for ent, a, b, spec in cands:
                hit = (t >= a) & (t < b) & (spec > best)
                chosen[hit] = ent
                best[hit] = spec
            codes[rows] = chosen
        return codes


def _levels(upper: I64, threshold: int) -> I64:
    """`_level_of` for many upper bounds at once (integer arithmetic)."""
    level = np.zeros(len(upper), dtype=np.int64)
    level[upper * 100 >= threshold * 50] = 50
    level[upper * 100 >= threshold * 80] = 80
    level[upper > threshold] = 100
    return level


class MemoryMeter:
    """In-process bucket store (one process; the default), updated with array operations.

    State: per entity (dense ids) its top bucket, total, latest instant and armed alert
    level; the buckets of all entities in one array sorted by (entity, bucket). Buckets that
    fall out of an entity's span are ignored by every query (the span only moves forward)
    and dropped when the array has doubled since the last compaction.
    """

    _KSPAN = 1 << 34

    def __init__(self, terms: Terms, bucket_us: int) -> None:
        self.terms = terms
        self.bucket_us = bucket_us
        self.span = terms.window_us // bucket_us
        self._ids: dict[str, int] = {}
        self._names: list[str] = []
        self._top = np.zeros(0, dtype=np.int64)
        self._total = np.zeros(0, dtype=np.int64)
        self._latest = np.zeros(0, dtype=np.int64)
        self._level = np.zeros(0, dtype=np.int64)
        self._seen = np.zeros(0, dtype=bool)
        self._keys = np.zeros(0, dtype=np.int64)
        self._posts = np.zeros(0, dtype=np.int64)
        self._compacted = 0
        self._kbase: int | None = None
        self._alerts: list[Alert] = []
        self.late = 0

    def _key(self, ent: I64, bucket: I64) -> I64:
        rel = bucket - (self._kbase or 0)
        if len(rel) and (int(rel.min()) < 0 or int(rel.max()) >= self._KSPAN):
            raise ValueError("access instant too far from the meter's first access")
        key: I64 = ent * self._KSPAN + rel
        return key

    def _grow(self, n: int) -> None:
        old = len(self._top)
        if n <= old:
            return
        size = max(n, 2 * old, 1024)
        for name in ("_top", "_total", "_latest", "_level", "_seen"):
            arr = np.zeros(size, dtype=bool if name == "_seen" else np.int64)
            arr[:old] = getattr(self, name)[:old]
            setattr(self, name, arr)

    def _suffix(self, cum: I64, ent: I64, lo_bucket: I64) -> I64:
        """Stored posts of each `ent` in buckets >= lo_bucket (before this batch)."""
        a = np.searchsorted(self._keys, self._key(ent, lo_bucket), side="left")
        b = np.searchsorted(self._keys, ent * self._KSPAN + self._KSPAN, side="left")
        out: I64 = cum[b] - cum[a]
        return out

    def add(
        self, names: Sequence[str], codes: I64, buckets: I64, posts: I64, latest: I64
    ) -> tuple[Sequence[Bounds], list[Alert]]:
        """Add per-(entity, bucket) sums (see `MeterBackend`); bounds and alerts are
        evaluated after every row, as if the rows were added one by one."""
        if len(codes) == 0:
            return [], []
        span = self.span
        if self._kbase is None:
            self._kbase = int(buckets.min()) - (self._KSPAN >> 1)
        ent = codes
        first = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        seg = np.repeat(np.arange(len(first)), np.diff(np.r_[first, len(codes)]))
        self._grow(int(codes[first].max()) + 1)
        is_new = ~self._seen[ent[first]]
        for e in ent[first][is_new].tolist():
            self._ids[names[e]] = e
            self._names.append(names[e])
        self._seen[ent[first]] = True
        old_top = np.where(is_new, buckets[first], self._top[ent[first]])[seg]
        late = buckets < old_top - span
        ok = ~late
        top = np.maximum(old_top, buckets)
        floor = top - span
        # Stored part: buckets >= floor (and the floor bucket itself, for the lower bound).
        cum = np.zeros(len(self._posts) + 1, dtype=np.int64)
        np.cumsum(self._posts, out=cum[1:])
        stored = self._suffix(cum, ent, floor)
        stored_floor = stored - self._suffix(cum, ent, floor + 1)
        # Batch part: rows of the same entity up to this one with bucket >= floor.
        q = np.where(ok, posts, 0)
        bcum = np.zeros(len(q) + 1, dtype=np.int64)
        np.cumsum(q, out=bcum[1:])
        bkey = seg * (self._KSPAN * 2) + (buckets - self._kbase)
        lo = np.searchsorted(bkey, seg * (self._KSPAN * 2) + (floor - self._kbase), "left")
        mid = np.searchsorted(bkey, seg * (self._KSPAN * 2) + (floor + 1 - self._kbase), "left")
        row = np.arange(len(q))
        total = stored + bcum[row + 1] - bcum[lo]
        lower = (
            total - stored_floor - (bcum[np.minimum(mid, row + 1)] - bcum[np.minimum(lo, row + 1)])
        )
        at = np.minimum(latest, (buckets + 1) * self.bucket_us - 1)
        # Alert levels: armed = running max of the level since the last row under 50 %
        # (re-arm), starting from the entity's armed level.
        level = _levels(total, self.terms.threshold)
        checked = np.flatnonzero(ok)
        raised: list[Alert] = []
        last_ok = np.zeros(0, dtype=np.int64)
        if len(checked):
            c_seg = seg[checked]
            c_level = level[checked]
            start_of = np.r_[True, c_seg[1:] != c_seg[:-1]]
            starts = np.flatnonzero(start_of)
            group = np.cumsum(start_of) - 1
            # Partitions restart at each entity's first row and at each row under 50 %.
            part = np.cumsum((c_level == 0) | start_of)
            initial = np.where(is_new, 0, self._level[ent[first]])[c_seg]
            carries = (part == part[starts][group]) & (c_level[starts][group] > 0)
            value = np.where(carries, np.maximum(c_level, initial), c_level)
            armed = np.maximum.accumulate(part * 1000 + value) - part * 1000
            prev = np.r_[0, armed[:-1]]
            prev[starts] = initial[starts]
            threshold = self.terms.threshold
            for i in np.flatnonzero(c_level > prev).tolist():
                r = int(checked[i])
                up, low_b = int(total[r]), int(lower[r])
                for lv in ALERT_LEVELS:
                    if prev[i] < lv <= c_level[i]:
                        confirmed = (
                            low_b > threshold if lv == 100 else low_b * 100 >= threshold * lv
                        )
                        raised.append(Alert(names[codes[r]], lv, int(at[r]), low_b, up, confirmed))
            last = np.r_[starts[1:], len(checked)] - 1
            last_ok = checked[last]
            self._level[ent[last_ok]] = armed[last]
        self._alerts += raised
        self.late += int(late.sum())
        # New state per entity: the values after its last row that counted.
        fresh = ent[first][is_new]
        self._latest[fresh] = latest[first][is_new]
        if len(last_ok):
            e = ent[last_ok]
            self._top[e] = top[last_ok]
            self._total[e] = total[last_ok]
            self._latest[e] = np.maximum(self._latest[e], latest[last_ok])
        # Merge the counted rows into the stored buckets.
        keys = self._key(ent[ok], buckets[ok])
        add = posts[ok]
        order = np.argsort(keys, kind="stable")
        keys, add = keys[order], add[order]
        pos = np.searchsorted(self._keys, keys, side="left")
        hit = pos < len(self._keys)
        hit[hit] = self._keys[pos[hit]] == keys[hit]
        self._posts[pos[hit]] += add[hit]
        self._keys = np.insert(self._keys, pos[~hit], keys[~hit])
        self._posts = np.insert(self._posts, pos[~hit], add[~hit])
        if len(self._keys) > max(2 * self._compacted, 65_536):
            self._compact()
        out = BatchBounds(
            names, ent[last_ok], self._latest[ent[last_ok]], lower[last_ok], total[last_ok]
        )
        return out, raised

    def _compact(self) -> None:
        ent = self._keys // self._KSPAN
        bucket = self._keys % self._KSPAN + (self._kbase or 0)
        live = bucket >= self._top[ent] - self.span
        self._keys, self._posts = self._keys[live], self._posts[live]
        self._compacted = len(self._keys)

    def bounds(self, entity: str) -> Bounds | None:
        e = self._ids.get(entity)
        if e is None:
            return None
        top = int(self._top[e])
        total = int(self._total[e])
        key = e * self._KSPAN + (top - self.span - (self._kbase or 0))
        pos = int(np.searchsorted(self._keys, key, side="left"))
        oldest = int(self._posts[pos]) if pos < len(self._keys) and self._keys[pos] == key else 0
        return Bounds(entity, int(self._latest[e]), total - oldest, total)

    def alerts(self) -> list[Alert]:
        return list(self._alerts)

    def entities(self) -> list[str]:
        return sorted(self._names)


_ADD_SCRIPT = """
-- KEYS[1]: the entity's bucket hash, KEYS[2]: its alert list (same hash tag, same slot).
-- ARGV: span, threshold, latest_us, bucket_us, then bucket/posts pairs.
-- Returns lower, upper, latest, number of alerts raised, then 5 integers per alert
-- (level, at_us, lower, upper, confirmed).
local span = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local latest = tonumber(ARGV[3])
local h = KEYS[1]
local f = redis.call('HMGET', h, 'top', 'low', 'total', 'latest', 'level')
local top = tonumber(f[1] or '-1')
local low = tonumber(f[2] or '-1')
local total = tonumber(f[3] or '0')
local late = 0
local seen = tonumber(f[4] or '0')
if latest > seen then seen = latest end
local armed = tonumber(f[5] or '0')
local bucket_us = tonumber(ARGV[4])
if top < 0 then
  top = tonumber(ARGV[5]); low = top
end
local raised = 0
local lower = 0
local out = {0, 0, 0, 0}
-- Pairs come sorted by bucket; bounds and alert levels are checked after each one.
for i = 5, #ARGV, 2 do
  local k = tonumber(ARGV[i])
  local p = tonumber(ARGV[i + 1])
  if k > top then top = k end
  local floor = top - span
  if floor - low > 8 and floor - low > redis.call('HLEN', h) then
    -- A gap longer than the hash: look at the buckets that exist instead of every
    -- number in between (sparse entities), else step bucket by bucket (dense ones).
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
    -- Every bucket number from low to floor - 1, a thousand per HMGET; one HDEL.
    while low < floor do
      local stop = math.min(floor, low + 1000)
      local names = {}
      for b = low, stop - 1 do names[#names + 1] = 'b' .. b end
      local vals = redis.call('HMGET', h, unpack(names))
      local gone = {}
      for j = 1, #names do
        if vals[j] then total = total - tonumber(vals[j]); gone[#gone + 1] = names[j] end
      end
      if #gone > 0 then redis.call('HDEL', h, unpack(gone)) end
      low = stop
    end
  end
  if k < floor then
    late = late + 1
  else
    redis.call('HINCRBY', h, 'b' .. k, p)
    total = total + p
    if k < low then low = k end
    local level = 0
    if total * 100 >= threshold * 50 then level = 50 end
    if total * 100 >= threshold * 80 then level = 80 end
    if total > threshold then level = 100 end
    if level == 0 then
      armed = 0
    else
      local at = (k + 1) * bucket_us - 1
      if latest < at then at = latest end
      if level > armed then
        -- The lower bound only matters for an alert: read the oldest bucket then.
        lower = total - tonumber(redis.call('HGET', h, 'b' .. floor) or '0')
      end
      for _, lv in ipairs({50, 80, 100}) do
        if armed < lv and lv <= level then
          local confirmed = 0
          if lv == 100 then
            if lower > threshold then confirmed = 1 end
          elseif lower * 100 >= threshold * lv then
            confirmed = 1
          end
          -- Integers formatted with %d: cjson would print 16-digit instants in %.14g.
          redis.call('RPUSH', KEYS[2], string.format(
            '{"level":%d,"at_us":%d,"lower":%d,"upper":%d,"confirmed":%d}',
            lv, at, lower, total, confirmed))
          raised = raised + 1
          out[#out + 1] = lv
          out[#out + 1] = at
          out[#out + 1] = lower
          out[#out + 1] = total
          out[#out + 1] = confirmed
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
out[1] = lower
out[2] = total
out[3] = seen
out[4] = raised
return out
"""


def _tag(entity: str) -> str:
    """The entity as a hash tag: braces would end the tag early, so they are escaped."""
    return entity.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


class RedisMeter:
    """Bucket store in Redis shared by several processes (one Lua call per entity and batch,
    pipelined). Keys: `<prefix>:{<entity>}:b` (hash) and `<prefix>:{<entity>}:alerts`
    (list), plus the set `<prefix>:alerted` of entities with alerts.

    A batch is sent as one buffer of EVALSHA commands encoded here (the bucket/posts pairs
    of all rows are encoded at once with Arrow, each entity's command takes its slice), and
    the replies are read back in order on the same connection.
    """

    def __init__(self, terms: Terms, bucket_us: int, url: str, prefix: str) -> None:
        import redis

        self.terms = terms
        self.bucket_us = bucket_us
        self.span = terms.window_us // bucket_us
        self.prefix = prefix
        self.client = redis.Redis.from_url(url)
        self.script = self.client.register_script(_ADD_SCRIPT)
        self.sha = str(self.client.script_load(_ADD_SCRIPT))
        self._heads: dict[str, bytes] = {}

    def _keys(self, entity: str) -> list[str]:
        base = f"{self.prefix}:{{{_tag(entity)}}}"
        return [f"{base}:b", f"{base}:alerts"]

    def _head(self, entity: str) -> bytes:
        """EVALSHA, the script, 2 keys: the constant start of an entity's command."""
        head = self._heads.get(entity)
        if head is None:
            k1, k2 = (k.encode() for k in self._keys(entity))
            sha = self.sha.encode()
            head = b"".join(
                [
                    b"$7\r\nEVALSHA\r\n$%d\r\n%s\r\n$1\r\n2\r\n" % (len(sha), sha),
                    b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k1), k1, len(k2), k2),
                ]
            )
            if len(self._heads) < 1_000_000:
                self._heads[entity] = head
        return head

    @staticmethod
    def _bulk(values: I64) -> tuple[bytes, I64]:
        """`$len CRLF value CRLF` per value, as one buffer and its offsets."""
        text = pa.array(values).cast(pa.string())
        lengths = pc.binary_length(text).cast(pa.string())
        enc = pc.binary_join_element_wise(
            pa.scalar("$"), lengths, pa.scalar("\r\n"), text, pa.scalar("\r\n"), ""
        )
        enc = enc.cast(pa.large_string())
        offsets = np.frombuffer(enc.buffers()[1], dtype=np.int64)[: len(enc) + 1]
        data = enc.buffers()[2]
        return (data.to_pybytes() if data is not None else b""), offsets - offsets[0]

    def _send(self, commands: list[bytes]) -> list[Any]:
        """Send encoded commands on one connection; every reply (or error) in order."""
        import redis

        pool = self.client.connection_pool
        conn = pool.get_connection()
        replies: list[Any] = []
        try:
            conn.send_packed_command([b"".join(commands)], check_health=True)  # type: ignore[no-untyped-call]
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except redis.exceptions.ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(conn)
        return replies

    def add(
        self, names: Sequence[str], codes: I64, buckets: I64, posts: I64, latest: I64
    ) -> tuple[Sequence[Bounds], list[Alert]]:
        import redis

        if len(codes) == 0:
            return [], []
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        ends = np.r_[starts[1:], len(codes)]
        pairs = np.empty(2 * len(codes), dtype=np.int64)
        pairs[0::2] = buckets
        pairs[1::2] = posts
        data, offsets = self._bulk(pairs)
        fixed = b"$%d\r\n%d\r\n$%d\r\n%d\r\n" % (
            len(str(self.span)),
            self.span,
            len(str(self.terms.threshold)),
            self.terms.threshold,
        )
        bucket_arg = b"$%d\r\n%d\r\n" % (len(str(self.bucket_us)), self.bucket_us)
        commands: list[bytes] = []
        entity_names: list[str] = []
        for a, b, code, t in zip(
            starts.tolist(),
            ends.tolist(),
            codes[starts].tolist(),
            latest[starts].tolist(),
            strict=True,
        ):
            name = names[code]
            entity_names.append(name)
            ts = str(t).encode()
            commands.append(
                b"*%d\r\n%s%s$%d\r\n%s\r\n%s%s"
                % (
                    9 + 2 * (b - a),
                    self._head(name),
                    fixed,
                    len(ts),
                    ts,
                    bucket_arg,
                    data[offsets[2 * a] : offsets[2 * b]],
                )
            )
        results = self._send(commands)
        if any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
            # The server lost its scripts (restart, SCRIPT FLUSH): load and send again
            # only the commands that were not run.
            self.sha = str(self.client.script_load(_ADD_SCRIPT))
            self._heads.clear()
            again = [
                i for i, r in enumerate(results) if isinstance(r, redis.exceptions.NoScriptError)
            ]
            retry = self.add(
                [entity_names[i] for i in again],
                np.repeat(np.arange(len(again)), (ends - starts)[again]),
                np.concatenate([buckets[starts[i] : ends[i]] for i in again]),
                np.concatenate([posts[starts[i] : ends[i]] for i in again]),
                np.concatenate([latest[starts[i] : ends[i]] for i in again]),
            )
            done = dict(zip(again, retry[0], strict=True))
            for i in again:
                b_ = done[i]
                results[i] = [b_.lower, b_.upper, b_.latest_us, 0]  # alerts: in `extra`
            extra = retry[1]
        else:
            extra = []
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise errors[0]
        out: list[Bounds] = []
        alerted: list[str] = []
        raised_alerts: list[Alert] = []
        for name, reply in zip(entity_names, results, strict=True):
            out.append(Bounds(name, int(reply[2]), int(reply[0]), int(reply[1])))
            if int(reply[3]):
                alerted.append(name)
                for j in range(4, len(reply), 5):
                    lv, at, low, up, conf = (int(x) for x in reply[j : j + 5])
                    raised_alerts.append(Alert(name, lv, at, low, up, bool(conf)))
        if alerted:
            self.client.sadd(f"{self.prefix}:alerted", *alerted)
        return out, raised_alerts + extra

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
    ) -> tuple[Sequence[Bounds], list[Alert]]:
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
        ids = self.attributor.entities(creds, ts)
        buckets = ts // self.bucket_us
        # Sum per (entity, bucket) with one sort of a packed key; the latest instant per
        # entity rides along (maximum per entity run).
        b0 = int(buckets.min())
        bbits = (int(buckets.max()) - b0).bit_length()
        if (int(ids.max()).bit_length() + bbits) <= 62:
            order = np.argsort((ids << bbits) | (buckets - b0), kind="stable")
        else:
            order = np.lexsort((buckets, ids))
        c, b, q, t = ids[order], buckets[order], p[order], ts[order]
        new_entity = np.r_[True, c[1:] != c[:-1]]
        starts = np.flatnonzero(new_entity | np.r_[True, b[1:] != b[:-1]])
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
