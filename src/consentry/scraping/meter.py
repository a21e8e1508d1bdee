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
6. A bucket holds at most `bucket_cap` posts (it saturates there), so the bounds never
   overflow, even for the largest counts the API accepts.
   The meter counts what it is fed: feed each request once (it keeps no request ids).
   Alerts are warnings, never evidence: the assessment is the exact account.

Backends: `MemoryMeter` (one process) and `RedisMeter` (Lua scripts; every key of one
entity carries the hash tag `{entity}`, and a script call updates the entities of one
Redis Cluster slot, so it touches one slot). Both are fast kernels of rules 2-6; each is
held to the plain reading of those rules, one (entity, bucket) row at a time
(`_RowByRow` in tests/scraping/test_meter.py), by `test_vectorised_meter_equals_row_by_row`
and `test_redis_meter_equals_row_by_row` (levels and lower bounds exactly at 50 %, 80 %
and the threshold, instants at bucket and window edges).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import operator
import os
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count, islice, repeat
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar, cast, overload

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consentry.binary import binary_parts
from consentry.errors import BadInput, Problem
from consentry.instants import rfc3339
from consentry.schema import MAX_POSTS_PER_ACCESS
from consentry.scraping.attribution import FAR_FUTURE, FAR_PAST, Owners, owner_candidates
from consentry.scraping.rules import Terms
from consentry.settings import Settings

