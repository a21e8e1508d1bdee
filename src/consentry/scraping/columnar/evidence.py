"""Step 5 of the columnar path: evidence lines and digests per billed window (package doc)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from consentry.binary import binary_parts, fixed_rows, fixed_width
from consentry.scraping.canonical import (
    canonical_lines_columns,
    digests_of_ranges,
    escaped_binary,
    needs_escape,
    tabbed,
)
from consentry.scraping.rules import I64, Terms

if TYPE_CHECKING:
    pass

from consentry.scraping.columnar import tuning
from consentry.scraping.columnar.credentials import (
    CredentialMap,
    segments_table,
)
from consentry.scraping.columnar.exact import (
    ExactResult,
    in_threads,
)
from consentry.scraping.columnar.session import (
    Session,
)


def window_evidence(
    session: Session,
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
        segs = session.register("segs", segments_table(credential_map))
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
    rid_column = StringColumn(total)
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
    # buffer): at most tuning.EVIDENCE_ROWS accesses, and few enough windows and rows that
    # (window in group, instant in window, row in group) pack into one uint64.
    rel_bits = (w - 1).bit_length()
    group_of = np.zeros(nw, dtype=np.int64)
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

    in_threads(write_group, range(g + 1))  # groups two at a time
    return digests, credentials, accesses


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
    row_bits = max(n - 1, 1).bit_length()
    if (groups - 1).bit_length() + row_bits > tuning.PACK_BITS:
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
    if win_bits + rel_bits + pos_bits > tuning.PACK_BITS:
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
