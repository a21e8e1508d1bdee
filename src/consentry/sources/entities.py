"""The rules of the `entities` table that span rows: one owner per credential at a time.

Cells are checked by `consentry.sources.validate` like every table's; these rules need a
whole table and are checked on the table an import would produce (the lake's rows merged
with the imported ones) and on every entities table scraping reads (`check_owners`), with
the same messages. Rules (docs/tables.md, "Entities: one owner at a time"):

1. A row owns its credential during [valid_from, valid_to); a null end is open. valid_to
   must be after valid_from.
2. A credential shaped like a CIDR range (`203.0.113.0/24`, `2001:db8::/32`) must be a valid
   network with no host bits set; ranges are compared in their canonical spelling
   (`2001:0DB8::/32` is `2001:db8::/32`). Anything else is matched exactly.
3. The intervals of one credential may not overlap. A problem is reported at the later of
   the two rows (by valid_from, an open start first), naming the earlier; when the later is
   already in the lake and the earlier is imported, at the imported one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from consentry.errors import BadInput, Problem
from consentry.sources.readers import MAX_PROBLEMS
from consentry.sources.validate import Conformed, count_as_instant

__all__ = [
    "LAKE_LOCATION",
    "CheckedCredentials",
    "RowOrigins",
    "check_entities",
    "check_entities_merge",
    "validity_overlaps",
]

LAKE_LOCATION = "lake:entities"
"""Where rows already in the lake are reported (row = index + 1, in key order)."""

_CIDR_SHAPE = re.compile(r"^[0-9A-Fa-f:.]+/[0-9]+$")
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1

# For each row, the furthest end among the earlier rows of its credential (by valid_from,
# open start first, then position) and the first row (by position) reaching that far. With every
# interval non-empty, the row overlaps an earlier one exactly when that end is after its
# start: no pair of rows is ever compared, so the query is one sort and one window.
_OVERLAPS_SQL = f"""
SELECT pos, earlier FROM (
    SELECT pos, start_us,
        max(end_us) OVER w AS reach,
        arg_max(pos, (end_us, -pos)) OVER w AS earlier
    FROM (
        SELECT pos, credential,
            coalesce(valid_from, {_INT64_MIN}) AS start_us,
            coalesce(valid_to, {_INT64_MAX}) AS end_us
        FROM intervals
        WHERE valid_from IS NULL OR valid_to IS NULL OR valid_from < valid_to
    )
    WINDOW w AS (
        PARTITION BY credential ORDER BY start_us, pos
        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
    )
)
WHERE reach > start_us
ORDER BY pos
"""


@dataclass(frozen=True, slots=True)
class RowOrigins:
    """Where each row of a table came from, for `FILE:ROW` messages.

    `source[i]` indexes `locations`; `rows[i]` is the row number within that location.
    """

    locations: tuple[str, ...]
    source: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int64]

    @classmethod
    def single(
        cls, location: str, num_rows: int, row_numbers: pa.Array | None = None
    ) -> RowOrigins:
        """Every row from `location`, numbered by `row_numbers` (default index + 1)."""
        rows = (
            np.arange(1, num_rows + 1, dtype=np.int64)
            if row_numbers is None
            else np.asarray(row_numbers.to_numpy(zero_copy_only=False), dtype=np.int64)
        )
        return cls((location,), np.zeros(num_rows, dtype=np.int64), rows)

    def problem(self, index: int, field: str, message: str) -> Problem:
        return Problem(self.locations[self.source[index]], int(self.rows[index]), field, message)

    def name(self, index: int, seen_from: int) -> str:
        """Row `index` as a reader of a problem at row `seen_from` finds it."""
        if self.source[index] == self.source[seen_from]:
            return f"row {self.rows[index]}"
        return f"{self.locations[self.source[index]]}:{self.rows[index]}"

    def in_lake(self, index: int) -> bool:
        return bool(self.locations[self.source[index]] == LAKE_LOCATION)

    def order(self, problem: Problem) -> tuple[int, int]:
        return self.locations.index(problem.location), problem.row or 0


@dataclass(frozen=True, slots=True)
class CheckedCredentials:
    """The credentials of a checked entities table: canonical spelling, and which are ranges."""

    canonical: pa.Array
    is_range: npt.NDArray[np.bool_]


def _canonical_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | str | None:
    """The network `text` names, None when it is not CIDR-shaped, or why it is a bad range."""
    if "/" not in text or not _CIDR_SHAPE.match(text):
        return None
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        return f"not a CIDR range: {exc}"


def _microseconds(values: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Timestamps as int64 microseconds since the epoch (nulls stay null)."""
    if pa.types.is_timestamp(values.type):
        values = pc.cast(values, pa.timestamp("us", tz="UTC")).cast(pa.int64())
    combined = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return pc.cast(combined, pa.int64())


