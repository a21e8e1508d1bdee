"""The columnar DuckDB path of the assessment (method `numpy` on DuckDB, the default).

Same results as the Ibis path and `reference.py` (the cross-checks run both), built for
volume: nothing per access leaves the engine but three numbers, and no string goes through
a sort.

1. **Attribution per distinct credential.** One aggregate gives every distinct credential
   with its first and last access. Each is resolved once (`owner_candidates`): a credential
   whose owner is the same over its whole span (no candidate, or the winning candidate does
   not change between its first and last access) maps to one dense entity code; the others
   ("dynamic": rotated keys, ranges with a validity edge inside the span) get piecewise
   segments `[from, to) -> entity`, resolved per access with one binary search over a
   composite (credential, instant) key. Entity codes are ranks of the sorted entity names,
   so code order is output order.
2. **Duplicates.** One scan hashes every request_id (64-bit `hash`); a sort of the hashes
   finds the repeated ones. Only request ids whose hash repeats are ranked exactly (first by
   ts, credential, posts, as the rule says; a hash collision of two different ids keeps
   both, since the ranking groups by the id itself); every other access is unique for
   certain. Without repeats nothing else happens.
3. **Exact pass.** DuckDB streams (credential code, instant, posts) joined to the small
   credential table; NumPy packs (entity's low bits, instant - t0, posts) into one uint64
   per access, one array per chunk of entity codes (their high bits), and sorts each (SIMD
   sort, two chunks at a time in threads); `lexsort` only when instant and posts leave
   fewer than 8 bits. Per chunk of entities of about 4M rows (two threads; composite keys
   stay in int64): prefix sums, window ends by one merge (keys and `key + window` tagged
   in the low bit are two sorted runs that a stable sort merges in one pass: a key's end
   is its position among the merged values minus its rank), per-entity totals and maxima
   with `reduceat`.
4. **Billing.** Mode `earliest` runs vectorised over all over-line entities at once (one
   binary search per round, one round per billed window of the busiest entity); mode
   `max_total` runs the pure rule per over-line entity.
5. **Evidence.** One more scan joins the accesses of billed entities to their window in
   the engine (entity and `start <= ts < end`) and returns window, offset, request_id,
   credential index and posts. Windows form groups of consecutive windows (at most 4M
   accesses, and few enough windows and rows that (window, offset, row) pack into one
   uint64); one sort of packed (group, row) keys partitions the rows, and per group (two
   threads) one sort of packed (window, offset, row) keys gives the canonical order, ties
   by request_id. NumPy's argsort is far slower than its SIMD sort of the same uint64 keys
   (figures in docs/benchmarks.md, "Sorting packed keys"), hence the packing. Lines are
   formatted by table lookups and one Arrow join of six columns (fixed-width request ids
   and the instant's tables taken by NumPy as fixed-width items: Arrow's variable-width
   take copies value by value), and each window's contiguous slice of the line buffer is
   hashed (`canonical.py`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consentry.binary import binary_parts, fixed_rows, fixed_width
from consentry.scraping.attribution import Owners, owner_candidates
from consentry.scraping.canonical import (
    canonical_lines_columns,
    digests_of_ranges,
    escaped_binary,
    needs_escape,
    tabbed,
)
from consentry.scraping.results import (
    Assessment,
    BilledWindow,
    assemble_assessment,
    from_us,
    rolling_series,
)
from consentry.scraping.rules import I64, Terms, max_total_windows, window_amount

if TYPE_CHECKING:
    import duckdb
    import ibis
    import ibis.expr.types as ir


__all__ = [
    "CredentialMap",
    "assess_columnar",
    "earliest_all",
    "exact_pass",
    "forward_ends",
    "pair_search",
    "resolve_credentials",
    "sort_accesses",
]

_CHUNK_ROWS = 1 << 22
"""Rows per chunk of the exact pass (bounds the temporaries; entities never straddle)."""
_EVIDENCE_ROWS = 4_000_000
"""Accesses per evidence group (consecutive windows), to bound the sort and line buffer."""
_PACK_BITS = 64
_MIN_CHUNK_BITS = 8
"""Bits of a packed key, and the fewest of them left for entity codes (else lexsort)."""
U64 = npt.NDArray[np.uint64]


def pair_search(k_major: I64, k_minor: I64, q_major: I64, q_minor: I64) -> I64:
    """For keys sorted by (major, minor): the index of the last key <= each query pair
    (-1: none), lexicographically. One binary search over a composite int64 key when it
    cannot overflow, else one search per distinct major value."""
    if len(k_major) == 0 or len(q_major) == 0:
        return np.full(len(q_major), -1, dtype=np.int64)
    m0 = int(min(int(k_major.min()), int(q_major.min())))
    m1 = int(max(int(k_major.max()), int(q_major.max())))
    base = int(min(int(k_minor.min()), int(q_minor.min())))
    stride = int(max(int(k_minor.max()), int(q_minor.max()))) - base + 1
    if (m1 - m0 + 1) * stride < (1 << 62):
        keys = (k_major - m0) * stride + (k_minor - base)
        return np.searchsorted(keys, (q_major - m0) * stride + (q_minor - base), side="right") - 1
    out = np.full(len(q_major), -1, dtype=np.int64)
    for major in np.unique(q_major).tolist():
        a = int(np.searchsorted(k_major, major, side="left"))
        b = int(np.searchsorted(k_major, major, side="right"))
        rows = np.flatnonzero(q_major == major)
        pos = np.searchsorted(k_minor[a:b], q_minor[rows], side="right") - 1
        out[rows] = np.where(pos >= 0, pos + a, np.searchsorted(k_major, major, "left") - 1)
    return out


# ----------------------------------------------------------------------------- attribution


@dataclass(frozen=True, slots=True)
class CredentialMap:
    """Distinct credentials resolved to entities (module doc, step 1).

    `code[i]` is the entity code of credential i when static, else `-(d + 1)` for dynamic
    credential d, whose segments are rows of `seg_dyn`/`seg_from`/`seg_code` (sorted by
    dynamic index, then start; the first segment of each starts at its first access).
    `names` are the entity names, sorted (code = index).
    """

    credentials: pa.Array
    code: npt.NDArray[np.int32]
    names: pa.Array
    seg_dyn: I64
    seg_from: I64
    seg_code: I64

    @property
    def dynamic(self) -> bool:
        return len(self.seg_dyn) > 0

    def codes_at(self, cred_code: npt.NDArray[np.int32], ts: I64) -> npt.NDArray[np.int32]:
        """Entity code of each access from its credential's code and its instant."""
        out = np.asarray(cred_code, dtype=np.int32).copy()
        dyn = np.flatnonzero(out < 0)
        if len(dyn) == 0:
            return out
        d = (-out[dyn].astype(np.int64)) - 1
        # Every access is at or after its credential's first segment (spans start there).
        pos = pair_search(self.seg_dyn, self.seg_from, d, ts[dyn])
        out[dyn] = self.seg_code[pos].astype(np.int32)
        return out


