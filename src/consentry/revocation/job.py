"""Which delivered records are no longer eligible: lineage joined with eligibility, on DuckDB.

The eligibility of a delivered post is computed by the delivery's own expression
(`consentry.delivery.eligibility.eligibility`), so a revocation's reason is always the code
the build would give today. The rest is two DuckDB queries over the lineage parts of the
licensee's deliveries (picked by their Parquet footers): no Python loop touches a row.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import ibis
import ibis.backends.duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from consentry.delivery.build import LINEAGE_TABLE
from consentry.delivery.eligibility import REASON_ORDER, LicenceScope, eligibility
from consentry.engine import Lake
from consentry.policy import PolicyFile

__all__ = [
    "CANDIDATE_SCHEMA",
    "DELIVERIES_SCHEMA",
    "DENIAL_STARTS",
    "Candidates",
    "lineage_of_posts",
    "revocation_candidates",
]

UTC_TS = pa.timestamp("us", tz="UTC")

DELIVERIES_SCHEMA = pa.schema([("delivery_id", pa.string()), ("delivered_at", UTC_TS)])
"""The visible deliveries a computation may read lineage of (others are ignored)."""

CANDIDATE_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("post_id", pa.string()),
        ("author_id", pa.string()),
        ("delivery_id", pa.string()),
        ("delivery_ids", pa.list_(pa.string())),
        ("reason", pa.string()),
        ("since", UTC_TS),
        ("missing", pa.bool_()),
    ]
)
"""One row per delivered record that is no longer eligible (see `revocation_candidates`)."""


@dataclass(frozen=True, slots=True)
class Candidates:
    """The result of one evaluation: the records and how much lineage was examined."""

    records: pa.Table
    lineage_rows: int


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _lineage_files(lake: Lake) -> list[str]:
    return lake.files(LINEAGE_TABLE)


@dataclass(frozen=True, slots=True)
class _Parts:
    """The lineage parts one computation reads, picked by delivery from Parquet footers.

    `whole` maps a delivery rank to the parts holding only that delivery's rows (the build
    writes one part per delivery), so those are read without their `delivery_id` column and
    without a join; `mixed` are parts whose footer does not prove a single delivery (read
    with a join on `delivery_id`). Parts of other deliveries are not scanned (only their
    footers are read)."""

    whole: dict[int, list[str]]
    mixed: list[str]
    rows: int
    """Lineage rows of the given deliveries in the `whole` parts (mixed ones are counted by
    a query)."""
    scan: Callable[[list[str]], str]
    """SQL for a relation over some of the parts (`Lake.relation` on the job's connection)."""


def _single_delivery(lake: Lake, path: str) -> tuple[str | None, int]:
    """(the one delivery id every row of the part has, or None if the footer does not
    prove one; the part's row count)."""
    meta = lake.parquet_file(path).metadata
    names = [meta.schema.column(i).name for i in range(meta.num_columns)]
    if "delivery_id" not in names:
        return None, meta.num_rows
    column = names.index("delivery_id")
    found: str | None = None
    for group in range(meta.num_row_groups):
        chunk = meta.row_group(group)
        if chunk.num_rows == 0:
            continue
        stats = chunk.column(column).statistics
        # Exact min == max and no nulls: the whole row group is that one delivery. String
        # statistics may be truncated; truncated bounds differ, so they never pass.
        if (
            stats is None
            or not stats.has_min_max
            or stats.null_count != 0
            or not isinstance(stats.min, str)
            or stats.min != stats.max
            or (found is not None and stats.min != found)
        ):
            return None, meta.num_rows
        found = stats.min
    return found, meta.num_rows


def _pick_parts(lake: Lake, ranks: dict[str, int], scan: Callable[[list[str]], str]) -> _Parts:
    """The lineage parts of the given deliveries (`ranks`: delivery id to rank)."""
    whole: dict[int, list[str]] = {}
    mixed: list[str] = []
    rows = 0
    for path in _lineage_files(lake):
        delivery, count = _single_delivery(lake, path)
        if count == 0:
            continue
        if delivery is None:
            mixed.append(path)
        elif delivery in ranks:
            whole.setdefault(ranks[delivery], []).append(path)
            rows += count
    return _Parts(whole, mixed, rows, scan)


def _register_lineage(
    con: ibis.backends.duckdb.Backend, lake: Lake, deliveries: pa.Table
) -> _Parts | None:
    """Table `rv_ranks` (each given delivery with its rank, oldest first) and the parts
    of their lineage; None when there is no lineage."""
    files = _lineage_files(lake)
    if not files or deliveries.num_rows == 0:
        return None
    duck = con.con
    duck.register("rv_deliveries", deliveries.cast(DELIVERIES_SCHEMA))
    # Each rank's bit for the delivery mask, unsigned all through: a signed shift would
    # widen every lineage row to a 128-bit integer.
    duck.execute(
        "CREATE OR REPLACE TEMP TABLE rv_ranks AS SELECT delivery_id, rank, "
        f"CASE WHEN rank < {_MASK_LIMIT} THEN 1::UBIGINT << rank::UBIGINT "
        "ELSE 0::UBIGINT END AS bit FROM ("
        "SELECT delivery_id, "
        "(row_number() OVER (ORDER BY delivered_at, delivery_id) - 1)::INTEGER AS rank "
        "FROM rv_deliveries)"
    )
    duck.unregister("rv_deliveries")
    ranked = duck.sql("SELECT delivery_id, rank FROM rv_ranks").fetchall()
    aliases = itertools.count()

    def scan(paths: list[str]) -> str:
        return lake.relation(duck, paths, f"rv_lineage_{next(aliases)}")

    return _pick_parts(lake, {str(d): int(r) for d, r in ranked}, scan)


def _bit(rank: int) -> int:
    """The rank's bit in a delivery mask (0 beyond `_MASK_LIMIT`: lists are used then)."""
    return 1 << rank if rank < _MASK_LIMIT else 0


def _lineage_sql(parts: _Parts, columns: str, *, rank: int | None = None) -> str:
    """Lineage rows of the parts (all ranks, or one) with `columns` and `rank`, as one
    UNION ALL: whole parts get their rank as a constant, mixed ones join `rv_ranks`."""
    selects = [
        f"SELECT {columns}, {r}::INTEGER AS rank, {_bit(r)}::UBIGINT AS bit "
        f"FROM {parts.scan(files)}"
        for r, files in sorted(parts.whole.items())
        if rank is None or r == rank
    ]
    if parts.mixed:
        where = "" if rank is None else f" WHERE d.rank = {rank}"
        prefixed = ", ".join(f"l.{c.strip()}" for c in columns.split(","))
        selects.append(
            f"SELECT {prefixed}, d.rank, d.bit FROM {parts.scan(parts.mixed)} AS l "
            f"JOIN rv_ranks AS d USING (delivery_id){where}"
        )
    return " UNION ALL ".join(selects)


_REASON_CODE = (
    "CASE WHEN e.first_reason IS NULL THEN NULL "
    + " ".join(
        f"WHEN e.first_reason = {_quote(r.value)} THEN {k}" for k, r in enumerate(REASON_ORDER, 1)
    )
    + " ELSE error('unknown eligibility reason ' || e.first_reason) END::UTINYINT"
)
"""A failing check as its 1-based position in REASON_ORDER (null: eligible). Carried through
the lineage join as one byte instead of a string: the join's build side holds every post of
the lake, and this keeps it about 0.5 GB smaller at 10M posts (no spill at a 1 GB limit)."""

_REASON_NAMES = "[" + ", ".join(_quote(r.value) for r in REASON_ORDER) + "]"
"""The codes of `_REASON_CODE` back to reason names (a list literal, 1-based)."""

DENIAL_STARTS = """
WITH ev AS (
    SELECT user_id, choice, "at" FROM {events}
    WHERE purpose = {purpose} AND "at" <= {at}::TIMESTAMPTZ
),
allowed AS (
    SELECT user_id, max("at") AS last_allow FROM ev WHERE choice = 'allow' GROUP BY user_id
)
SELECT ev.user_id, min(ev."at") AS start
FROM ev LEFT JOIN allowed USING (user_id)
WHERE ev.choice = 'deny' AND (allowed.last_allow IS NULL OR ev."at" > allowed.last_allow)
GROUP BY ev.user_id
"""
"""Per author, when their current refusal of `purpose` began as of `at`: the rule
`consentry.revocation.rules.denial_started` for every author at once (held to it by
test_denial_starts_sql_is_the_rule, tests/revocation/test_rules.py)."""

_STATUS = """
CREATE TEMP VIEW {status} AS
WITH deny_start AS (
{denial_starts}
)
SELECT e.post_id, {reason_code} AS reason,
       least(
           CASE WHEN e.fail_post_deleted THEN e.deleted_at END,
           CASE WHEN e.fail_author_deleted THEN e.author_deleted_at END,
           CASE WHEN e.fail_author_deactivated THEN e.author_deactivated_at END,
           CASE WHEN e.fail_consent_denied THEN
               CASE WHEN e.consent_rule IN ('explicit', 'gpc')
                    THEN coalesce(d.start, e.consent_since)
                    ELSE e.consent_since END
           END
       ) AS since
FROM {evaluated} AS e LEFT JOIN deny_start AS d ON d.user_id = e.author_id
"""
"""Every post of the lake with its first failing check (null: eligible) and since."""

_MASK_LIMIT = 64
"""Up to this many deliveries, the deliveries of a record are a 64-bit mask (a cheap
aggregate); beyond it, a list of ranks."""

_SLICE = 1_000_000
"""Rows per slice when expanding delivery masks."""

_REVOKED_POSTS = """
CREATE TEMP TABLE {revoked} AS
SELECT l.post_id, {deliveries} AS deliveries, max(l.rank) AS last,
       {reason_names}[any_value(s.reason)] AS reason, any_value(s.since) AS since,
       bool_or(s.post_id IS NULL) AS missing
FROM ({lineage}) AS l
LEFT JOIN {status} AS s ON s.post_id = l.post_id
WHERE s.post_id IS NULL OR s.reason IS NOT NULL
GROUP BY l.post_id
"""
"""Pass 1, over every lineage row but only its `post_id` (the one column the verdict needs):
the posts that are ineligible or gone, with their deliveries and the latest one's rank."""

_RECORDS = """
SELECT l.record_id, r.post_id, l.author_id, r.deliveries, r.reason, r.since, r.missing
FROM ({lineage}) AS l
JOIN {revoked} AS r ON r.post_id = l.post_id AND r.last = l.rank
"""
"""Pass 2: the record and author id of each revoked post, read from the parts of the
latest delivery that carried it only (`lineage` is restricted to those ranks). No GROUP BY:
a build lists a post once per delivery, so this is one row per post (`_one_per_post`
guards the exception cheaply instead of grouping 64-character ids every run)."""


def _one_per_post(table: pa.Table) -> pa.Table:
    """`table` with one row per `post_id` (the first), vectorised; unchanged when the ids
    are already distinct (the normal case: counting them is far cheaper than grouping)."""
    if pc.count_distinct(table.column("post_id")).as_py() == table.num_rows:
        return table
    numbered = table.append_column("_row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    first = numbered.group_by("post_id", use_threads=False).aggregate([("_row", "min")])
    return table.take(pa.array(np.sort(first.column("_row_min").to_numpy())))


def _ranks_of(
    column: pa.ChunkedArray, masks: bool, deliveries: int
) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, ranks): each row's delivery ranks ascending, flattened, with list offsets."""
    if not masks:
        lists = column.combine_chunks()
        return (
            lists.offsets.to_numpy().astype(np.int64) - lists.offsets[0].as_py(),
            lists.flatten().to_numpy().astype(np.int64),
        )
    values = column.to_numpy().astype(np.uint64)
    shifts = np.arange(deliveries, dtype=np.uint64)
    counts = np.zeros(len(values), dtype=np.int64)
    parts = []
    # In slices, so the (rows x deliveries) bit matrix stays small whatever the row count.
    for start in range(0, len(values), _SLICE):
        bits = ((values[start : start + _SLICE, None] >> shifts) & np.uint64(1)).astype(bool)
        _, ranks = np.nonzero(bits)  # row-major: each row's ranks in ascending order
        counts[start : start + _SLICE] = bits.sum(axis=1)
        parts.append(ranks)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return offsets, flat.astype(np.int64)


def _with_delivery_ids(table: pa.Table, ranks: pa.Table, *, masks: bool) -> pa.Table:
    """Replace each row's delivery ranks by the delivery ids (oldest first) and add the
    latest one, vectorised (NumPy over the flattened ranks)."""
    by_rank = ranks.sort_by("rank").column("delivery_id").combine_chunks()
    offsets, flat = _ranks_of(table.column("deliveries"), masks, ranks.num_rows)
    ids_flat = by_rank.take(pa.array(flat))
    ids = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), ids_flat)
    # Every list holds at least one rank (a row exists because a delivery carried it).
    last = ids_flat.take(pa.array(offsets[1:] - 1))
    return pa.table(
        {
            "record_id": table.column("record_id"),
            "post_id": table.column("post_id"),
            "author_id": table.column("author_id"),
            "delivery_id": last,
            "delivery_ids": ids,
            "reason": table.column("reason"),
            "since": table.column("since"),
            "missing": table.column("missing"),
        }
    ).cast(CANDIDATE_SCHEMA)