def validity_overlaps(intervals: pa.Table) -> pa.Table:
    """Rows whose validity overlaps an earlier row of the same credential (rule 3).

    1. `intervals` has columns `credential`, `valid_from` and `valid_to` (timestamps or
       int64 microseconds; null is an open end). Rows whose interval is empty or inverted
       (rule 1) take no part.
    2. Rows of one credential are ordered by valid_from (an open start first), then by
       position; a row overlaps an earlier one when the furthest end among the earlier rows
       is after its start (half-open intervals: an end equal to a start does not overlap).
    3. Returns `pos` (that row's position) and `earlier` (the position of an earlier row it
       overlaps: of those reaching furthest, the first in `intervals`), ordered by `pos`.
    """
    table = pa.table(
        {
            "pos": pa.array(np.arange(intervals.num_rows, dtype=np.int64)),
            "credential": intervals["credential"].combine_chunks(),
            "valid_from": _microseconds(intervals["valid_from"]),
            "valid_to": _microseconds(intervals["valid_to"]),
        }
    )
    con = duckdb.connect()
    try:
        con.register("intervals", table)
        return con.sql(_OVERLAPS_SQL).to_arrow_table()
    finally:
        con.close()


def _interval_text(start: int | None, end: int | None) -> str:
    def at(us: int | None) -> str:
        return "open" if us is None else count_as_instant(us)

    return f"[{at(start)}, {at(end)})"


def check_entities(table: pa.Table, origins: RowOrigins) -> CheckedCredentials:
    """Check the rules of the module doc on a whole entities table (canonical columns).

    1. Every problem is `FILE:ROW: field: message`, located by `origins`; at most
       MAX_PROBLEMS are raised together as BadInput, ordered by location, then row.
    2. Otherwise returns each credential's canonical spelling and whether it is a range.
    CIDR parsing runs in Python only for credentials holding a `/` (entities is a small
    dimension table); the other rules are vectorised.
    """
    problems: list[Problem] = []
    starts = _microseconds(table["valid_from"])
    ends = _microseconds(table["valid_to"])
    inverted = pc.fill_null(pc.greater_equal(starts, ends), False)
    for index in pc.indices_nonzero(inverted).to_pylist():
        problems.append(
            origins.problem(index, "valid_to", "must be after valid_from (exclusive end)")
        )

    credentials = table["credential"].combine_chunks()
    is_range = np.zeros(len(credentials), dtype=bool)
    slashed = pc.indices_nonzero(pc.fill_null(pc.match_substring(credentials, "/"), False))
    respelled: dict[int, str] = {}
    for index, text in zip(slashed.to_pylist(), credentials.take(slashed).to_pylist(), strict=True):
        network = _canonical_network(text)
        if isinstance(network, str):
            problems.append(origins.problem(index, "credential", network))
        elif network is not None:
            respelled[index] = str(network)
            is_range[index] = True
    canonical = credentials
    if respelled:
        mask = np.zeros(len(credentials), dtype=bool)
        mask[list(respelled)] = True
        canonical = pc.replace_with_mask(
            credentials, pa.array(mask), pa.array([respelled[i] for i in sorted(respelled)])
        )

    overlaps = validity_overlaps(
        pa.table({"credential": canonical, "valid_from": starts, "valid_to": ends})
    )
    for later, earlier in zip(
        overlaps["pos"].to_pylist(), overlaps["earlier"].to_pylist(), strict=True
    ):
        at, other = later, earlier
        if origins.in_lake(later) and not origins.in_lake(earlier):
            at, other = earlier, later
        problems.append(
            origins.problem(
                at,
                "valid_from",
                f"credential {canonical[at].as_py()!r} is already owned by "
                f"{origins.name(other, at)} "
                f"{_interval_text(starts[other].as_py(), ends[other].as_py())} "
                "during this interval (validity intervals of one credential may not overlap)",
            )
        )
    if problems:
        problems.sort(key=origins.order)
        raise BadInput(problems[:MAX_PROBLEMS])
    return CheckedCredentials(canonical=canonical, is_range=is_range)