def resolve_credentials(
    credentials: pa.Array, first: I64, last: I64, owners: Owners
) -> CredentialMap:
    """Resolve every distinct credential over its span `[first, last]` (module doc, step 1).

    Rules as `attribution.attribute`: exact match beats any prefix, the longest prefix beats
    shorter ones, validity `[valid_from, valid_to)`, nobody: the credential itself.
    """
    creds = credentials.cast(pa.string())
    n = len(creds)
    cand = owner_candidates(creds, owners)
    idx = pc.index_in(cand["credential"], value_set=creds)
    valid = pc.is_valid(idx)
    cand = cand.filter(valid)
    idx_np = np.asarray(pc.filter(idx, valid).to_numpy(zero_copy_only=False), dtype=np.int64)
    # Static name per credential: itself unless a candidate decides otherwise below.
    entity_of: dict[int, str] = {}
    segments: list[tuple[int, int, str]] = []  # (credential index, from, entity)
    if len(idx_np):
        order = np.argsort(idx_np, kind="stable")
        c_idx = idx_np[order].tolist()
        c_ent = cand["entity"].take(pa.array(order)).to_pylist()
        c_from = cand["valid_from"].cast(pa.int64()).take(pa.array(order)).to_pylist()
        c_to = cand["valid_to"].cast(pa.int64()).take(pa.array(order)).to_pylist()
        c_spec = cand["specificity"].take(pa.array(order)).to_pylist()
        names_py = creds.to_pylist()
        k = 0
        total = len(c_idx)
        while k < total:
            j = k
            while j < total and c_idx[j] == c_idx[k]:
                j += 1
            ci = c_idx[k]
            lo, hi = int(first[ci]), int(last[ci])
            rows = list(range(k, j))
            cuts = sorted(
                {lo}
                | {c_from[r] for r in rows if lo < c_from[r] <= hi}
                | {c_to[r] for r in rows if lo < c_to[r] <= hi}
            )
            pieces: list[tuple[int, str]] = []
            for at in cuts:
                best_spec, best = -1, names_py[ci]
                for r in rows:
                    if c_from[r] <= at < c_to[r] and c_spec[r] > best_spec:
                        best_spec, best = c_spec[r], c_ent[r]
                if not pieces or pieces[-1][1] != best:
                    pieces.append((at, best))
            if len(pieces) == 1:
                entity_of[ci] = pieces[0][1]
            else:
                segments += [(ci, at, ent) for at, ent in pieces]
            k = j
    # Entity names: each static credential's entity (itself by default) plus segment owners.
    static_names = creds
    if entity_of:
        keys = np.fromiter(entity_of.keys(), dtype=np.int64, count=len(entity_of))
        mask = np.zeros(n, dtype=bool)
        mask[keys] = True
        replaced = np.empty(n, dtype=object)
        replaced[keys] = list(entity_of.values())
        pylist = np.asarray(creds.to_numpy(zero_copy_only=False), dtype=object)
        pylist[mask] = replaced[mask]
        static_names = pa.array(pylist, pa.string())
    dyn_creds = sorted({ci for ci, _, _ in segments})
    dyn_index = {ci: d for d, ci in enumerate(dyn_creds)}
    seg_names = pa.array([ent for _, _, ent in segments], pa.string())
    all_names = pc.unique(pa.concat_arrays([static_names, seg_names]))
    names = all_names.take(pc.sort_indices(all_names))
    code = np.array(
        pc.index_in(static_names, value_set=names).to_numpy(zero_copy_only=False), dtype=np.int32
    )
    for ci, d in dyn_index.items():
        code[ci] = -(d + 1)
    if segments:
        seg_dyn = np.array([dyn_index[ci] for ci, _, _ in segments], dtype=np.int64)
        seg_from = np.array([at for _, at, _ in segments], dtype=np.int64)
        seg_code = np.asarray(
            pc.index_in(seg_names, value_set=names).to_numpy(zero_copy_only=False), dtype=np.int64
        )
        order = np.lexsort((seg_from, seg_dyn))
        seg_dyn, seg_from, seg_code = seg_dyn[order], seg_from[order], seg_code[order]
    else:
        seg_dyn = seg_from = seg_code = np.zeros(0, dtype=np.int64)
    return CredentialMap(creds, code, names, seg_dyn, seg_from, seg_code)


# ------------------------------------------------------------------------------ sorting


