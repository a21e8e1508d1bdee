"""Step 5 of the columnar path: evidence lines and digests per billed window (package doc)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consentry.binary import binary_parts, fixed_rows, fixed_width
from consentry.scraping.arrays import BitLayout, run_bounds
from consentry.scraping.canonical import (
    canonical_lines_columns,
    digests_of_ranges,
    escaped_binary,
    needs_escape,
    tabbed,
)
from consentry.scraping.columnar import tuning
from consentry.scraping.columnar.credentials import CredentialMap, segments_table
from consentry.scraping.columnar.exact import ExactResult, in_threads
from consentry.scraping.columnar.session import Session
from consentry.scraping.rules import I64, Terms


def window_evidence(
    session: Session,
    src: str,
    credential_map: CredentialMap,
    res: ExactResult,
    terms: Terms,
) -> tuple[list[str], list[tuple[str, ...]], I64]:
    """Digest, sorted credentials and access count of every billed window (step 5).

    1. One scan in the engine gives every access inside a billed window, with its window
       (`_evidence_sql`), streamed into preallocated arrays (`_fetch`).
    2. Consecutive windows form groups (`_window_groups`), and one sort partitions the
       accesses by group (`_partition`).
    3. Per group, two at a time (`_Groups.write`): the canonical order, the lines, one
       digest and the access count of each window, and each window's credentials.
    """
    nw = len(res.w_code)
    accesses = (res.w_hi - res.w_lo).astype(np.int64)
    if nw == 0:
        return [], [], accesses
    sql = _evidence_sql(session, src, credential_map, res, terms)
    rows = _fetch(session, sql, int(accesses.sum()))
    rel_bits = (terms.window_us - 1).bit_length()
    group_of = _window_groups(accesses, rel_bits)
    groups = _Groups.of(rows, group_of, res, credential_map, rel_bits, accesses)
    in_threads(groups.write, range(groups.count))
    return groups.digests, groups.credentials, accesses


def _evidence_sql(
    session: Session, src: str, credential_map: CredentialMap, res: ExactResult, terms: Terms
) -> str:
    """The SQL of (window, instant - window start, request_id, credential index, posts) of
    every access inside a billed window. Only the credentials that can reach a billed
    entity (static ones of billed entities, and every dynamic one) join; credential
    strings are never fetched, only their index."""
    billed = np.zeros(len(credential_map.names), dtype=bool)
    billed[res.w_code] = True
    dyn = credential_map.code < 0
    static_ok = np.zeros(len(credential_map.code), dtype=bool)
    static_ok[~dyn] = billed[credential_map.code[~dyn]]
    relevant = np.flatnonzero(static_ok | dyn)
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
                "win": pa.array(np.arange(len(res.w_code), dtype=np.int64)),
                "code": pa.array(res.w_code.astype(np.int32), pa.int32()),
                "start": pa.array(res.w_start),
                "stop": pa.array(res.w_start + terms.window_us),
            }
        ),
    )
    attributed = (
        f"SELECT c.code AS code, epoch_us(s.ts) AS t, s.request_id AS request_id, "
        f"c.cidx AS cidx, s.posts AS posts "
        f"FROM {src} s JOIN {table} c ON s.credential = c.credential"
    )
    if credential_map.dynamic:
        segs = session.register("segs", segments_table(credential_map))
        attributed = (
            f"WITH a AS ({attributed}) "
            f"SELECT code, t, request_id, cidx, posts FROM a WHERE code >= 0 UNION ALL "
            f"SELECT g.code, a.t, a.request_id, a.cidx, a.posts FROM a JOIN {segs} g "
            f"ON a.code = g.dcode AND a.t >= g.lo AND a.t < g.hi WHERE a.code < 0"
        )
    # Each access joins the window of its entity that holds it (windows are disjoint);
    # accesses outside every window are dropped by the engine.
    return (
        f"SELECT w.win AS win, b.t - w.start AS rel, b.request_id AS request_id, "
        f"b.cidx AS cidx, b.posts AS posts FROM ({attributed}) b JOIN {wins} w "
        f"ON b.code = w.code AND b.t >= w.start AND b.t < w.stop"
    )


@dataclass(frozen=True, slots=True)
class _Rows:
    """The accesses inside billed windows, in fetch order: window index, instant minus the
    window's start, credential index, posts and request_id."""

    win: I64
    rel: I64
    cidx: npt.NDArray[np.int32]
    posts: I64
    rid: pa.Array