def _quote(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def check_entities_merge(
    existing: pa.Table | None, incoming: pa.Table, inputs: Sequence[Conformed] = ()
) -> None:
    """Check the entities table a merge would produce, before it is written.

    1. The merged table is what `consentry.sources.importer.merge_into` writes: the rows of
       the `existing` rows (the lake's, in its files' order) whose key (credential,
       valid_from) was not imported,
       plus the imported rows, the last occurrence of a key winning.
    2. `incoming` concatenates `inputs` (their locations and row numbers name the imported
       rows; without inputs they are `incoming`, index + 1); rows of the lake are
       LAKE_LOCATION, numbered in key order.
    3. `check_entities` runs on it; any problem raises BadInput.
    """
    if inputs:
        locations = tuple(c.location for c in inputs)
        source = np.repeat(np.arange(len(inputs)), [c.table.num_rows for c in inputs])
        rows = np.concatenate(
            [RowOrigins.single(c.location, c.table.num_rows, c.row_numbers).rows for c in inputs]
        )
    else:
        locations = ("incoming",)
        source = np.zeros(incoming.num_rows, dtype=np.int64)
        rows = np.arange(1, incoming.num_rows + 1, dtype=np.int64)
    lake = len(locations)
    fresh = pa.table(
        {
            "credential": incoming["credential"],
            "valid_from": incoming["valid_from"],
            "valid_to": incoming["valid_to"],
            "source": pa.array(source, pa.int64()),
            "row": pa.array(rows, pa.int64()),
            "seq": pa.array(np.arange(incoming.num_rows, dtype=np.int64)),
        }
    )
    query = """
        SELECT credential, valid_from, valid_to, source, row FROM fresh
        QUALIFY row_number() OVER (PARTITION BY credential, valid_from ORDER BY seq DESC) = 1
    """
    old = None
    if existing is not None and existing.num_rows:
        old = existing.select(["credential", "valid_from", "valid_to"]).append_column(
            "row", pa.array(np.arange(1, existing.num_rows + 1, dtype=np.int64))
        )
        query += f"""
        UNION ALL
        SELECT credential, valid_from, valid_to, {lake} AS source, row FROM old o
        ANTI JOIN fresh f
            ON o.credential = f.credential
            AND o.valid_from IS NOT DISTINCT FROM f.valid_from
        """
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("fresh", fresh)
        if old is not None:
            con.register("old", old)
        merged = con.sql(query).to_arrow_table()
    finally:
        con.close()
    origins = RowOrigins(
        (*locations, LAKE_LOCATION),
        np.asarray(merged["source"].to_numpy(), dtype=np.int64),
        np.asarray(merged["row"].to_numpy(), dtype=np.int64),
    )
    check_entities(merged, origins)