def sort_accesses(code: npt.NDArray[np.int32], ts: I64, posts: I64) -> tuple[I64, I64, I64]:
    """(code, ts, posts) sorted by (code, ts); posts ride along.

    When `bits(code) + bits(ts - t0) + bits(posts)` fit in 64, the three are packed into one
    uint64 and sorted by value (posts in the low bits order ties, which changes no prefix
    sum at a tie boundary); else a `lexsort`.
    """
    n = len(ts)
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z.copy(), z.copy()
    t0 = int(ts.min())
    tbits = (int(ts.max()) - t0).bit_length()
    pmin, pmax = int(posts.min()), int(posts.max())
    pbits = pmax.bit_length()
    cbits = max(int(code.max()), 0).bit_length()
    if pmin >= 0 and int(code.min()) >= 0 and cbits + tbits + pbits <= 64:
        key = code.astype(np.uint64) << np.uint64(tbits + pbits)
        key |= (ts - t0).astype(np.uint64) << np.uint64(pbits)
        key |= posts.astype(np.uint64)
        key.sort()
        out_p = (key & np.uint64((1 << pbits) - 1)).astype(np.int64)
        key >>= np.uint64(pbits)
        out_t = (key & np.uint64((1 << tbits) - 1)).astype(np.int64)
        out_t += t0
        key >>= np.uint64(tbits)
        out_c = key.astype(np.int64)
        return out_c, out_t, out_p
    order = np.lexsort((ts, code))
    return code[order].astype(np.int64), ts[order], posts[order]


# --------------------------------------------------------------------------- exact pass


def forward_ends(key: I64, window_us: int) -> I64:
    """For sorted `key`: the first index whose key is >= key[i] + window (left search).

    One merge instead of n binary searches: keys tagged `2k + 1` and queries `2(k + w)`
    sorted together; a query's position minus its rank is the number of keys before it.
    """
    n = len(key)
    merged = np.empty(2 * n, dtype=np.int64)
    np.multiply(key, 2, out=merged[:n])
    merged[:n] += 1
    np.add(key, window_us, out=merged[n:])
    merged[n:] *= 2
    # Two sorted runs: the stable sort (timsort) finds them and merges once, O(n).
    merged.sort(kind="stable")
    pos = np.flatnonzero((merged & 1) == 0)
    del merged
    pos -= np.arange(n, dtype=np.int64)
    return pos


@dataclass(slots=True)
class ExactResult:
    """Per entity (in code order) and per billed window (in code, start order)."""

    codes: I64
    totals: I64
    accesses: I64
    maxima: I64
    max_start: I64
    first_row: I64
    w_code: I64
    w_start: I64
    w_lo: I64
    w_hi: I64
    w_posts: I64


def earliest_all(
    key: I64, code: I64, ts: I64, counts: I64, lo: I64, hi: I64, terms: Terms
) -> tuple[I64, I64, I64, I64, I64]:
    """Mode `earliest` for every entity at once (sorted composite `key`, module doc step 4):
    per round, each entity's current over-line access is billed and the next candidate is
    the first over-line access of the same entity at or after the window's end. The rule
    is `rules.earliest_windows`; `test_exact_pass_matches_the_rules_per_entity` holds this
    to it."""
    over = np.flatnonzero(counts > terms.threshold)
    empty = np.zeros(0, dtype=np.int64)
    if len(over) == 0:
        return empty, empty, empty, empty, empty
    o_key = key[over]
    o_code = code[over]
    cur = np.flatnonzero(np.r_[True, o_code[1:] != o_code[:-1]])
    chosen: list[I64] = []
    while len(cur):
        chosen.append(over[cur])
        nxt = np.searchsorted(o_key, o_key[cur] + terms.window_us, side="left")
        ok = nxt < len(over)
        nxt, cur = nxt[ok], cur[ok]
        cur = nxt[o_code[nxt] == o_code[cur]]
    rows = np.sort(np.concatenate(chosen))
    return code[rows], ts[rows], lo[rows], hi[rows], counts[rows]


def exact_pass(code: I64, ts: I64, posts: I64, terms: Terms, mode: str) -> ExactResult:
    """Totals, maxima and billed windows of every entity (arrays sorted by code, ts).

    The rules are `rules.forward_counts` (maxima), `rules.earliest_windows` (vectorised
    here by `earliest_all`) and `rules.max_total_windows` (called per over-line entity);
    `test_exact_pass_matches_the_rules_per_entity` holds this pass to them with ties at
    the threshold and accesses at window edges, and `test_duckdb_matches_reference` the
    whole columnar path."""
    n = len(ts)
    w = terms.window_us
    if n == 0:
        z = np.zeros(0, dtype=np.int64)
        return ExactResult(z, z, z, z, z, z, z, z, z, z, z)
    starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
    ends = np.r_[starts[1:], n].astype(np.int64)
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(posts, out=cum[1:])
    t0 = int(ts.min()) if n else 0
    stride = (int(ts.max()) - t0 + w + 1) if n else 1
    per_chunk = max(1, (1 << 61) // stride)
    maxima = np.zeros(len(starts), dtype=np.int64)
    max_start = np.zeros(len(starts), dtype=np.int64)
    # Chunks: whole entities, at most per_chunk of them, about _CHUNK_ROWS rows each.
    bounds: list[tuple[int, int]] = []
    s = 0
    while s < len(starts):
        limit = int(np.searchsorted(ends, int(starts[s]) + _CHUNK_ROWS, side="right"))
        e = min(len(starts), s + per_chunk, max(limit, s + 1))
        bounds.append((s, e))
        s = e

    def windows_of_chunk(chunk: tuple[int, int]) -> list[_Windows]:
        s, e = chunk
        a, b = int(starts[s]), int(ends[e - 1])
        seg = code[a:b]
        rank = np.zeros(b - a, dtype=np.int64)
        np.cumsum(seg[1:] != seg[:-1], out=rank[1:])
        key = rank * stride + (ts[a:b] - t0)
        del rank
        newrun = np.r_[True, key[1:] != key[:-1]]
        lo = np.maximum.accumulate(np.where(newrun, np.arange(b - a, dtype=np.int64), 0))
        del newrun
        hi = forward_ends(key, w)
        counts = cum[a + hi] - cum[a + lo]
        local = starts[s:e] - a
        densest = np.maximum.reduceat(counts, local)
        maxima[s:e] = densest
        hits = np.flatnonzero(counts == np.repeat(densest, np.diff(np.r_[local, b - a])))
        seg_of = np.searchsorted(local, hits, side="right") - 1
        first_hit = hits[np.r_[True, seg_of[1:] != seg_of[:-1]]]
        max_start[s:e] = ts[a + first_hit]
        if mode == "earliest":
            return [earliest_all(key, seg, ts[a:b], counts, lo + a, hi + a, terms)]
        wins: list[_Windows] = []
        for k in np.flatnonzero(densest > terms.threshold).tolist():
            sa, sb = int(starts[s + k]), int(ends[s + k])
            spans = max_total_windows(ts[sa:sb], posts[sa:sb], terms)
            if spans:
                wins.append(
                    (
                        np.full(len(spans), int(code[sa]), dtype=np.int64),
                        np.array([x.start_us for x in spans], dtype=np.int64),
                        np.array([x.lo + sa for x in spans], dtype=np.int64),
                        np.array([x.hi + sa for x in spans], dtype=np.int64),
                        np.array([x.posts for x in spans], dtype=np.int64),
                    )
                )
        return wins

    # Chunks in two threads (NumPy's sorts and ufuncs release the GIL); windows are
    # concatenated in chunk order, i.e. by code, then start.
    wins = [part for parts in _in_threads(windows_of_chunk, bounds) for part in parts]
    totals = np.add.reduceat(posts, starts) if n else np.zeros(0, np.int64)
    if wins:
        w_code, w_start, w_lo, w_hi, w_posts = (np.concatenate(x) for x in zip(*wins, strict=True))
    else:
        w_code = w_start = w_lo = w_hi = w_posts = np.zeros(0, dtype=np.int64)
    return ExactResult(
        codes=code[starts].astype(np.int64),
        totals=np.asarray(totals, dtype=np.int64),
        accesses=(ends - starts).astype(np.int64),
        maxima=maxima,
        max_start=max_start,
        first_row=starts.astype(np.int64),
        w_code=w_code,
        w_start=w_start,
        w_lo=w_lo,
        w_hi=w_hi,
        w_posts=w_posts,
    )


_A = TypeVar("_A")
_T = TypeVar("_T")
_Windows = tuple[I64, I64, I64, I64, I64]


def _in_threads(fn: Callable[[_A], _T], items: Sequence[_A]) -> list[_T]:
    """`fn(item)` for every item, two at a time (NumPy's sorts and ufuncs, Arrow's kernels
    and SHA-256 release the GIL), results in the order given; one item runs here."""
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(fn, items))