def _fetch(session: Session, sql: str, total: int) -> _Rows:
    """The rows of `sql` (`_evidence_sql`), at most `total` (the windows' access counts),
    streamed into preallocated arrays so that the Arrow batches and the NumPy columns
    never coexist whole."""
    win = np.empty(total, dtype=np.int64)
    rel = np.empty(total, dtype=np.int64)
    cidx = np.empty(total, dtype=np.int32)
    posts = np.empty(total, dtype=np.int64)
    rid_column = StringColumn(total)
    filled = 0
    for batch in session.batches(sql):
        n = batch.num_rows
        if filled + n > total:  # cannot happen: every access is in one window
            raise RuntimeError("evidence fetch returned more accesses than the windows hold")
        win[filled : filled + n] = batch.column(0).to_numpy()
        rel[filled : filled + n] = batch.column(1).to_numpy()
        cidx[filled : filled + n] = batch.column(3).to_numpy()
        posts[filled : filled + n] = batch.column(4).to_numpy()
        rid_column.append(batch.column(2))
        filled += n
    return _Rows(win[:filled], rel[:filled], cidx[:filled], posts[:filled], rid_column.array())


def _window_groups(accesses: I64, rel_bits: int) -> I64:
    """The group of each window: consecutive windows, a new group when the next window
    would bring the group over `tuning.EVIDENCE_ROWS` accesses, or its (window in group,
    instant in window, row in group) past one packed uint64 key (`_window_order`)."""
    group_of = np.zeros(len(accesses), dtype=np.int64)
    rows_in = wins_in = g = 0
    for k, n in enumerate(accesses.tolist()):
        if wins_in and (
            rows_in + n > tuning.EVIDENCE_ROWS
            or wins_in.bit_length() + (rows_in + n - 1).bit_length() + rel_bits > tuning.PACK_BITS
        ):
            g += 1
            rows_in = wins_in = 0
        group_of[k] = g
        rows_in += n
        wins_in += 1
    return group_of


@dataclass(frozen=True, slots=True)
class _Groups:
    """Step 3's inputs, and its outputs per window (each group writes its own windows')."""

    rows: _Rows
    w_start: I64
    bounds: I64
    """Group g holds windows bounds[g] to bounds[g + 1] - 1."""
    by_group: I64
    group_end: I64
    """Rows by group (`_partition`): group g's are by_group[group_end[g - 1]:group_end[g]]."""
    rel_bits: int
    credential_text: pa.Array
    tab_text: pa.Array
    """Each credential escaped and between its TABs (once per distinct credential)."""
    rid_items: npt.NDArray[Any] | None
    """Request ids as fixed-width NumPy items, when all have one byte length and none
    needs escaping (the usual case: checked once on all of them)."""
    digests: list[str]
    credentials: list[tuple[str, ...]]
    accesses: I64
    """Each window's access count, as counted from the rows fetched (written per group)."""

    @classmethod
    def of(
        cls,
        rows: _Rows,
        group_of: I64,
        res: ExactResult,
        credential_map: CredentialMap,
        rel_bits: int,
        accesses: I64,
    ) -> _Groups:
        bounds = run_bounds(group_of)
        by_group, group_end = _partition(group_of[rows.win], len(bounds) - 1)
        nw = len(group_of)
        return cls(
            rows=rows,
            w_start=res.w_start,
            bounds=bounds,
            by_group=by_group,
            group_end=group_end,
            rel_bits=rel_bits,
            credential_text=credential_map.credentials,
            tab_text=tabbed(escaped_binary(credential_map.credentials)),
            rid_items=fixed_width(rows.rid) if not needs_escape(rows.rid) else None,
            digests=[""] * nw,
            credentials=[()] * nw,
            accesses=accesses,
        )

    @property
    def count(self) -> int:
        return len(self.bounds) - 1

    def write(self, gi: int) -> None:
        """Group `gi`: its rows in canonical order (window, instant, then request_id), then
        each window's digest, access count and credentials."""
        picked = self.by_group[(self.group_end[gi - 1] if gi else 0) : self.group_end[gi]]
        if len(picked) == 0:
            return
        first = int(self.bounds[gi])
        win, rel, order = _window_order(
            self.rows.win[picked] - first, self.rows.rel[picked], self.rel_bits
        )
        rows = picked[order]
        same = np.flatnonzero((win[1:] == win[:-1]) & (rel[1:] == rel[:-1]))
        if len(same):
            rows = _tie_break(rows, same, self.rows.rid)
        cidx = self.rows.cidx[rows]
        # The group's credentials as a small table (cache-resident takes).
        used = np.flatnonzero(np.bincount(cidx, minlength=len(self.credential_text)))
        local = np.empty(len(self.credential_text), dtype=np.int64)
        local[used] = np.arange(len(used), dtype=np.int64)
        self._digests(gi, win, rel, rows, self.tab_text.take(pa.array(used)), local, cidx)
        self._credentials(first, win, self.credential_text.take(pa.array(used)), local[cidx])

    def _digests(
        self,
        gi: int,
        win: I64,
        rel: I64,
        rows: I64,
        used_tabbed: pa.Array,
        local: I64,
        cidx: npt.NDArray[np.int32],
    ) -> None:
        """The lines of group `gi` (rows in canonical order; `used_tabbed[local[c]]` is
        credential c between its TABs), and each window's digest of its contiguous slice
        and its access count."""
        first = int(self.bounds[gi])
        ws = self.w_start[first : self.bounds[gi + 1]]
        if self.rid_items is not None:
            rid = fixed_rows(self.rid_items[rows])
        else:
            rid = escaped_binary(self.rows.rid.take(pa.array(rows)))
        lines = canonical_lines_columns(
            ws[win] + rel,
            rid,
            used_tabbed.take(pa.array(local[cidx])),
            self.rows.posts[rows],
        )
        bounds = run_bounds(win)
        ranges = list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))
        for (lo, hi), digest in zip(ranges, digests_of_ranges(lines, ranges), strict=True):
            self.digests[first + int(win[lo])] = digest
            self.accesses[first + int(win[lo])] = hi - lo

    def _credentials(self, first: int, win: I64, used_text: pa.Array, local_cidx: I64) -> None:
        """Each window's distinct credentials sorted by text: distinct (window, rank of the
        credential's text among the group's) pairs."""
        used = len(used_text)
        by_text = np.asarray(pc.sort_indices(used_text).to_numpy(), dtype=np.int64)
        text_rank = np.empty(used, dtype=np.int64)
        text_rank[by_text] = np.arange(used, dtype=np.int64)
        pairs = np.unique(win * used + text_rank[local_cidx])
        pw, pr = np.divmod(pairs, used)
        sorted_text = used_text.take(pa.array(by_text)).to_pylist()
        runs = run_bounds(pw)
        pr_list = pr.tolist()
        pw_list = pw.tolist()
        for a, b in zip(runs[:-1].tolist(), runs[1:].tolist(), strict=True):
            self.credentials[first + pw_list[a]] = tuple(sorted_text[r] for r in pr_list[a:b])