def revocation_candidates(
    backend: ibis.BaseBackend,
    lake: Lake,
    policy: PolicyFile,
    events: pa.Table,
    scope: LicenceScope,
    deliveries: pa.Table,
    as_of: datetime,
) -> Candidates:
    """Every record the given deliveries carried whose post is not eligible at `as_of`.

    `deliveries` (DELIVERIES_SCHEMA) are one licensee's visible deliveries made at or
    before `as_of`; lineage of any other delivery (another licensee's, or a crashed build's
    orphan part) is never read. `events` are the ledger's events (`events_arrow`).

    1. The lake's posts are evaluated by `eligibility` at `as_of` for the licence's scope,
       exactly as a delivery evaluates them; the ineligible ones are kept with their first
       failing check as `reason`.
    2. `since` is the earliest known instant among a post's failing checks: the post's or
       the author's deletion or deactivation instant, and for denied consent the start of
       the author's current run of deny events for the purpose (after their last allow),
       else the decision's own `since`. Checks with no instant in the data (visibility,
       protection, scope) give none; the log then keeps the instant it first saw the
       record (see the service).
    3. The lineage parts are picked by delivery from their footers (`_pick_parts`): a part
       proven to hold one given delivery is read without its `delivery_id` column, one that
       proves nothing is read with a join on it, parts of other deliveries are not read.
    4. Pass 1 reads only `post_id` of those lineage rows, keeps the rows whose post is
       ineligible or no longer in the lake (`missing`: no reason, no since) and groups
       them per post: the deliveries that carried it and the latest one's rank.
    5. Pass 2 reads the record and author id of each such post from the parts of its
       latest carrying delivery only. The result: its record id, the deliveries that
       carried it oldest first, the latest one (`delivery_id`), reason, since. Lineage rows
       examined (every row of the given deliveries) are counted from the footers.
    """
    as_of = as_of.astimezone(UTC)
    if backend.name != "duckdb":
        raise ValueError("revocation runs use the DuckDB engine")
    duck_backend: ibis.backends.duckdb.Backend = backend
    parts = _register_lineage(duck_backend, lake, deliveries)
    if parts is None:
        return Candidates(CANDIDATE_SCHEMA.empty_table(), 0)
    duck = duck_backend.con
    lineage_rows = parts.rows
    if parts.mixed:
        row = duck.execute(
            f"SELECT count(*) FROM {parts.scan(parts.mixed)} JOIN rv_ranks USING (delivery_id)"
        ).fetchone()
        lineage_rows += int(row[0]) if row else 0
    if lineage_rows == 0:
        return Candidates(CANDIDATE_SCHEMA.empty_table(), 0)
    suffix = uuid.uuid4().hex[:8]
    names = {
        "events": f"rv_events_{suffix}",
        "evaluated": f"rv_eval_{suffix}",
        "status": f"rv_status_{suffix}",
        "revoked": f"rv_revoked_{suffix}",
    }
    masks = deliveries.num_rows <= _MASK_LIMIT
    try:
        posts = lake.table(backend, "posts")
        users = lake.table(backend, "users")
        ledger_events = backend.create_view(names["events"], ibis.memtable(events), overwrite=True)
        # Author facts stay inline (not a temp table as in a build, which reads them
        # twice): the evaluation is read once here, and streaming them into the join saves
        # writing and re-reading one row per user (about a third less memory).
        checked = eligibility(policy, posts, users, ledger_events, scope, as_of)
        backend.create_view(names["evaluated"], checked, overwrite=True)
        duck.execute(
            _STATUS.format(
                denial_starts=DENIAL_STARTS.format(
                    events=names["events"],
                    purpose=_quote(scope.purpose),
                    at=_quote(as_of.isoformat()),
                ),
                reason_code=_REASON_CODE,
                **names,
            )
        )
        deliveries_sql = "bit_or(l.bit)" if masks else "list_sort(list(l.rank))"
        duck.execute(
            _REVOKED_POSTS.format(
                deliveries=deliveries_sql,
                lineage=_lineage_sql(parts, "post_id"),
                reason_names=_REASON_NAMES,
                **names,
            )
        )
        lasts = [
            int(r) for (r,) in duck.sql(f"SELECT DISTINCT last FROM {names['revoked']}").fetchall()
        ]
        if lasts:
            lineage = " UNION ALL ".join(
                _lineage_sql(parts, "post_id, record_id, author_id", rank=r) for r in sorted(lasts)
            )
            table = _one_per_post(
                duck.sql(_RECORDS.format(lineage=lineage, **names)).to_arrow_table()
            )
        else:
            table = pa.table(
                {
                    "record_id": pa.array([], pa.string()),
                    "post_id": pa.array([], pa.string()),
                    "author_id": pa.array([], pa.string()),
                    "deliveries": pa.array([], pa.uint64() if masks else pa.list_(pa.int32())),
                    "reason": pa.array([], pa.string()),
                    "since": pa.array([], UTC_TS),
                    "missing": pa.array([], pa.bool_()),
                }
            )
        ranks = duck.sql("SELECT delivery_id, rank FROM rv_ranks").to_arrow_table()
        return Candidates(_with_delivery_ids(table, ranks, masks=masks), lineage_rows)
    finally:
        for view in ("status", "evaluated", "events"):
            duck.execute(f"DROP VIEW IF EXISTS {names[view]}")
        duck.execute(f"DROP TABLE IF EXISTS {names['revoked']}")