# ------------------------------------------------------------------------------ engine


class _Session:
    """Temporary names on one DuckDB connection, dropped at the end."""

    def __init__(self, backend: ibis.BaseBackend) -> None:
        self.backend = backend
        self.con: duckdb.DuckDBPyConnection = backend.con
        self.tag = uuid.uuid4().hex[:12]
        self.views: list[str] = []
        self.registered: list[str] = []
        self.tables: list[str] = []

    def name(self, what: str) -> str:
        return f"_scraping_{what}_{self.tag}"

    def register(self, what: str, table: pa.Table) -> str:
        name = self.name(what)
        self.con.register(name, table)
        self.registered.append(name)
        return name

    def arrow(self, sql: str) -> pa.Table:
        return self.con.sql(sql).arrow().read_all()

    def batches(self, sql: str) -> pa.RecordBatchReader:
        """Stream the result (DuckDB does not hold it whole)."""
        reader: pa.RecordBatchReader = self.con.sql(sql).to_arrow_reader(1 << 20)
        return reader

    def close(self) -> None:
        for name in self.registered:
            self.con.unregister(name)
        for name in self.tables:
            self.con.sql(f"DROP TABLE IF EXISTS {name}")
        for name in self.views:
            self.backend.drop_view(name, force=True)


def _column(table: pa.Table, name: str, dtype: Any) -> Any:
    return np.asarray(table[name].to_numpy(), dtype=dtype)


def _dedup_source(session: _Session, view: str) -> str:
    """The de-duplicated accesses as a SQL relation (module doc, step 2)."""
    parts: list[npt.NDArray[np.uint64]] = []
    for batch in session.batches(f"SELECT hash(request_id) AS h FROM {view}"):
        parts.append(np.asarray(batch.column(0).to_numpy(), dtype=np.uint64))
    hashes = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    del parts
    hashes.sort()
    repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
    del hashes
    if len(repeated) == 0:
        return view
    dup = session.register("dup", pa.table({"h": pa.array(repeated, pa.uint64())}))
    keep = session.name("keep")
    session.con.sql(
        f"""CREATE TEMP TABLE {keep} AS
            SELECT request_id, ts, credential, posts FROM (
              SELECT request_id, ts, credential, posts,
                row_number() OVER (PARTITION BY request_id ORDER BY ts, credential, posts) AS rn
              FROM {view} WHERE hash(request_id) IN (SELECT h FROM {dup})
            ) WHERE rn = 1"""
    )
    session.tables.append(keep)
    return (
        f"(SELECT request_id, ts, credential, posts FROM {view} "
        f"WHERE hash(request_id) NOT IN (SELECT h FROM {dup}) "
        f"UNION ALL SELECT request_id, ts, credential, posts FROM {keep})"
    )


@dataclass(frozen=True, slots=True)
class _Layout:
    """How (low code bits, ts - t0, posts) pack into one uint64 per access: `tbits` +
    `pbits` bits, the remaining (at least 8) hold the code's low bits; the code's high
    bits pick a chunk. Not packable: negative posts or too wide a span."""

    rows: int
    t0: int
    tbits: int
    pbits: int
    packable: bool

    @classmethod
    def of(cls, spans: pa.Table) -> _Layout:
        rows = int(pc.sum(spans["n"]).as_py() or 0)
        if rows == 0:
            return cls(0, 0, 0, 0, False)
        t0 = int(pc.min(spans["lo"]).as_py())
        tbits = (int(pc.max(spans["hi"]).as_py()) - t0).bit_length()
        pmin = int(pc.min(spans["pmin"]).as_py())
        pbits = int(pc.max(spans["pmax"]).as_py()).bit_length()
        # At least 256 entities per chunk (module doc, step 3); else lexsort.
        fits = tbits + pbits <= _PACK_BITS - _MIN_CHUNK_BITS
        return cls(rows, t0, tbits, pbits, pmin >= 0 and fits)