__all__ = [
    "ALERT_LEVELS",
    "EXACT_TOTAL",
    "Alert",
    "Attributor",
    "BatchBounds",
    "Bounds",
    "MemoryMeter",
    "Meter",
    "MeterBackend",
    "RedisMeter",
    "bucket_cap",
    "hash_tags",
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


_MISS = np.iinfo(np.int64).min
"""Not resolved yet (credential codes are >= 0, dynamic ones -(k + 1))."""

_Candidate = tuple[str, int, int, int]
"""(entity, valid_from µs, valid_to µs, specificity) of one possible owner."""

_U64 = npt.NDArray[np.uint64]
_MIX = np.uint64(0xD6E8FEB86659FD93)


def _mix(x: _U64) -> _U64:
    """A 64-bit finaliser (xor-shift-multiply): every input bit moves every output bit."""
    x = x ^ (x >> np.uint64(32))
    x = x * _MIX
    x = x ^ (x >> np.uint64(32))
    x = x * _MIX
    out: _U64 = x ^ (x >> np.uint64(32))
    return out


_A = TypeVar("_A", bound=np.generic)


def _fit(arr: npt.NDArray[_A], n: int) -> npt.NDArray[_A]:
    """`arr` with room for at least `n` items (capacity doubles; contents kept)."""
    if n <= len(arr):
        return arr
    grown = np.zeros(max(n, 2 * len(arr), 1024), dtype=arr.dtype)
    grown[: len(arr)] = arr
    return grown


def _ranges(lo: I64, hi: I64) -> I64:
    """The indexes lo[0]..hi[0]-1, lo[1]..hi[1]-1, ... as one array."""
    size = hi - lo
    out: I64 = np.repeat(lo - (np.cumsum(size) - size), size) + np.arange(int(size.sum()))
    return out


class _StringTable:
    """Strings -> dense ids, vectorised: an open-addressing hash table in NumPy arrays.

    1. A string's hash mixes its length and its 8-byte words one after the other (seeded
       per process), so a batch is hashed with one pass per word position.
    2. Lookups probe all strings of a batch at once (linear probing, one round per probe
       step); a hit is a slot whose string has the same hash and the same bytes (compared
       exactly: hashes only choose where to look).
    3. New strings are appended (ids in the order given) and placed in the same rounds;
       the table doubles when half full.
    """

    def __init__(self) -> None:
        # A random seed: crafted credentials cannot be made to share one probe chain.
        self._seed = np.uint64(int.from_bytes(os.urandom(8), "little"))
        self._slots = np.full(1024, -1, dtype=np.int64)
        self._hash = np.zeros(0, dtype=np.uint64)
        self._off = np.zeros(1, dtype=np.int64)
        self._data = np.zeros(0, dtype=np.uint8)
        self.size = 0

    def _hashes(self, off: I64, data: npt.NDArray[np.uint8]) -> _U64:
        lens = np.diff(off)
        words = (lens + 7) // 8
        first = np.cumsum(words) - words
        padded = np.zeros(int(words.sum()) * 8, dtype=np.uint8)
        padded[_ranges(first * 8, first * 8 + lens)] = data
        flat = padded.view(np.uint64)
        h = _mix(self._seed ^ lens.astype(np.uint64))
        todo = np.arange(len(lens))
        for k in range(int(words.max()) if len(words) else 0):
            todo = todo[words[todo] > k]
            h[todo] = _mix(h[todo] ^ flat[first[todo] + k])
        return h

    def _same(
        self, ids: I64, off: I64, data: npt.NDArray[np.uint8], q: I64
    ) -> npt.NDArray[np.bool_]:
        """Whether stored string `ids[i]` equals query string `q[i]`, byte for byte."""
        q_len = off[q + 1] - off[q]
        same: npt.NDArray[np.bool_] = (self._off[ids + 1] - self._off[ids]) == q_len
        both = np.flatnonzero(same & (q_len > 0))
        n = q_len[both]
        if len(both):
            mine, theirs = self._off[ids[both]], off[q[both]]
            a = self._data[_ranges(mine, mine + n)]
            b = data[_ranges(theirs, theirs + n)]
            differ = np.add.reduceat((a != b).astype(np.int64), np.cumsum(n) - n)
            same[both] = differ == 0
        return same

    def _place(self, ids: I64) -> None:
        mask = len(self._slots) - 1
        pos = (self._hash[ids] & np.uint64(mask)).astype(np.int64)
        while len(ids):
            free = np.flatnonzero(self._slots[pos] < 0)
            # Of several new strings aiming at one free slot, one takes it (the write that
            # lands); the others move on with the rest.
            self._slots[pos[free]] = ids[free]
            left = self._slots[pos] != ids
            ids, pos = ids[left], (pos[left] + 1) & mask

    def find(self, values: pa.Array) -> I64:
        """The id of each string of `values` (distinct strings, no nulls); unknown ones are
        added, numbered in the order given."""
        off, raw = binary_parts(values)
        data = np.frombuffer(raw, dtype=np.uint8)
        h = self._hashes(off, data)
        n = len(h)
        out = np.full(n, -1, dtype=np.int64)
        mask = len(self._slots) - 1
        pending = np.arange(n)
        pos = (h & np.uint64(mask)).astype(np.int64)
        while len(pending):
            cand = self._slots[pos]
            live = cand >= 0
            match = np.zeros(len(pending), dtype=bool)
            check = np.flatnonzero(live)
            check = check[self._hash[cand[check]] == h[pending[check]]]
            if len(check):
                match[check] = self._same(cand[check], off, data, pending[check])
            out[pending[match]] = cand[match]
            go_on = live & ~match
            pending, pos = pending[go_on], (pos[go_on] + 1) & mask
        new = np.flatnonzero(out < 0)
        if len(new):
            start = self.size
            out[new] = np.arange(start, start + len(new))
            lens = off[new + 1] - off[new]
            end = int(self._off[start]) + int(lens.sum())
            self._data = _fit(self._data, end)
            self._data[int(self._off[start]) : end] = data[_ranges(off[new], off[new] + lens)]
            self._off = _fit(self._off, start + len(new) + 1)
            self._off[start + 1 : start + len(new) + 1] = self._off[start] + np.cumsum(lens)
            self._hash = _fit(self._hash, start + len(new))
            self._hash[start : start + len(new)] = h[new]
            self.size += len(new)
            if 2 * self.size > len(self._slots):
                grown = len(self._slots)
                while 2 * self.size > grown:
                    grown *= 2
                self._slots = np.full(grown, -1, dtype=np.int64)
                self._place(np.arange(self.size))
            else:
                self._place(out[new])
        return out


class Attributor:
    """Credential -> entity for batches, with the assessment's rules.

    1. Credentials and entity names are strings of one `_StringTable`; per string id the
       attributor keeps its code as a credential (an entity id, or -(k + 1) for dynamic
       credential k, or unresolved) and its entity id as a name (or none yet).
    2. Each credential is resolved once, on first sight: owners of exact credentials are
       settled on the first batch from the entities table (with the ranges that also
       cover them); a new credential is looked up there, else matched against the CIDR
       ranges (vectorised), else it is its own entity. A credential whose owner depends on
       the instant keeps its candidates, most specific first, and is resolved per access,
       vectorised over those accesses.
    3. Entity ids index `names` and are given in order of first need (a batch's new
       credentials in order of first appearance), so the same feed gives the same ids.
    """

    def __init__(self, owners: Owners) -> None:
        self.owners = owners
        self.names: list[str] = []
        self._strings = _StringTable()
        self._code = np.zeros(0, dtype=np.int64)
        self._name = np.zeros(0, dtype=np.int64)
        self._dynamic: list[tuple[int, list[tuple[int, int, int, int]]]] = []
        self._dyn: tuple[I64, I64, I64, I64, I64, I64] | None = None
        # exact credential -> its static owner, or its candidates (most specific first)
        self._exact: dict[str, str | list[_Candidate]] | None = None
        self._ranges: Owners | None = None

    def _sids(self, values: pa.Array) -> I64:
        """String ids of distinct `values` (added when new)."""
        sid = self._strings.find(values)
        size = self._strings.size
        if size > len(self._code):
            old = len(self._code)
            self._code = _fit(self._code, size)
            self._code[old:] = _MISS
            self._name = _fit(self._name, size)
            self._name[old:] = -1
        return sid

    def _register(self, sid: I64, text: Sequence[str]) -> I64:
        """Entity ids of the names with string ids `sid` (`text[i]` spells `sid[i]`), new
        names numbered in order of first occurrence."""
        got = self._name[sid]
        miss = np.flatnonzero(got < 0)
        if len(miss):
            _, first = np.unique(sid[miss], return_index=True)
            new = miss[np.sort(first)]
            start = len(self.names)
            self._name[sid[new]] = np.arange(start, start + len(new))
            self.names.extend(map(text.__getitem__, new.tolist()))
            got = self._name[sid]
        return got

    def _id(self, name: str) -> int:
        return int(self._register(self._sids(pa.array([name], pa.string())), [name])[0])

    @staticmethod
    def _settle(cands: list[_Candidate]) -> str | list[_Candidate]:
        """The static owner of a credential, or its candidates most specific first."""
        cands.sort(key=lambda r: -r[3])
        best = cands[0]
        if best[1] <= _OPEN_FROM and best[2] >= _OPEN_TO:
            # The most specific owner holds it at every instant: static.
            return best[0]
        return cands

    @staticmethod
    def _rows(table: pa.Table) -> Iterator[tuple[str, _Candidate]]:
        return zip(
            table["credential"].to_pylist(),
            zip(
                table["entity"].to_pylist(),
                table["valid_from"].cast(pa.int64()).to_pylist(),
                table["valid_to"].cast(pa.int64()).to_pylist(),
                table["specificity"].to_pylist(),
                strict=True,
            ),
            strict=True,
        )

    def _prepare(self) -> dict[str, str | list[_Candidate]]:
        """Settle every exact credential of the entities table (step 2)."""
        exact_creds = pc.unique(self.owners.exact["credential"])
        rows: dict[str, list[_Candidate]] = {}
        for cred, cand in self._rows(owner_candidates(exact_creds, self.owners)):
            rows.setdefault(cred, []).append(cand)
        self._exact = {cred: self._settle(cands) for cred, cands in rows.items()}
        if self.owners.ranges.num_rows:
            self._ranges = Owners(
                exact=self.owners.exact.slice(0, 0),
                ranges=self.owners.ranges,
                networks=self.owners.networks,
            )
        return self._exact

    def _resolve(self, missing_arr: pa.Array, missing_sid: I64) -> I64:
        """Resolve, record and return the code of each never-seen credential."""
        exact = self._exact if self._exact is not None else self._prepare()
        missing = missing_arr.to_pylist()
        # Owner name (static or self) or candidate list, per missing credential.
        owner: list[str | list[_Candidate]] = list(map(exact.get, missing, missing))
        if self._ranges is not None:
            # Only IP addresses can fall in a range: dotted quads or IPv6 (with a colon).
            ip_like = pc.or_(
                pc.match_substring(missing_arr, "."), pc.match_substring(missing_arr, ":")
            )
            found = owner_candidates(missing_arr.filter(ip_like), self._ranges)
            if found.num_rows:
                ranged: dict[str, list[_Candidate]] = {}
                for cred, cand in self._rows(found):
                    if cred not in exact:  # exact credentials were settled with their ranges
                        ranged.setdefault(cred, []).append(cand)
                where = dict(zip(missing, count()))
                for cred, cands in ranged.items():
                    owner[where[cred]] = self._settle(cands)
        if list in set(map(type, owner)):
            # Some owner depends on the instant (rare): one credential at a time, ids in
            # the same order of first need.
            for cred, sid, own in zip(missing, missing_sid.tolist(), owner, strict=True):
                if isinstance(own, str):
                    self._code[sid] = self._id(own)
                else:
                    resolved = [(self._id(e), a, b, spec) for e, a, b, spec in own]
                    self._code[sid] = -(len(self._dynamic) + 1)
                    self._dynamic.append((self._id(cred), resolved))
                    self._dyn = None
            out: I64 = self._code[missing_sid]
            return out
        names = cast(list[str], owner)
        # A credential nobody owns names its own entity: the same string id.
        name_sid = missing_sid.copy()
        other = np.flatnonzero(~np.fromiter(map(operator.is_, names, missing), bool, len(names)))
        if len(other):
            enc = pc.dictionary_encode(pa.array([names[i] for i in other.tolist()], pa.string()))
            owner_sid = self._sids(enc.dictionary)
            name_sid[other] = owner_sid[np.asarray(enc.indices.to_numpy(), dtype=np.int64)]
        codes = self._register(name_sid, names)
        self._code[missing_sid] = codes
        return codes

    def _dynamic_arrays(self) -> tuple[I64, I64, I64, I64, I64, I64]:
        """Per dynamic credential: own id, first candidate, candidate count; candidates
        flat (entity id, valid_from, valid_to), most specific first."""
        if self._dyn is None:
            counts = [len(c) for _, c in self._dynamic]
            flat = [c for _, cands in self._dynamic for c in cands]
            self._dyn = (
                np.array([own for own, _ in self._dynamic], dtype=np.int64),
                np.cumsum([0, *counts[:-1]], dtype=np.int64),
                np.array(counts, dtype=np.int64),
                np.array([c[0] for c in flat], dtype=np.int64),
                np.array([c[1] for c in flat], dtype=np.int64),
                np.array([c[2] for c in flat], dtype=np.int64),
            )
        return self._dyn

    def entities(self, credentials: pa.Array | pa.ChunkedArray, ts: I64) -> I64:
        """The entity id (into `names`) of each access of one batch.

        1. Dictionary-encode the batch; look the distinct credentials up in the string
           table at once, resolving the never-seen ones together (`_resolve`).
        2. Accesses of dynamic credentials take the first (most specific) candidate valid
           at their instant, else their own entity: all candidate pairs are expanded and
           tested at once.
        """
        encoded = pc.dictionary_encode(credentials)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        distinct = encoded.dictionary
        idx = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        sid = self._sids(distinct)
        per_cred = self._code[sid]
        miss = per_cred == _MISS
        if miss.any():
            per_cred[miss] = self._resolve(distinct.filter(pa.array(miss)), sid[miss])
        codes = per_cred[idx]
        rows = np.flatnonzero(codes < 0)
        if len(rows):
            own, first, count, c_ent, c_from, c_to = self._dynamic_arrays()
            k = -codes[rows] - 1
            n = count[k]
            pair_row = np.repeat(np.arange(len(rows)), n)
            cand = _ranges(first[k], first[k] + n)
            t = ts[rows][pair_row]
            hits = np.flatnonzero((t >= c_from[cand]) & (t < c_to[cand]))
            chosen = own[k]
            if len(hits):
                # Candidates are most specific first: the first hit of each access wins.
                lead = hits[np.r_[True, pair_row[hits][1:] != pair_row[hits][:-1]]]
                chosen[pair_row[lead]] = c_ent[cand[lead]]
            codes[rows] = chosen
        return codes


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


def _levels(upper: I64, threshold: int) -> I64:
    """The highest alert level (rule 4) each upper bound reaches, 0 for none: 50 and 80
    when `upper >= threshold x level / 100`, 100 only when `upper > threshold` (strictly
    more, as billing). Integer arithmetic (`100 x upper` cannot overflow: `bucket_cap`)."""
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
        self.cap = bucket_cap(self.span)
        # The meter's entity registry (the `names` of the latest batch) and a name -> code
        # index of it, extended only when `bounds` asks (a batch does no per-name work).
        self._registry: Sequence[str] = []
        self._ids: dict[str, int] = {}
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

    def add(
        self, names: Sequence[str], codes: I64, buckets: I64, posts: I64, latest: I64
    ) -> tuple[Sequence[Bounds], list[Alert]]:
        """Add per-(entity, bucket) sums (see `MeterBackend`); bounds and alerts are
        evaluated after every row, as if the rows were added one by one (rules 2-6, held
        to that plain reading by `test_vectorised_meter_equals_row_by_row`).

        1. Only the stored buckets of the batch's known entities are read: two binary
           searches per entity find its run in the sorted store, the runs are gathered
           with their prefix sums, and each row's stored posts from its floor on come
           from a search in that small copy.
        2. The batch's own earlier rows of the entity are added with prefix sums over
           the batch; the armed alert level is a running maximum that restarts at each
           row under 50 %.
        3. New (entity, bucket) keys are inserted at the positions found in step 1.
        """
        if len(codes) == 0:
            return [], []
        span = self.span
        if self._kbase is None:
            self._kbase = int(buckets.min()) - (self._KSPAN >> 1)
        self._registry = names
        ent = codes
        first = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        seg = np.repeat(np.arange(len(first)), np.diff(np.r_[first, len(codes)]))
        ent_first = ent[first]
        self._grow(int(ent_first.max()) + 1)
        is_new = ~self._seen[ent_first]
        self._seen[ent_first] = True
        old_top = np.where(is_new, buckets[first], self._top[ent_first])[seg]
        late = buckets < old_top - span
        ok = ~late
        top = np.maximum(old_top, buckets)
        floor = top - span
        # Stored part (step 1): the runs of the known entities, gathered.
        kspan = self._KSPAN
        known = np.flatnonzero(~is_new)
        run_lo = np.searchsorted(self._keys, ent_first[known] * kspan, "left")
        run_hi = np.searchsorted(self._keys, ent_first[known] * kspan + kspan, "left")
        gather = _ranges(run_lo, run_hi)
        size = run_hi - run_lo
        sub_at = np.cumsum(size) - size
        sub_keys = self._keys[gather]
        sub_cum = np.zeros(len(gather) + 1, dtype=np.int64)
        np.cumsum(self._posts[gather], out=sub_cum[1:])
        run_s = np.zeros(len(first), dtype=np.int64)
        run_t = np.zeros(len(first), dtype=np.int64)
        run_s[known], run_t[known] = sub_at, sub_at + size
        s_row, t_row = run_s[seg], run_t[seg]

        def find(bucket: I64) -> I64:
            """Index in the gathered copy of the first stored key >= (entity, bucket)."""
            at: I64 = np.clip(np.searchsorted(sub_keys, self._key(ent, bucket)), s_row, t_row)
            return at

        # Each row's bucket as stored (step 3 merges there); a bucket holds at most
        # `bucket_cap` posts, so a row adds what fits (`bucket_cap`).
        keys = self._key(ent, buckets)
        at_bucket = find(buckets)
        inside = at_bucket < t_row
        hit = ok & inside
        hit[hit] = sub_keys[at_bucket[hit]] == keys[hit]
        held = np.zeros(len(posts), dtype=np.int64)
        held[hit] = self._posts[gather[at_bucket[hit]]]
        posts = np.minimum(posts, self.cap - held)
        at_floor = find(floor)
        stored = sub_cum[t_row] - sub_cum[at_floor]
        stored_floor = sub_cum[find(floor + 1)] - sub_cum[at_floor]
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
        # Merge the counted rows (step 3): a key found in its entity's run is added to,
        # else inserted before the first larger key of the run, or at the run's end (a
        # new entity's empty run is where its keys belong).
        self._posts[gather[at_bucket[hit]]] += posts[hit]
        run_end = np.zeros(len(first), dtype=np.int64)
        run_end[known] = run_hi
        run_end[is_new] = np.searchsorted(self._keys, ent_first[is_new] * kspan, "left")
        put = ok & ~hit
        pos = np.where(
            inside, gather[np.where(inside, at_bucket, 0)] if len(gather) else 0, run_end[seg]
        )
        self._insert(pos[put], keys[put], posts[put])
        if len(self._keys) > max(2 * self._compacted, 65_536):
            self._compact()
        out = BatchBounds(
            names, ent[last_ok], self._latest[ent[last_ok]], lower[last_ok], total[last_ok]
        )
        return out, raised

    def _insert(self, pos: I64, keys: I64, posts: I64) -> None:
        """Insert sorted keys at their positions (one mask for both arrays, where two
        `np.insert` would build it twice)."""
        dest = pos + np.arange(len(pos))
        kept = np.ones(len(self._keys) + len(dest), dtype=bool)
        kept[dest] = False
        for name, add in (("_keys", keys), ("_posts", posts)):
            merged = np.empty(len(kept), dtype=np.int64)
            merged[kept] = getattr(self, name)
            merged[dest] = add
            setattr(self, name, merged)

    def _compact(self) -> None:
        ent = self._keys // self._KSPAN
        bucket = self._keys % self._KSPAN + (self._kbase or 0)
        live = bucket >= self._top[ent] - self.span
        self._keys, self._posts = self._keys[live], self._posts[live]
        self._compacted = len(self._keys)

    def bounds(self, entity: str) -> Bounds | None:
        if len(self._ids) < len(self._registry):
            start = len(self._ids)
            self._ids.update(zip(islice(self._registry, start, None), count(start)))
        e = self._ids.get(entity)
        if e is None or e >= len(self._seen) or not self._seen[e]:
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
        return sorted(map(self._registry.__getitem__, np.flatnonzero(self._seen).tolist()))


_ADD_SCRIPT = """
-- The meter's rules 2-6 (module doc) for one batch, held to their plain row-by-row reading
-- by test_redis_meter_equals_row_by_row (tests/scraping/test_meter.py).
-- One call per Redis Cluster slot: KEYS holds, per entity, its state string and its alert
-- list (both tagged {entity}; every entity of a call hashes to the same slot).
-- ARGV[1]: little-endian doubles (exact for integers below 2^53): span, threshold,
-- bucket_us, cap (the most posts a bucket holds), then per entity latest_us, n, and n
-- bucket/posts pairs sorted by bucket.
-- State string: 6 little-endian doubles (top bucket, total, latest_us, armed level, late
-- rows, pair count), then the kept (bucket, posts) pairs sorted by bucket; the last pair
-- is the top bucket.
-- Returns one string: per entity 4 little-endian doubles (lower, upper, latest, counted),
-- then per raised alert the text " entity_index level at_us lower upper confirmed"
-- (entity_index from 0).
local fmt, sub, call = string.format, string.sub, redis.call
local spack, sunpack = struct.pack, struct.unpack
local HEAD = 48
local HEADS = {'<dddddd', '<dddddddd', '<dddddddddd', '<dddddddddddd', '<dddddddddddddd'}
local PAIRS = {'<dd', '<dddd', '<dddddd', '<dddddddd'}
local NONE = {}  -- an empty list that is only read

-- Flat numbers t[1 .. m] as doubles (m even; constant formats for up to 4 pairs, else
-- chunks: the Lua stack is limited).
local function packed(t, m)
  if m <= 8 then return spack(PAIRS[m / 2], unpack(t, 1, m)) end
  local parts = {}
  for i = 1, m, 1000 do
    local j = math.min(m, i + 999)
    parts[#parts + 1] = spack('<' .. string.rep('d', j - i + 1), unpack(t, i, j))
  end
  return table.concat(parts)
end

local args = ARGV[1]
local span, threshold, bucket_us, cap, a = sunpack('<dddd', args)

local out, raised, nraised = {}, {}, 0
for e = 1, #KEYS / 2 do
  local key = KEYS[2 * e - 1]
  local latest, nrows, r0 = sunpack('<dd', args, a)
  -- rows at byte r0, 16 bytes each; r1: the last one
  a = r0 + 16 * nrows
  local r1 = a - 16
  -- old/oldv: the pairs read, ascending (the prefix that may leave the window, or all of
  -- them on the slow path); the rest stays as bytes (`mid`) but for the last pair.
  local old, oldv, nold = NONE, NONE, 0
  local top, total, seen, armed, late, n
  local raw = call('GET', key)
  local mid, last_b, last_v = nil, nil, nil
  if not raw then
    top = sunpack('<d', args, r0); total = 0; seen = latest; armed = 0; late = 0; n = 0
  else
    top, total, seen, armed, late, n = sunpack('<dddddd', raw)
    old, oldv = {}, {}
    if latest > seen then seen = latest end
    local last = sunpack('<d', args, r1)
    if last < top then last = top end
    local F = last - span  -- the oldest kept bucket after this batch
    -- Slow path when a row falls strictly between F and the top bucket (rows out of
    -- time order): every pair is read.
    local slow = false
    for j = r0, r1, 16 do
      local k = sunpack('<d', args, j)
      if k > F and k < top then slow = true; break end
    end
    -- Pairs one at a time (a constant format: no new string, no table).
    local pos = HEAD + 1
    while nold < n do
      local b, v, nxt = sunpack('<dd', raw, pos)
      if b > F and not slow then break end
      nold = nold + 1; old[nold] = b; oldv[nold] = v
      pos = nxt
    end
    if nold < n then
      last_b, last_v = sunpack('<dd', raw, HEAD + 16 * (n - 1) + 1)
      mid = sub(raw, HEAD + 16 * nold + 1, HEAD + 16 * (n - 1))
    end
  end
  -- Rows in bucket order: the window moves up with the top bucket, buckets below its
  -- floor leave it (read ones from the front of `old`, added ones from that of `added`).
  local added, addv, nadded = {}, {}, 0
  local io, ia, jo, counted = 1, 1, 1, 0
  for j = r0, r1, 16 do
    local k, p = sunpack('<dd', args, j)
    if k > top then top = k end
    local floor = top - span
    while io <= nold and old[io] < floor do total = total - oldv[io]; io = io + 1 end
    while ia <= nadded and added[ia] < floor do total = total - addv[ia]; ia = ia + 1 end
    if k < floor then
      late = late + 1
    else
      counted = 1
      -- A bucket saturates at `cap`: the row adds what fits.
      while jo <= nold and old[jo] < k do jo = jo + 1 end
      if jo <= nold and old[jo] == k then
        p = math.min(p, cap - oldv[jo]); oldv[jo] = oldv[jo] + p
      elseif k == last_b then
        p = math.min(p, cap - last_v); last_v = last_v + p
      else
        p = math.min(p, cap); nadded = nadded + 1; added[nadded] = k; addv[nadded] = p
      end
      total = total + p
      local level = 0
      if total > threshold then level = 100
      elseif total * 100 >= threshold * 80 then level = 80
      elseif total * 100 >= threshold * 50 then level = 50 end
      if level == 0 then
        armed = 0
      elseif level > armed then
        local at = (k + 1) * bucket_us - 1
        if latest < at then at = latest end
        -- The floor bucket, if kept, is the first kept one read or added.
        local lower = total
        if io <= nold and old[io] == floor then lower = total - oldv[io]
        elseif ia <= nadded and added[ia] == floor then lower = total - addv[ia] end
        for _, lv in ipairs({50, 80, 100}) do
          if armed < lv and lv <= level then
            local confirmed = 0
            if lv == 100 then
              if lower > threshold then confirmed = 1 end
            elseif lower * 100 >= threshold * lv then
              confirmed = 1
            end
            -- Integers formatted with %d: cjson would print 16-digit instants in %.14g.
            call('RPUSH', KEYS[2 * e], fmt(
              '{"level":%d,"at_us":%d,"lower":%d,"upper":%d,"confirmed":%d}',
              lv, at, lower, total, confirmed))
            nraised = nraised + 1
            raised[nraised] = fmt(' %d %d %d %d %d %d', e - 1, lv, at, lower, total, confirmed)
          end
        end
        armed = level
      end
    end
  end
  local floor = top - span
  local lower = total
  if io <= nold and old[io] == floor then lower = total - oldv[io]
  elseif ia <= nadded and added[ia] == floor then lower = total - addv[ia] end
  -- Kept pairs in bucket order, as flat (bucket, posts) numbers: `low`, the read and added
  -- ones below the untouched middle, merged (read ones are all below it); then the middle
  -- as bytes; then `high`, the last pair and the added ones above it. (The last pair is
  -- above the final floor: never the oldest, so `lower` above needs no look at it.)
  local low, nl = {}, 0
  while io <= nold or (ia <= nadded and (last_b == nil or added[ia] < last_b)) do
    if io <= nold and (ia > nadded or old[io] < added[ia]) then
      low[nl + 1] = old[io]; low[nl + 2] = oldv[io]; io = io + 1
    else
      low[nl + 1] = added[ia]; low[nl + 2] = addv[ia]; ia = ia + 1
    end
    nl = nl + 2
  end
  local high, nh = NONE, 0
  if last_b ~= nil or ia <= nadded then high = {} end
  if last_b ~= nil then high[1] = last_b; high[2] = last_v; nh = 2 end
  for q = ia, nadded do high[nh + 1] = added[q]; high[nh + 2] = addv[q]; nh = nh + 2 end
  local count = (nl + nh) / 2
  if last_b ~= nil then count = count + (n - 1 - nold) end
  -- One pack for the head and the pairs before the middle when they are few (constant
  -- formats: no new format string).
  local value
  if nl <= 8 then
    value = spack(HEADS[nl / 2 + 1], top, total, seen, armed, late, count, unpack(low, 1, nl))
  else
    value = spack('<dddddd', top, total, seen, armed, late, count) .. packed(low, nl)
  end
  if mid ~= nil then value = value .. mid end
  if nh > 0 then value = value .. packed(high, nh) end
  call('SET', key, value)
  out[e] = spack('<dddd', lower, total, seen, counted)
end
return table.concat(out) .. table.concat(raised)
"""


def hash_tags(entities: pa.Array) -> pa.Array:
    """Each entity name as a Redis Cluster hash tag (the text between `{` and `}`).

    1. `%`, `{` and `}` are written `%25`, `%7B` and `%7D`: a brace would end the tag early,
       and escaping `%` first keeps distinct names distinct.
    2. The empty name is written `%00` (which step 1 never produces): Redis Cluster hashes
       the whole key when the tag is empty, which would put an entity's two keys in
       different slots.
    """
    tags = pc.replace_substring(entities.cast(pa.string()), "%", "%25")
    tags = pc.replace_substring(pc.replace_substring(tags, "{", "%7B"), "}", "%7D")
    return pc.if_else(pc.equal(tags, ""), pa.scalar("%00"), tags)


_STATE = struct.Struct("<6d")
"""Head of an entity's state string in Redis (`_ADD_SCRIPT`): top bucket, total,
latest_us, armed level, late rows, n; then n (bucket, posts) pairs sorted by bucket (all
little-endian doubles: exact for integers below 2**53)."""

_SLOTS = 16384
"""Redis Cluster hash slots: CRC16 (XMODEM, `binascii.crc_hqx`) of the hash tag mod 16384."""


def _bulk_join(*parts: pa.Array | pa.Scalar | str | bytes) -> pa.Array:
    """Element-wise concatenation of strings/binaries (scalars broadcast) as large_binary."""
    args = [pa.scalar(p, pa.binary()) if isinstance(p, str | bytes) else p for p in parts]
    args = [p.cast(pa.binary()) for p in args]
    return pc.binary_join_element_wise(*args, pa.scalar(b"", pa.binary())).cast(pa.large_binary())


def _bulk_strings(text: pa.Array) -> pa.Array:
    """RESP bulk strings `$len CRLF value CRLF` of each element (lengths in bytes)."""
    lengths = pc.binary_length(text).cast(pa.string())
    return _bulk_join("$", lengths, "\r\n", text, "\r\n")


class RedisMeter:
    """Bucket store in Redis shared by several processes. Keys: `<prefix>:{<entity>}:m`
    (string: the entity's state, `_STATE`), `<prefix>:{<entity>}:alerts` (list), plus the
    set `<prefix>:alerted` of entities with alerts.

    A batch is one round trip (`add`):
    1. Entities are grouped by the Redis Cluster slot of their hash tag; each group is one
       EVALSHA of `_ADD_SCRIPT`, which updates its entities one after the other (a call
       touches one slot, as Redis Cluster requires).
    2. A call's numbers (terms, then per entity its latest instant, row count and
       bucket/posts pairs) are one binary argument of doubles written by NumPy; keys and
       headers are joined with Arrow, and the whole batch is assembled by one `take` and
       sent as one buffer. The replies (one string per call: 4 doubles per entity, then
       any alerts as text) are read in order on the same connection and parsed at once.
    3. Per entity the script reads the state with one GET, unpacks only the pairs that may
       leave the window and the last one (all of them when a row falls between those),
       computes the bounds and alerts after every (entity, bucket) row like `MemoryMeter`,
       and writes the state back with one SET (untouched pairs are copied as bytes).
    """

    def __init__(self, terms: Terms, bucket_us: int, url: str, prefix: str) -> None:
        import redis

        self.terms = terms
        self.bucket_us = bucket_us
        self.span = terms.window_us // bucket_us
        self.prefix = prefix
        self.client = redis.Redis.from_url(url)
        self.sha = str(self.client.script_load(_ADD_SCRIPT))
        # Hash slot per entity code (-1: not computed yet); codes are the meter's registry.
        self._slot = np.full(0, -1, dtype=np.int64)

    def _keys(self, entity: str) -> list[str]:
        tag = hash_tags(pa.array([entity], pa.string()))[0].as_py()
        base = f"{self.prefix}:{{{tag}}}"
        return [f"{base}:m", f"{base}:alerts"]

    def _slots(self, codes: I64, tags: pa.Array) -> I64:
        """The cluster slot of each entity (`codes[i]`, hash tag `tags[i]`), cached by code."""
        top = int(codes.max()) + 1
        if top > len(self._slot):
            grown = np.full(max(top, 2 * len(self._slot), 1024), -1, dtype=np.int64)
            grown[: len(self._slot)] = self._slot
            self._slot = grown
        slots = self._slot[codes]
        todo = np.flatnonzero(slots < 0)
        if len(todo):
            raw = tags.take(pa.array(todo)).cast(pa.binary()).to_pylist()
            slots[todo] = np.array(list(map(binascii.crc_hqx, raw, repeat(0))), np.int64) % _SLOTS
            self._slot[codes[todo]] = slots[todo]
        return slots

    def _send(self, buffer: bytes | memoryview, count: int) -> list[Any]:
        """Send encoded commands on one connection; `count` replies (or errors) in order."""
        import redis

        pool = self.client.connection_pool
        conn = pool.get_connection()
        replies: list[Any] = []
        try:
            conn.send_packed_command([buffer], check_health=True)  # type: ignore[no-untyped-call]
            for _ in range(count):
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

    def _encode(
        self, names: Sequence[str], codes: I64, buckets: I64, posts: I64, latest: I64
    ) -> tuple[memoryview, I64, I64]:
        """The EVALSHA commands of one batch as one buffer (class doc, step 2).

        Returns the buffer, the entities (indexes of their first rows' runs, in the order
        the calls name them) and the first entity of each call in that order.
        """
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        counts = np.diff(np.r_[starts, len(codes)])
        ent_codes = codes[starts]
        tags = hash_tags(pa.array(list(map(names.__getitem__, ent_codes.tolist())), pa.string()))
        slots = self._slots(ent_codes, tags)
        order = np.argsort(slots, kind="stable")
        s = slots[order]
        call_first = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        per_call = np.diff(np.r_[call_first, len(order)])
        # Numbers (one blob per call): span, threshold, bucket_us, cap, then per entity
        # (call order) latest, n and its n bucket/posts pairs; doubles, exact below 2**53.
        calls, ents = len(call_first), len(order)
        call_of = np.repeat(np.arange(calls), per_call)
        width = 2 + 2 * counts[order]
        fixed = self._fixed()
        at = np.cumsum(width) - width + len(fixed) * (call_of + 1)
        total = int(at[-1] + width[-1])
        nums = np.empty(total, dtype="<f8")
        call_at = at[call_first] - len(fixed)
        for i, v in enumerate(fixed):
            nums[call_at + i] = v
        nums[at] = latest[starts[order]]
        nums[at + 1] = counts[order]
        rank = np.empty(ents, dtype=np.int64)
        rank[order] = np.arange(ents)
        ent_of_row = np.repeat(np.arange(len(starts)), counts)
        dest = at[rank[ent_of_row]] + 2 + 2 * (np.arange(len(codes)) - starts[ent_of_row])
        nums[dest] = buckets
        nums[dest + 1] = posts
        blobs = pa.LargeBinaryArray.from_buffers(
            pa.large_binary(),
            calls,
            [None, pa.py_buffer(8 * np.r_[call_at, total]), pa.py_buffer(nums)],
        )
        base = pa.scalar(f"{self.prefix}:{{")
        key_m = _bulk_strings(pc.binary_join_element_wise(base, tags, pa.scalar("}:m"), ""))
        key_a = _bulk_strings(pc.binary_join_element_wise(base, tags, pa.scalar("}:alerts"), ""))
        keys = _bulk_join(key_m, key_a).take(pa.array(order))
        nkeys = pa.array(2 * per_call).cast(pa.string())
        head = _bulk_join(
            "*",
            pa.array(2 * per_call + 4).cast(pa.string()),
            f"\r\n$7\r\nEVALSHA\r\n${len(self.sha)}\r\n{self.sha}\r\n$",
            pc.binary_length(nkeys).cast(pa.string()),
            "\r\n",
            nkeys,
            "\r\n",
        )
        blob_len = _bulk_join("$", pc.binary_length(blobs).cast(pa.string()), "\r\n")
        crlf = pa.array([b"\r\n"], pa.large_binary())
        pieces = pa.concat_arrays([head, keys, blob_len, blobs, crlf])
        # Piece order: per call its head, its entities' keys, the blob's length, the blob.
        pos = 4 * np.arange(calls) + call_first
        take = np.empty(4 * calls + ents, dtype=np.int64)
        take[pos] = np.arange(calls)
        take[pos[call_of] + 1 + np.arange(ents) - call_first[call_of]] = calls + np.arange(ents)
        take[pos + 1 + per_call] = calls + ents + np.arange(calls)
        take[pos + 2 + per_call] = 2 * calls + ents + np.arange(calls)
        take[pos + 3 + per_call] = 3 * calls + ents
        _, buffer = binary_parts(pieces.take(pa.array(take)))
        return buffer, order, call_first

    def _fixed(self) -> tuple[int, int, int, int]:
        return self.span, self.terms.threshold, self.bucket_us, bucket_cap(self.span)

    def _run(
        self, names: Sequence[str], codes: I64, buckets: I64, posts: I64, latest: I64
    ) -> tuple[I64, I64, list[tuple[int, Alert]]]:
        """Run one batch: per entity (any order) its code and reply row (lower, upper,
        latest, counted), and the raised alerts with their entity codes."""
        import redis

        buffer, order, call_first = self._encode(names, codes, buckets, posts, latest)
        replies = self._send(buffer, len(call_first))
        errors = [
            r
            for r in replies
            if isinstance(r, Exception) and not isinstance(r, redis.exceptions.NoScriptError)
        ]
        if errors:
            raise errors[0]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        ent_codes = codes[starts][order]  # call order
        per_call = np.diff(np.r_[call_first, len(ent_codes)])
        ran = np.array([not isinstance(r, Exception) for r in replies])
        fixed: list[bytes] = []
        alerts: list[tuple[int, Alert]] = []
        cuts = (32 * per_call).tolist()
        for g in np.flatnonzero(ran).tolist():
            reply, size = replies[g], cuts[g]
            fixed.append(reply[:size])
            if len(reply) > size:
                found = np.fromstring(reply[size:], np.int64, sep=" ").reshape(-1, 6).tolist()
                for e, lv, at, low, up, conf in found:
                    code = int(ent_codes[int(call_first[g]) + e])
                    alerts.append((code, Alert(names[code], lv, at, low, up, bool(conf))))
        flat = np.frombuffer(b"".join(fixed), dtype="<f8")
        rows = flat.astype(np.int64).reshape(-1, 4)
        done = ent_codes[np.repeat(ran, per_call)]
        if not ran.all():
            # The server lost its scripts (restart, SCRIPT FLUSH): load the script again and
            # run the entities of the calls that did not run.
            self.sha = str(self.client.script_load(_ADD_SCRIPT))
            lost = np.isin(codes, ent_codes[np.repeat(~ran, per_call)])
            more = self._run(names, codes[lost], buckets[lost], posts[lost], latest[lost])
            done = np.r_[done, more[0]]
            rows = np.concatenate([rows, more[1]])
            alerts += more[2]
        return done, rows, alerts

    def add(
        self, names: Sequence[str], codes: I64, buckets: I64, posts: I64, latest: I64
    ) -> tuple[Sequence[Bounds], list[Alert]]:
        """Add per-(entity, bucket) sums (see `MeterBackend`) in one round trip; bounds and
        alerts are evaluated after every row, as in `MemoryMeter`, and come back in entity
        code order like its results."""
        if len(codes) == 0:
            return [], []
        done, rows, alerts = self._run(names, codes, buckets, posts, latest)
        by_code = np.argsort(done, kind="stable")
        done, rows = done[by_code], rows[by_code]
        counted = rows[:, 3] == 1
        alerts.sort(key=lambda ca: ca[0])  # stable: an entity's alerts stay in order
        raised = [a for _, a in alerts]
        if raised:
            self.client.sadd(f"{self.prefix}:alerted", *sorted({a.entity for a in raised}))
        out = BatchBounds(
            names,
            done[counted],
            np.ascontiguousarray(rows[counted, 2]),
            np.ascontiguousarray(rows[counted, 0]),
            np.ascontiguousarray(rows[counted, 1]),
        )
        return out, raised

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
        raw = cast(bytes | None, self.client.get(self._keys(entity)[0]))
        if raw is None:
            return None
        top, total, latest, _, _, n = _STATE.unpack_from(raw)
        pairs = np.frombuffer(raw, dtype="<f8", count=2 * int(n), offset=_STATE.size)
        hit = pairs[1::2][pairs[0::2] == top - self.span]
        oldest = float(hit[0]) if len(hit) else 0.0
        return Bounds(entity, int(latest), int(total - oldest), int(total))

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
