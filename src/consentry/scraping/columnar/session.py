"""The columnar path's DuckDB session: temporary views, streamed fetches, duplicates (step 2)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consentry.scraping.arrays import U64, BitLayout, run_bounds
from consentry.scraping.columnar import tuning
from consentry.scraping.columnar.credentials import CredentialMap
from consentry.scraping.columnar.exact import in_threads, sort_accesses
from consentry.scraping.rules import I64

if TYPE_CHECKING:
    from collections.abc import Iterable

    import duckdb
    import ibis

_Columns = tuple[npt.NDArray[np.int32], I64, I64]
"""(entity code, instant, posts) of some accesses."""


class Session:
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


def column(table: pa.Table, name: str, dtype: Any) -> Any:
    return np.asarray(table[name].to_numpy(), dtype=dtype)


def dedup_source(session: Session, view: str) -> str:
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
class Layout:
    """How (low code bits, ts - t0, posts) pack into one uint64 per access: `tbits` +
    `pbits` bits, the remaining (at least 8) hold the code's low bits; the code's high
    bits pick a chunk. Not packable: negative posts or too wide a span."""

    rows: int
    t0: int
    tbits: int
    pbits: int
    packable: bool

    @classmethod
    def of(cls, spans: pa.Table) -> Layout:
        rows = int(pc.sum(spans["n"]).as_py() or 0)
        if rows == 0:
            return cls(0, 0, 0, 0, False)
        t0 = int(pc.min(spans["lo"]).as_py())
        tbits = (int(pc.max(spans["hi"]).as_py()) - t0).bit_length()
        pmin = int(pc.min(spans["pmin"]).as_py())
        pbits = int(pc.max(spans["pmax"]).as_py()).bit_length()
        # At least 256 entities per chunk (module doc, step 3); else lexsort.
        fits = tbits + pbits <= tuning.PACK_BITS - tuning.MIN_CHUNK_BITS
        return cls(rows, t0, tbits, pbits, pmin >= 0 and fits)

    def key_layout(self) -> BitLayout:
        """The key's fields: low code bits, instant - t0, posts. Entity codes are int32, so
        at most 31 bits of code are ever set (a wider field would hold only zeros)."""
        code_bits = min(tuning.PACK_BITS - self.tbits - self.pbits, 31)
        return BitLayout((code_bits, self.tbits, self.pbits))


def fetch_sorted(
    session: Session,
    src: str,
    creds: str,
    credential_map: CredentialMap,
    layout: Layout,
    keep_codes: I64 | None,
) -> tuple[I64, I64, I64]:
    """(code, ts, posts) of every attributed access, sorted by (code, ts).

    1. One streamed scan gives each access's credential code, instant and posts; each
       batch's codes become entity codes, only the kept ones (`_entity_columns`).
    2. Packable (module doc, step 3): each batch goes straight into uint64 keys per chunk
       of entity codes (`_packed_chunks`), so the three columns never coexist with the
       keys in memory; each chunk is sorted and unpacked in code order (`_unpacked`).
    3. Else the columns are gathered and sorted by `sort_accesses`.
    """
    sql = (
        f"SELECT c.code AS code, epoch_us(s.ts) AS t, s.posts AS posts "
        f"FROM {src} s JOIN {creds} c ON s.credential = c.credential"
    )
    batches = (_entity_columns(batch, credential_map, keep_codes) for batch in session.batches(sql))
    if layout.packable:
        return _unpacked(_packed_chunks(batches, layout), layout)
    codes: list[npt.NDArray[np.int32]] = []
    times: list[I64] = []
    posts: list[I64] = []
    for c, t, p in batches:
        codes.append(c)
        times.append(t)
        posts.append(p)
    if not times:
        z = np.zeros(0, dtype=np.int64)
        return z, z.copy(), z.copy()
    return sort_accesses(np.concatenate(codes), np.concatenate(times), np.concatenate(posts))


def _entity_columns(
    batch: pa.RecordBatch, credential_map: CredentialMap, keep_codes: I64 | None
) -> _Columns:
    """A batch of (credential code, instant, posts) as (entity code, instant, posts) of
    the accesses kept (all, or those of `keep_codes`)."""
    t = np.asarray(batch.column(1).to_numpy(), dtype=np.int64)
    c = np.asarray(batch.column(0).to_numpy(), dtype=np.int32)
    p = np.asarray(batch.column(2).to_numpy(), dtype=np.int64)
    if credential_map.dynamic:
        c = credential_map.codes_at(c, t)
    if keep_codes is not None:
        keep = np.isin(c, keep_codes)
        c, t, p = c[keep], t[keep], p[keep]
    return c, t, p


def _packed_chunks(batches: Iterable[_Columns], layout: Layout) -> dict[int, list[U64]]:
    """Every access's key (`Layout.key_layout`) by chunk, in arrival order: entities whose codes
    share their high bits go to one chunk."""
    keys = layout.key_layout()
    code_bits = keys.widths[0]
    parts: dict[int, list[U64]] = {}
    for c, t, p in batches:
        if len(t) == 0:
            continue
        part = keys.pack(c & ((1 << code_bits) - 1), t - layout.t0, p)
        chunk = c >> code_bits
        if int(chunk.min()) == int(chunk.max()):
            parts.setdefault(int(chunk[0]), []).append(part)
            continue
        order = np.argsort(chunk, kind="stable")
        chunk, part = chunk[order], part[order]
        cuts = run_bounds(chunk)
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
            parts.setdefault(int(chunk[a]), []).append(part[a:b])
    return parts


def _unpacked(parts: dict[int, list[U64]], layout: Layout) -> tuple[I64, I64, I64]:
    """(code, ts, posts) from the chunks' keys: each chunk sorted and unpacked into its own
    slice of the output, chunks in code order (two at a time in threads). Empties `parts`."""
    keys = layout.key_layout()
    code_bits = keys.widths[0]
    chunk_ids = sorted(parts)
    at = np.cumsum([0] + [sum(len(x) for x in parts[c]) for c in chunk_ids]).tolist()
    out_c = np.empty(at[-1], dtype=np.int64)
    out_t = np.empty(at[-1], dtype=np.int64)
    out_p = np.empty(at[-1], dtype=np.int64)

    def unpack(k: int) -> None:
        chunk_id = chunk_ids[k]
        key = np.concatenate(parts[chunk_id])
        parts[chunk_id] = []
        key.sort()
        lo, hi = at[k], at[k + 1]
        keys.unpack(key, out=(out_c[lo:hi], out_t[lo:hi], out_p[lo:hi]))
        out_t[lo:hi] += layout.t0
        out_c[lo:hi] += chunk_id << code_bits

    in_threads(unpack, range(len(chunk_ids)))
    return out_c, out_t, out_p


def fetch_entity_events(
    session: Session, src: str, creds: str, credential_map: CredentialMap, names: Sequence[str]
) -> dict[str, pa.Table]:
    """Every access of the named entities (for evidence packs), with `ts_us`."""
    fetched = session.arrow(
        f"SELECT c.code AS code, s.request_id AS request_id, s.ts AS ts, "
        f"s.credential AS credential, s.posts AS posts, epoch_us(s.ts) AS ts_us "
        f"FROM {src} s JOIN {creds} c ON s.credential = c.credential"
    )
    ts = column(fetched, "ts_us", np.int64)
    code = credential_map.codes_at(column(fetched, "code", np.int32), ts)
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