def _fetch_sorted(
    session: _Session,
    src: str,
    creds: str,
    credential_map: CredentialMap,
    layout: _Layout,
    keep_codes: I64 | None,
) -> tuple[I64, I64, I64]:
    """(code, ts, posts) of every attributed access, sorted by (code, ts).

    Packed (module doc, step 3): each batch goes straight into uint64 keys per chunk of
    entity codes, so the three columns never coexist with the keys in memory; each chunk
    is sorted and unpacked in code order.
    """
    sql = (
        f"SELECT c.code AS code, epoch_us(s.ts) AS t, s.posts AS posts "
        f"FROM {src} s JOIN {creds} c ON s.credential = c.credential"
    )

    def decoded(batch: pa.RecordBatch) -> tuple[npt.NDArray[np.int32], I64, I64]:
        t = np.asarray(batch.column(1).to_numpy(), dtype=np.int64)
        c = np.asarray(batch.column(0).to_numpy(), dtype=np.int32)
        p = np.asarray(batch.column(2).to_numpy(), dtype=np.int64)
        if credential_map.dynamic:
            c = credential_map.codes_at(c, t)
        if keep_codes is not None:
            keep = np.isin(c, keep_codes)
            c, t, p = c[keep], t[keep], p[keep]
        return c, t, p

    if layout.packable:
        # Entities whose codes share their high bits go to one chunk; inside a chunk the
        # low code bits, the instant and the posts fill one uint64.
        shift_t = layout.pbits
        shift_c = layout.tbits + layout.pbits
        chunk_bits = _PACK_BITS - shift_c
        low_mask = (1 << chunk_bits) - 1
        parts: dict[int, list[U64]] = {}
        filled = 0
        for batch in session.batches(sql):
            c, t, p = decoded(batch)
            if len(t) == 0:
                continue
            part = (c.astype(np.uint64) & np.uint64(low_mask)) << np.uint64(shift_c)
            part |= (t - layout.t0).astype(np.uint64) << np.uint64(shift_t)
            part |= p.astype(np.uint64)
            chunk = c >> chunk_bits
            if int(chunk.min()) == int(chunk.max()):
                parts.setdefault(int(chunk[0]), []).append(part)
            else:
                order = np.argsort(chunk, kind="stable")
                chunk, part = chunk[order], part[order]
                cuts = np.flatnonzero(np.r_[True, chunk[1:] != chunk[:-1], True])
                for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
                    parts.setdefault(int(chunk[a]), []).append(part[a:b])
            filled += len(t)
        out_c = np.empty(filled, dtype=np.int64)
        out_t = np.empty(filled, dtype=np.int64)
        out_p = np.empty(filled, dtype=np.int64)
        chunk_ids = sorted(parts)
        at = np.cumsum([0] + [sum(len(x) for x in parts[c]) for c in chunk_ids]).tolist()

        def unpack(k: int) -> None:
            # Chunks sort in two threads; each writes its own slice of the output.
            chunk_id = chunk_ids[k]
            key = np.concatenate(parts[chunk_id])
            parts[chunk_id] = []
            key.sort()
            lo, hi = at[k], at[k + 1]
            out_p[lo:hi] = key & np.uint64((1 << layout.pbits) - 1)
            key >>= np.uint64(shift_t)
            out_t[lo:hi] = key & np.uint64((1 << layout.tbits) - 1)
            out_t[lo:hi] += layout.t0
            key >>= np.uint64(layout.tbits)
            out_c[lo:hi] = key
            out_c[lo:hi] += chunk_id << chunk_bits

        _in_threads(unpack, range(len(chunk_ids)))
        return out_c, out_t, out_p
    codes: list[npt.NDArray[np.int32]] = []
    times: list[I64] = []
    posts: list[I64] = []
    for batch in session.batches(sql):
        c, t, p = decoded(batch)
        codes.append(c)
        times.append(t)
        posts.append(p)
    if not times:
        z = np.zeros(0, dtype=np.int64)
        return z, z.copy(), z.copy()
    return sort_accesses(np.concatenate(codes), np.concatenate(times), np.concatenate(posts))