class StringColumn:
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


def _partition(group: I64, groups: int) -> tuple[I64, I64]:
    """Row indices ordered by group, ascending within each group, and the end of each
    group's run: one sort of packed (group, row) keys (NumPy has no fast stable argsort
    for wide keys), or nothing to do for one group."""
    n = len(group)
    ends = np.cumsum(np.bincount(group, minlength=groups)).astype(np.int64)
    if groups <= 1:
        return np.arange(n, dtype=np.int64), ends
    layout = BitLayout.fitting(
        (groups - 1).bit_length(), max(n - 1, 1).bit_length(), bits=tuning.PACK_BITS
    )
    if layout is None:
        return np.argsort(group, kind="stable").astype(np.int64), ends
    key = layout.pack(group, np.arange(n, dtype=np.uint64))
    key.sort()
    return layout.field(key, 1, out=key), ends


def _window_order(win: I64, rel: I64, rel_bits: int) -> tuple[I64, I64, I64]:
    """(window, instant) sorted, and the order that sorts them: one sort of packed
    (window, instant, position) keys when they fit in 64 bits, else a lexsort."""
    n = len(win)
    layout = BitLayout.fitting(
        max(int(win.max()), 1).bit_length(),
        rel_bits,
        max(n - 1, 1).bit_length(),
        bits=tuning.PACK_BITS,
    )
    if layout is None:
        order = np.lexsort((rel, win))
        return win[order], rel[order], order
    key = layout.pack(win, rel, np.arange(n, dtype=np.uint64))
    key.sort()
    win, rel, order = layout.unpack(key)
    return win, rel, order


def _tie_break(rows: I64, same: I64, request_id: pa.Array) -> I64:
    """Reorder runs of equal (window, ts) by request_id (byte order); `same[k]` marks that
    positions same[k] and same[k] + 1 are tied."""
    # Runs of consecutive positions in `same` are runs of one value of same[k] - k.
    bounds = run_bounds(same - np.arange(len(same), dtype=np.int64))
    first = same[bounds[:-1]]
    last = same[bounds[1:] - 1] + 1
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
