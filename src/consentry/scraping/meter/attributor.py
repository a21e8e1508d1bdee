"""Attributing a batch of accesses to entities, as the assessment does (rule 1 of the
meter): exact credential, then the longest prefix, within validity; unmapped credentials
are their own entity. Credential texts are interned in an open-addressing hash table over
Arrow's bytes (`_StringTable`), so a batch resolves without a Python loop per access."""

from __future__ import annotations

import operator
import os
from collections.abc import Iterator, Sequence
from itertools import count
from typing import cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consentry.binary import binary_parts
from consentry.scraping.arrays import concat_ranges, run_starts, with_room
from consentry.scraping.attribution import FAR_FUTURE, FAR_PAST, Owners, owner_candidates
from consentry.scraping.meter.rule import I64
from consentry.scraping.results import to_us

__all__ = ["Attributor"]

_OPEN_FROM = to_us(FAR_PAST)
_OPEN_TO = to_us(FAR_FUTURE)
"""Open validity ends as stored by `check_owners` (FAR_PAST / FAR_FUTURE), in µs."""

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
        padded[concat_ranges(first * 8, first * 8 + lens)] = data
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
            a = self._data[concat_ranges(mine, mine + n)]
            b = data[concat_ranges(theirs, theirs + n)]
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
            self._data = with_room(self._data, end)
            self._data[int(self._off[start]) : end] = data[concat_ranges(off[new], off[new] + lens)]
            self._off = with_room(self._off, start + len(new) + 1)
            self._off[start + 1 : start + len(new) + 1] = self._off[start] + np.cumsum(lens)
            self._hash = with_room(self._hash, start + len(new))
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
            self._code = with_room(self._code, size)
            self._code[old:] = _MISS
            self._name = with_room(self._name, size)
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
            cand = concat_ranges(first[k], first[k] + n)
            t = ts[rows][pair_row]
            hits = np.flatnonzero((t >= c_from[cand]) & (t < c_to[cand]))
            chosen = own[k]
            if len(hits):
                # Candidates are most specific first: the first hit of each access wins.
                lead = hits[run_starts(pair_row[hits])]
                chosen[pair_row[lead]] = c_ent[cand[lead]]
            codes[rows] = chosen
        return codes