def _evidence(
    session: _Session,
    src: str,
    credential_map: CredentialMap,
    res: ExactResult,
    terms: Terms,
) -> tuple[list[str], list[tuple[str, ...]], I64]:
    """Digest, sorted credentials and access count of every billed window (step 5)."""
    nw = len(res.w_code)
    digests: list[str] = [""] * nw
    credentials: list[tuple[str, ...]] = [()] * nw
    accesses = (res.w_hi - res.w_lo).astype(np.int64)
    if nw == 0:
        return digests, credentials, accesses
    w = terms.window_us
    billed = np.zeros(len(credential_map.names), dtype=bool)
    billed[res.w_code] = True
    dyn = credential_map.code < 0
    static_ok = np.zeros(len(credential_map.code), dtype=bool)
    static_ok[~dyn] = billed[credential_map.code[~dyn]]
    relevant = np.flatnonzero(static_ok | dyn)
    # Credential strings are never fetched: the join returns each access's credential
    # index; each distinct credential is escaped and put between its TABs once.
    tab_text = tabbed(escaped_binary(credential_map.credentials))
    table = session.register(
        "evcreds",
        pa.table(
            {
                "credential": credential_map.credentials.take(pa.array(relevant)),
                "code": pa.array(credential_map.code[relevant], pa.int32()),
                "cidx": pa.array(relevant.astype(np.int32), pa.int32()),
            }
        ),
    )
    wins = session.register(
        "wins",
        pa.table(
            {
                "win": pa.array(np.arange(nw, dtype=np.int64)),
                "code": pa.array(res.w_code.astype(np.int32), pa.int32()),
                "start": pa.array(res.w_start),
                "stop": pa.array(res.w_start + w),
            }
        ),
    )
    attributed = (
        f"SELECT c.code AS code, epoch_us(s.ts) AS t, s.request_id AS request_id, "
        f"c.cidx AS cidx, s.posts AS posts "
        f"FROM {src} s JOIN {table} c ON s.credential = c.credential"
    )
    if credential_map.dynamic:
        segs = session.register("segs", _segments_table(credential_map))
        attributed = (
            f"WITH a AS ({attributed}) "
            f"SELECT code, t, request_id, cidx, posts FROM a WHERE code >= 0 UNION ALL "
            f"SELECT g.code, a.t, a.request_id, a.cidx, a.posts FROM a JOIN {segs} g "
            f"ON a.code = g.dcode AND a.t >= g.lo AND a.t < g.hi WHERE a.code < 0"
        )
    # One scan: each access joins the window of its entity that holds it (windows are
    # disjoint); accesses outside every window are dropped by the engine.
    # Streamed into preallocated arrays (the windows' access counts are known), so the
    # Arrow batches and the NumPy columns never coexist whole.
    total = int(accesses.sum())
    all_win = np.empty(total, dtype=np.int64)
    all_rel = np.empty(total, dtype=np.int64)
    all_cidx = np.empty(total, dtype=np.int32)
    all_posts = np.empty(total, dtype=np.int64)
    rid_column = _StringColumn(total)
    filled = 0
    for batch in session.batches(
        f"SELECT w.win AS win, b.t - w.start AS rel, b.request_id AS request_id, "
        f"b.cidx AS cidx, b.posts AS posts FROM ({attributed}) b JOIN {wins} w "
        f"ON b.code = w.code AND b.t >= w.start AND b.t < w.stop"
    ):
        n = batch.num_rows
        if filled + n > total:  # cannot happen: every access is in one window
            raise RuntimeError("evidence fetch returned more accesses than the windows hold")
        all_win[filled : filled + n] = batch.column(0).to_numpy()
        all_rel[filled : filled + n] = batch.column(1).to_numpy()
        all_cidx[filled : filled + n] = batch.column(3).to_numpy()
        all_posts[filled : filled + n] = batch.column(4).to_numpy()
        rid_column.append(batch.column(2))
        filled += n
    all_win, all_rel = all_win[:filled], all_rel[:filled]
    all_cidx, all_posts = all_cidx[:filled], all_posts[:filled]
    all_rid = rid_column.array()
    del rid_column
    # Groups of consecutive windows, processed one by one (bounds the sort and the line
    # buffer): at most _EVIDENCE_ROWS accesses, and few enough windows and rows that
    # (window in group, instant in window, row in group) pack into one uint64.
    rel_bits = (w - 1).bit_length()
    group_of = np.zeros(nw, dtype=np.int64)
    rows_in = wins_in = g = 0
    for k, n in enumerate(accesses.tolist()):
        if wins_in and (
            rows_in + n > _EVIDENCE_ROWS
            or wins_in.bit_length() + (rows_in + n - 1).bit_length() + rel_bits > _PACK_BITS
        ):
            g += 1
            rows_in = wins_in = 0
        group_of[k] = g
        rows_in += n
        wins_in += 1
    group_first = np.flatnonzero(np.r_[True, group_of[1:] != group_of[:-1]])
    group_stop = np.r_[group_first[1:], nw]
    by_group, group_end = _partition(group_of[all_win], g + 1)
    # Request ids of one byte length (the usual case) are taken by NumPy as fixed-width
    # items; escaping is checked once on all of them.
    rid_items = fixed_width(all_rid) if not needs_escape(all_rid) else None

    def write_group(gi: int) -> None:
        picked = by_group[(group_end[gi - 1] if gi else 0) : group_end[gi]]
        if len(picked) == 0:
            return
        first = int(group_first[gi])
        ws = res.w_start[first : group_stop[gi]]
        win, rel, order = _window_order(all_win[picked] - first, all_rel[picked], rel_bits)
        rows = picked[order]
        same = np.flatnonzero((win[1:] == win[:-1]) & (rel[1:] == rel[:-1]))
        if len(same):
            rows = _tie_break(rows, same, all_rid)
        cidx = all_cidx[rows]
        # The group's credentials as a small table (cache-resident takes).
        used = np.flatnonzero(np.bincount(cidx, minlength=len(credential_map.credentials)))
        local = np.empty(len(credential_map.credentials), dtype=np.int64)
        local[used] = np.arange(len(used), dtype=np.int64)
        if rid_items is not None:
            rid = fixed_rows(rid_items[rows])
        else:
            rid = escaped_binary(all_rid.take(pa.array(rows)))
        lines = canonical_lines_columns(
            ws[win] + rel,
            rid,
            tab_text.take(pa.array(used)).take(pa.array(local[cidx])),
            all_posts[rows],
        )
        bounds = np.flatnonzero(np.r_[True, win[1:] != win[:-1], True])
        ranges = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
        for (lo, _hi), d in zip(ranges, digests_of_ranges(lines, ranges), strict=True):
            digests[first + int(win[lo])] = d
            accesses[first + int(win[lo])] = _hi - lo
        del lines
        # Credentials per window: distinct (window, credential) pairs, by credential text.
        used_text = credential_map.credentials.take(pa.array(used))
        by_text = np.asarray(pc.sort_indices(used_text).to_numpy(), dtype=np.int64)
        text_rank = np.empty(len(used), dtype=np.int64)
        text_rank[by_text] = np.arange(len(used), dtype=np.int64)
        pairs = np.unique(win.astype(np.int64) * len(used) + text_rank[local[cidx]])
        pw, pr = np.divmod(pairs, len(used))
        sorted_text = used_text.take(pa.array(by_text)).to_pylist()
        runs = np.flatnonzero(np.r_[True, pw[1:] != pw[:-1], True])
        pr_list = pr.tolist()
        pw_list = pw.tolist()
        for a, b in zip(runs[:-1].tolist(), runs[1:].tolist(), strict=True):
            credentials[first + pw_list[a]] = tuple(sorted_text[r] for r in pr_list[a:b])

    _in_threads(write_group, range(g + 1))  # groups two at a time
    return digests, credentials, accesses