def lineage_of_posts(
    backend: ibis.BaseBackend, lake: Lake, deliveries: pa.Table, post_ids: pa.Array
) -> pa.Table:
    """Per (licensee, record), the lineage of the given posts in the given deliveries.

    `deliveries` has DELIVERIES_SCHEMA plus `licensee`. Returns `licensee`, `record_id`,
    `post_id`, `author_id`, `delivery_ids` (oldest first), `delivery_id` (the latest),
    ordered by licensee and record id.
    """
    if backend.name != "duckdb":
        raise ValueError("revocation runs use the DuckDB engine")
    duck_backend: ibis.backends.duckdb.Backend = backend
    files = _lineage_files(lake)
    if not files or deliveries.num_rows == 0 or len(post_ids) == 0:
        return _PURGED_SCHEMA.empty_table()
    duck = duck_backend.con
    duck.register("rv_purged_deliveries", deliveries)
    duck.register("rv_purged_posts", pa.table({"post_id": pa.array(post_ids).cast(pa.string())}))
    lineage = lake.relation(duck, files, "rv_purged_lineage")
    table = duck.sql(
        f"""
        SELECT licensee, record_id, post_id, author_id, delivery_ids,
               list_extract(delivery_ids, -1) AS delivery_id
        FROM (
            SELECT d.licensee, l.record_id, l.post_id, any_value(l.author_id) AS author_id,
                   list(l.delivery_id ORDER BY d.delivered_at, l.delivery_id) AS delivery_ids
            FROM {lineage} AS l
            JOIN rv_purged_deliveries AS d USING (delivery_id)
            WHERE l.post_id IN (SELECT post_id FROM rv_purged_posts)
            GROUP BY d.licensee, l.record_id, l.post_id
        )
        ORDER BY licensee, record_id
        """
    ).to_arrow_table()
    duck.unregister("rv_purged_deliveries")
    duck.unregister("rv_purged_posts")
    return table.cast(_PURGED_SCHEMA)


_PURGED_SCHEMA = pa.schema(
    [
        ("licensee", pa.string()),
        ("record_id", pa.string()),
        ("post_id", pa.string()),
        ("author_id", pa.string()),
        ("delivery_ids", pa.list_(pa.string())),
        ("delivery_id", pa.string()),
    ]
)