class _StringColumn:
    """Strings appended batch by batch to NumPy buffers (bytes, 64-bit offsets) and read
    back as one Arrow array without a copy: a list of chunks concatenated at the end
    would hold every value twice (2.4 to 3.2 GB more peak memory for the evidence at 100M)."""

    def __init__(self, rows: int) -> None:
        self._off = np.zeros(rows + 1, dtype=np.int64)
        self._bytes = np.empty(0, dtype=np.uint8)
        self._rows = 0

    def append(self, values: pa.Array) -> None:
        off, data = binary_parts(values)
        n = len(off) - 1
        if self._rows + n > len(self._off) - 1:
            raise ValueError("more strings than the rows announced")
        at = int(self._off[self._rows])
        end = at + len(data)
        if end > len(self._bytes):
            # Sized for every announced row from the bytes per row so far: one allocation
            # when the strings have one length (request ids usually do).
            grown = np.empty(max(end, end * (len(self._off) - 1) // (self._rows + n)), np.uint8)
            grown[:at] = self._bytes[:at]
            self._bytes = grown
        self._bytes[at:end] = np.frombuffer(data, dtype=np.uint8)
        self._off[self._rows + 1 : self._rows + n + 1] = off[1:] + at
        self._rows += n

    def array(self) -> pa.Array:
        size = int(self._off[self._rows])
        return pa.LargeStringArray.from_buffers(
            self._rows, pa.py_buffer(self._off[: self._rows + 1]), pa.py_buffer(self._bytes[:size])
        )


def _segments_table(credential_map: CredentialMap) -> pa.Table:
    """Dynamic credentials' segments as `[lo, hi) -> code` rows keyed by the credential's
    placeholder code `-(d + 1)` (the last segment of each is open-ended)."""
    d = credential_map.seg_dyn
    last = np.r_[d[1:] != d[:-1], True]
    hi = np.r_[credential_map.seg_from[1:], 0]
    hi[last] = np.iinfo(np.int64).max
    return pa.table(
        {
            "dcode": pa.array((-(d + 1)).astype(np.int32), pa.int32()),
            "lo": pa.array(credential_map.seg_from),
            "hi": pa.array(hi),
            "code": pa.array(credential_map.seg_code.astype(np.int32), pa.int32()),
        }
    )


def _partition(group: I64, groups: int) -> tuple[I64, I64]:
    """Row indices ordered by group, ascending within each group, and the end of each
    group's run: one sort of packed (group, row) keys (NumPy has no fast stable argsort
    for wide keys), or nothing to do for one group."""
    n = len(group)
    ends = np.cumsum(np.bincount(group, minlength=groups)).astype(np.int64)
    if groups <= 1:
        return np.arange(n, dtype=np.int64), ends
    row_bits = max(n - 1, 1).bit_length()
    if (groups - 1).bit_length() + row_bits > _PACK_BITS:
        return np.argsort(group, kind="stable").astype(np.int64), ends
    key = group.astype(np.uint64) << np.uint64(row_bits)
    key |= np.arange(n, dtype=np.uint64)
    key.sort()
    key &= np.uint64((1 << row_bits) - 1)
    return key.view(np.int64), ends


def _window_order(win: I64, rel: I64, rel_bits: int) -> tuple[I64, I64, I64]:
    """(window, instant) sorted, and the order that sorts them: one sort of packed
    (window, instant, position) keys when they fit in 64 bits, else a lexsort."""
    n = len(win)
    pos_bits = max(n - 1, 1).bit_length()
    win_bits = max(int(win.max()), 1).bit_length()
    if win_bits + rel_bits + pos_bits > _PACK_BITS:
        order = np.lexsort((rel, win))
        return win[order], rel[order], order
    key = win.astype(np.uint64) << np.uint64(rel_bits + pos_bits)
    key |= rel.astype(np.uint64) << np.uint64(pos_bits)
    key |= np.arange(n, dtype=np.uint64)
    key.sort()
    order = (key & np.uint64((1 << pos_bits) - 1)).astype(np.int64)
    key >>= np.uint64(pos_bits)
    rel = (key & np.uint64((1 << rel_bits) - 1)).astype(np.int64)
    key >>= np.uint64(rel_bits)
    return key.astype(np.int64), rel, order


def _tie_break(rows: I64, same: I64, request_id: pa.Array) -> I64:
    """Reorder runs of equal (window, ts) by request_id (byte order); `same[k]` marks that
    positions same[k] and same[k] + 1 are tied."""
    starts = np.r_[True, np.diff(same) != 1]
    first = same[starts]
    last_idx = np.r_[np.flatnonzero(starts)[1:], len(same)] - 1
    last = same[last_idx] + 1
    lengths = last - first + 1
    run_id = np.repeat(np.arange(len(first)), lengths)
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    members = first[run_id] + within
    ids = pc.take(request_id, pa.array(rows[members]))
    small = pa.table({"run": pa.array(run_id), "rid": ids.cast(pa.binary())})
    order = np.asarray(
        pc.sort_indices(small, sort_keys=[("run", "ascending"), ("rid", "ascending")]).to_numpy(),
        dtype=np.int64,
    )
    out = rows.copy()
    out[members] = rows[members[order]]
    return out


def _fetch_entity_events(
    session: _Session, src: str, creds: str, credential_map: CredentialMap, names: Sequence[str]
) -> dict[str, pa.Table]:
    """Every access of the named entities (for evidence packs), with `ts_us`."""
    fetched = session.arrow(
        f"SELECT c.code AS code, s.request_id AS request_id, s.ts AS ts, "
        f"s.credential AS credential, s.posts AS posts, epoch_us(s.ts) AS ts_us "
        f"FROM {src} s JOIN {creds} c ON s.credential = c.credential"
    )
    ts = _column(fetched, "ts_us", np.int64)
    code = credential_map.codes_at(_column(fetched, "code", np.int32), ts)
    out: dict[str, pa.Table] = {}
    lookup = {n: i for i, n in enumerate(credential_map.names.to_pylist())}
    for name in names:
        c = lookup.get(name)
        if c is None:
            continue
        rows = np.flatnonzero(code == c)
        if len(rows) == 0:
            continue
        part = fetched.take(pa.array(rows)).drop_columns(["code"])
        out[name] = part.add_column(0, "entity", pa.array([name] * len(rows), pa.string()))
    return out


def assess_columnar(
    backend: ibis.BaseBackend,
    events: ir.Table,
    owners: Owners,
    terms: Terms,
    *,
    mode: str,
    policy_version: str,
    sparklines: int,
    only: Sequence[str] | None,
    step: Callable[[str], None],
) -> Assessment:
    """The assessment on DuckDB by the columnar path (module doc)."""
    session = _Session(backend)
    view = session.name("events")
    backend.create_view(
        view, events.select("request_id", "ts", "credential", "posts"), overwrite=True
    )
    session.views.append(view)
    try:
        return _assess(session, view, owners, terms, mode, policy_version, sparklines, only, step)
    finally:
        session.close()


def _assess(
    session: _Session,
    view: str,
    owners: Owners,
    terms: Terms,
    mode: str,
    policy_version: str,
    sparklines: int,
    only: Sequence[str] | None,
    step: Callable[[str], None],
) -> Assessment:
    step("attributing accesses")
    spans = session.arrow(
        f"SELECT credential, min(epoch_us(ts)) AS lo, max(epoch_us(ts)) AS hi, "
        f"count(*) AS n, min(posts) AS pmin, max(posts) AS pmax "
        f"FROM {view} GROUP BY credential"
    )
    credential_map = resolve_credentials(
        spans["credential"].combine_chunks(),
        _column(spans, "lo", np.int64),
        _column(spans, "hi", np.int64),
        owners,
    )
    layout = _Layout.of(spans)
    del spans
    keep_codes: I64 | None = None
    if only is not None:
        wanted = pc.is_in(credential_map.names, value_set=pa.array(list(only), pa.string()))
        keep_codes = np.flatnonzero(np.asarray(wanted.to_numpy(zero_copy_only=False), dtype=bool))
    creds = session.register(
        "creds",
        pa.table(
            {
                "credential": credential_map.credentials,
                "code": pa.array(credential_map.code, pa.int32()),
            }
        ),
    )
    src = _dedup_source(session, view)
    step("exact pass")
    code, ts, posts = _fetch_sorted(session, src, creds, credential_map, layout, keep_codes)
    res = exact_pass(code, ts, posts, terms, mode)
    # Console series: the top entities by maximum, hourly, over the span of the entities
    # the billing looked at (over-line and top ones), as the Ibis path does.
    series: dict[str, list[int]] = {}
    series_from: datetime | None = None
    maxima = res.maxima
    if len(maxima):
        over = np.flatnonzero(maxima > terms.threshold)
        top = np.argsort(-maxima, kind="stable")[:sparklines]
        looked = np.union1d(over, top)
        if len(looked):
            ends = res.first_row + res.accesses
            hour = 3_600_000_000
            t_min = int(ts[res.first_row[looked]].min())
            t_max = int(ts[ends[looked] - 1].max())
            t_from = t_min // hour * hour + hour
            t_to = (t_max // hour + 1) * hour + terms.window_us
            series_from = from_us(t_from)
            top_names = dict(
                zip(
                    top.tolist(),
                    credential_map.names.take(pa.array(res.codes[top])).to_pylist(),
                    strict=True,
                )
            )
            for k in top.tolist():
                a, b = int(res.first_row[k]), int(ends[k])
                series[top_names[k]] = rolling_series(
                    ts[a:b], posts[a:b], terms.window_us, t_from, t_to
                )
    del code, ts, posts  # the evidence fetch needs the memory
    step("billing")
    digests, window_creds, window_accesses = _evidence(session, src, credential_map, res, terms)
    names = credential_map.names
    entity_names = names.take(pa.array(res.codes)).to_pylist()
    # Windows per entity, in start order (they come sorted by code, then start).
    order = np.lexsort((res.w_start, res.w_code))
    w_code = res.w_code[order].tolist()
    w_start = res.w_start[order].tolist()
    w_posts = res.w_posts[order].tolist()
    w_acc = window_accesses[order].tolist()
    w_idx = order.tolist()
    name_of = dict(zip(res.codes.tolist(), entity_names, strict=True))
    per_entity: dict[str, list[BilledWindow]] = {}
    for k, c in enumerate(w_code):
        s = w_start[k]
        per_entity.setdefault(name_of[c], []).append(
            BilledWindow(
                start=from_us(s),
                end=from_us(s + terms.window_us),
                posts=int(w_posts[k]),
                amount=window_amount(int(w_posts[k]), terms),
                credentials=window_creds[w_idx[k]],
                evidence_sha256=digests[w_idx[k]],
                accesses=int(w_acc[k]),
            )
        )
    events_kept: dict[str, pa.Table] = {}
    if only is not None:
        events_kept = _fetch_entity_events(session, src, creds, credential_map, list(only))
    return assemble_assessment(
        policy_version=policy_version,
        terms=terms,
        mode=mode,
        engine="duckdb",
        method="numpy",
        entities=entity_names,
        posts_total=res.totals.tolist(),
        accesses=res.accesses.tolist(),
        max_posts=res.maxima.tolist(),
        max_start_us=res.max_start.tolist(),
        windows=per_entity,
        sparklines=series,
        sparkline_from=series_from,
        events=events_kept,
    )
