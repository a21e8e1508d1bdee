"""Benchmark: the revocation job over a large lineage, against a plain SQL anti-join on
PostgreSQL.

Not a test: nothing is asserted. Run (defaults: the issue's size — 50,000,000 lineage rows
(10,000,000 posts by 5,000,000 users in 5 deliveries), 1,000,000 consent changes, 500,000
deletions); a quick run while developing:

    .venv/bin/python bench/revocation.py
    .venv/bin/python bench/revocation.py --posts 1000000 --consent-changes 100000 \
        --deletions 50000 --pg-fraction 0.2

1. Data (generated with DuckDB SQL straight into a temporary lake, bounded memory):
   `--users` users in regions whose default allows third-party training, `--posts` public
   posts, `--deliveries` deliveries to one licensee each carrying every post (lineage rows =
   posts x deliveries, record ids 64 hex digits), then after the deliveries `--deletions`
   deletions (nine in ten posts, one in ten accounts) and `--consent-changes` consent
   events for distinct users (70 % deny, of them a third by GPC; 30 % allow).
2. Consentry: `revocation_candidates` on embedded DuckDB at the cut-off: the delivery's own
   eligibility expression for the delivered posts, joined with the lineage, one row per
   revoked record with its deliveries, reason and since. Timed end to end; lineage rows
   examined per second. Then the new revocations are appended to a SQLite revocation log
   (`RevocationLog.append`, one transaction: bulk `executemany`), and unless
   `--skip-postgres` to a PostgreSQL one in a fresh schema (`COPY`), each timed separately.
3. Peer: the same question as plain SQL on PostgreSQL: lineage anti-joined with the eligible
   posts (posts x users x each user's latest consent event, the same checks), revoked
   records grouped with their deliveries. Loading 50M rows into PostgreSQL takes longer
   than the whole Consentry run, so the peer gets the lineage of the first `--pg-fraction`
   of the posts (all deliveries), all users and events; its rate is rows examined per
   second of query time (load time printed apart). Both sides' revoked record sets are
   compared on that sample.
4. Each side runs in its own (spawned) process, so each peak RSS is its own.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _common import load_note, print_table, rate, ratio, run_isolated, stopwatch

AS_OF = datetime(2025, 6, 1, tzinfo=UTC)
"""When the revocation job runs."""
DELIVERED = datetime(2025, 2, 1, tzinfo=UTC)
"""When the deliveries were made (changes come after)."""
PURPOSE = "ai_training_third_party"
REGIONS = ("US", "JP", "BR", "IN", "CA", "AU")


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def generate(root: str, users: int, posts: int, deliveries: int, changes: int, deletions: int,
             seed: int) -> dict[str, int]:  # fmt: skip
    """Write users, posts, lineage and consent events (see the module doc); row counts."""
    import duckdb

    from consentry.engine import Lake

    lake = Lake(Path(root) / "lake")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SELECT setseed({(seed % 1000) / 1000})")
    post_deletions = deletions * 9 // 10
    account_deletions = deletions - post_deletions
    regions = "[" + ", ".join(_q(r) for r in REGIONS) + "]"
    with lake.writing("users") as staging:
        con.execute(
            f"""
            COPY (
                SELECT printf('u%08d', i) AS user_id,
                       TIMESTAMPTZ '2020-01-01 00:00:00+00' AS created_at,
                       {regions}[1 + (hash(i, 1) % {len(REGIONS)})::INT] AS region,
                       DATE '1970-01-01' + (hash(i, 2) % 10000)::INT AS birth_date,
                       false AS protected,
                       NULL::TIMESTAMPTZ AS deactivated_at,
                       CASE WHEN i < {account_deletions}
                            THEN TIMESTAMPTZ '2025-03-01 00:00:00+00'
                                 + to_seconds((hash(i, 3) % 5000000)::BIGINT) END AS deleted_at
                FROM range({users}) AS t(i)
            ) TO {_q(str(staging / "part-000000.parquet"))} (FORMAT parquet, COMPRESSION zstd)
            """
        )
    step = max(1, posts // max(post_deletions, 1))
    with lake.writing("posts") as staging:
        con.execute(
            f"""
            COPY (
                SELECT printf('p%09d', i) AS post_id,
                       printf('u%08d', (hash(i, 4) % {users})::BIGINT) AS author_id,
                       TIMESTAMPTZ '2024-01-01 00:00:00+00'
                           + to_seconds((hash(i, 5) % 31000000)::BIGINT) AS created_at,
                       'post' AS text, 'public' AS visibility, 'en' AS lang,
                       CASE WHEN i % {step} = 0 AND i // {step} < {post_deletions}
                            THEN TIMESTAMPTZ '2025-03-01 00:00:00+00'
                                 + to_seconds((hash(i, 6) % 5000000)::BIGINT) END AS deleted_at
                FROM range({posts}) AS t(i)
            ) TO {_q(str(staging / "part-000000.parquet"))}
              (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1000000)
            """
        )
    with lake.writing("delivery_lineage") as staging:
        for d in range(deliveries):
            con.execute(
                f"""
                COPY (
                    SELECT 'dlv-{d}' AS delivery_id, 'bench' AS licensee,
                           sha256(printf('p%09d', i)) AS record_id,
                           printf('p%09d', i) AS post_id,
                           printf('u%08d', (hash(i, 4) % {users})::BIGINT) AS author_id
                    FROM range({posts}) AS t(i)
                ) TO {_q(str(staging / f"part-{d:06d}.parquet"))}
                  (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 100000)
                """
            )
    events = con.sql(
        f"""
        SELECT printf('e%09d', i) AS event_id,
               printf('u%08d', ((i * 7919) % {users})::BIGINT) AS user_id,
               '{PURPOSE}' AS purpose,
               CASE WHEN hash(i, 7) % 10 < 7 THEN 'deny' ELSE 'allow' END AS choice,
               TIMESTAMPTZ '2025-02-15 00:00:00+00'
                   + to_seconds((hash(i, 8) % 8000000)::BIGINT) AS "at",
               CASE WHEN hash(i, 7) % 10 < 2 THEN 'gpc' ELSE 'settings' END AS source
        FROM range({min(changes, users)}) AS t(i)
        """
    ).to_arrow_table()
    lake.write_arrow("consent_events", events)
    con.close()
    return {
        "users": users,
        "posts": posts,
        "lineage_rows": posts * deliveries,
        "consent_changes": events.num_rows,
        "post_deletions": post_deletions,
        "account_deletions": account_deletions,
    }


def _deliveries(count: int) -> Any:
    import pyarrow as pa

    return pa.table(
        {
            "delivery_id": [f"dlv-{d}" for d in range(count)],
            "delivered_at": pa.array(
                [DELIVERED + timedelta(hours=d) for d in range(count)], pa.timestamp("us", "UTC")
            ),
        }
    )


def _append_seconds(settings: Any, policy: Any, rows: Any, lineage_rows: int) -> tuple[float, int]:
    """Init a home on `settings`' store, add the licensee, time one `RevocationLog.append`."""
    from consentry.cli.admin import init_home
    from consentry.delivery.licensees import registry_for
    from consentry.revocation import RevocationLog
    from consentry.store import open_store

    init_home(settings)
    registry = registry_for(settings)
    try:
        licensee = registry.add("bench", PURPOSE).record
    finally:
        registry.store.close()
    store = open_store(settings.resolved_database_url)
    try:
        with stopwatch() as logging:
            new = RevocationLog(store, policy).append(
                licensee.id, rows, run_id="bench", trigger="run", as_of=AS_OF,
                lineage_rows=lineage_rows, revoked=rows.num_rows,
            )  # fmt: skip
    finally:
        store.close()
    return logging.seconds, new


def _pg_append_seconds(
    root: str, pg_url: str, policy: Any, rows: Any, lineage_rows: int
) -> tuple[float, int]:
    """`_append_seconds` on a PostgreSQL store in a fresh schema (dropped afterwards)."""
    import uuid

    import sqlalchemy as sa

    from consentry.settings import Settings

    schema = f"bench_log_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        settings = Settings(
            home=Path(root) / "home-pg",
            database_url=f"{pg_url}?options=-csearch_path%3D{schema}",
        )
        return _append_seconds(settings, policy, rows, lineage_rows)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def run_consentry(
    root: str, deliveries: int, memory_limit: str, cut: str, pg_url: str | None
) -> dict[str, Any]:
    """`revocation_candidates` at AS_OF, then the log append (SQLite; and PostgreSQL when
    `pg_url` is given); timings and results."""
    from consentry.delivery.eligibility import LicenceScope
    from consentry.engine import Lake, connect
    from consentry.policy import load_policy
    from consentry.revocation import revocation_candidates
    from consentry.settings import Settings

    lake = Lake(Path(root) / "lake")
    settings = Settings(home=Path(root) / "home")
    policy = load_policy(settings.policy_file)
    events = lake.read_arrow("consent_events")
    backend = connect("duckdb", memory_limit=memory_limit, temp_directory=Path(root) / "tmp")
    cpu_before = os.times()
    with stopwatch() as evaluation:
        found = revocation_candidates(
            backend, lake, policy, events, LicenceScope.build(PURPOSE), _deliveries(deliveries),
            AS_OF,
        )  # fmt: skip
    cpu_after = os.times()
    cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
    backend.disconnect()
    records = found.records
    reasons = records.group_by("reason").aggregate([("record_id", "count")]).to_pylist()
    import pyarrow.compute as pc

    in_sample = records.filter(pc.less(records.column("post_id"), cut))
    rows = records.select(["record_id", "delivery_id", "delivery_ids", "author_id", "reason"])
    rows = rows.append_column("since", records.column("since").fill_null(AS_OF))
    log_seconds, new = _append_seconds(settings, policy, rows, found.lineage_rows)
    pg_log = (
        None
        if pg_url is None
        else _pg_append_seconds(root, pg_url, policy, rows, found.lineage_rows)
    )
    return {
        "seconds": evaluation.seconds,
        "cpu_seconds": cpu,
        "lineage_rows": found.lineage_rows,
        "revoked": records.num_rows,
        "reasons": {r["reason"]: r["record_id_count"] for r in reasons},
        "log_seconds": log_seconds,
        "logged": new,
        "pg_log": pg_log,
        "sample_records": sorted(in_sample.column("record_id").to_pylist()),
    }


PG_QUERY = """
WITH latest AS (
    SELECT DISTINCT ON (user_id) user_id, choice
    FROM consent_events WHERE purpose = %(purpose)s AND at <= %(as_of)s
    ORDER BY user_id, at DESC, event_id DESC
),
eligible AS (
    SELECT p.post_id FROM posts p
    JOIN users u ON u.user_id = p.author_id
    LEFT JOIN latest c ON c.user_id = p.author_id
    WHERE p.visibility = 'public'
      AND (p.deleted_at IS NULL OR p.deleted_at > %(as_of)s)
      AND (u.deleted_at IS NULL OR u.deleted_at > %(as_of)s)
      AND (u.deactivated_at IS NULL OR u.deactivated_at > %(as_of)s)
      AND NOT u.protected
      AND coalesce(c.choice, 'allow') = 'allow'
)
SELECT l.record_id, array_agg(l.delivery_id ORDER BY l.delivery_id) AS delivery_ids
FROM lineage l
WHERE NOT EXISTS (SELECT 1 FROM eligible e WHERE e.post_id = l.post_id)
GROUP BY l.record_id
"""


def run_postgres(root: str, url: str, cut: str) -> dict[str, Any]:
    """Load a sample of the lineage (and all users, posts, events) into a fresh schema and
    run the anti-join; timings and the revoked record ids."""
    import uuid

    import psycopg
    import pyarrow.parquet as pq

    from consentry.engine import Lake

    lake = Lake(Path(root) / "lake")
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path = {schema}")
        try:
            with stopwatch() as loading:
                conn.execute(
                    "CREATE UNLOGGED TABLE users (user_id text PRIMARY KEY, region text, "
                    "protected bool, deactivated_at timestamptz, deleted_at timestamptz)"
                )
                conn.execute(
                    "CREATE UNLOGGED TABLE posts (post_id text PRIMARY KEY, author_id text, "
                    "visibility text, deleted_at timestamptz)"
                )
                conn.execute(
                    "CREATE UNLOGGED TABLE consent_events (event_id text, user_id text, "
                    "purpose text, choice text, at timestamptz)"
                )
                conn.execute(
                    "CREATE UNLOGGED TABLE lineage (delivery_id text, record_id text, post_id text)"
                )
                loads = [
                    ("users", lake.files("users"), ["user_id", "region", "protected",
                                                    "deactivated_at", "deleted_at"], None),
                    ("posts", lake.files("posts"), ["post_id", "author_id", "visibility",
                                                    "deleted_at"], cut),
                    ("consent_events", lake.files("consent_events"),
                     ["event_id", "user_id", "purpose", "choice", "at"], None),
                    ("lineage", lake.files("delivery_lineage"),
                     ["delivery_id", "record_id", "post_id"], cut),
                ]  # fmt: skip
                lineage_rows = 0
                for table, files, columns, below in loads:
                    with conn.cursor().copy(
                        f"COPY {table} ({', '.join(columns)}) FROM STDIN"
                    ) as copy:
                        for f in files:
                            source = pq.ParquetFile(f)
                            for batch in source.iter_batches(100_000, columns=columns):
                                rows = batch.to_pylist()
                                for row in rows:
                                    if below is not None and row["post_id"] >= below:
                                        continue
                                    if table == "lineage":
                                        lineage_rows += 1
                                    copy.write_row([row[c] for c in columns])
                conn.execute("CREATE INDEX ON consent_events (user_id, purpose, at)")
                conn.execute("ANALYZE")
            with stopwatch() as querying:
                revoked = conn.execute(PG_QUERY, {"purpose": PURPOSE, "as_of": AS_OF}).fetchall()
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return {
        "seconds": querying.seconds,
        "load_seconds": loading.seconds,
        "lineage_rows": lineage_rows,
        "revoked": len(revoked),
        "records": sorted(r[0] for r in revoked),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=5_000_000)
    parser.add_argument("--posts", type=int, default=10_000_000)
    parser.add_argument("--deliveries", type=int, default=5)
    parser.add_argument("--consent-changes", type=int, default=1_000_000)
    parser.add_argument("--deletions", type=int, default=500_000)
    parser.add_argument("--pg-fraction", type=float, default=0.1)
    parser.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL",
                        "postgresql://postgres@127.0.0.1:5432/test"))  # fmt: skip
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--duckdb-memory-limit", default="4GB")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="consentry-revocation-bench-") as root:
        with stopwatch() as gen:
            counts = run_isolated(
                generate, root, args.users, args.posts, args.deliveries, args.consent_changes,
                args.deletions, args.seed,
            ).value  # fmt: skip
        print(f"generated in {gen.seconds:,.1f} s: {counts}; {load_note()}")
        cut = f"p{int(args.posts * args.pg_fraction):09d}"
        ours = run_isolated(
            run_consentry, root, args.deliveries, args.duckdb_memory_limit, cut,
            None if args.skip_postgres else args.pg_url,
        )  # fmt: skip
        c = ours.value
        rows = [
            [
                "Consentry (DuckDB)",
                c["lineage_rows"],
                c["revoked"],
                round(c["seconds"], 2),
                round(rate(c["lineage_rows"], c["seconds"])),
                round(ours.peak_rss_mib),
            ]
        ]
        print(f"reasons: {c['reasons']}")
        print(
            f"Consentry evaluation: {c['cpu_seconds']:,.1f} CPU seconds "
            f"({rate(c['lineage_rows'], c['cpu_seconds']):,.0f} lineage rows per CPU second; "
            f"x{os.cpu_count()} cores when the machine is otherwise idle); {load_note()}"
        )
        print(
            f"log append (SQLite, one transaction): {c['logged']:,} revocations in "
            f"{c['log_seconds']:,.1f} s ({rate(c['logged'], c['log_seconds']):,.0f}/s)"
        )
        if c["pg_log"] is not None:
            seconds, logged = c["pg_log"]
            print(
                f"log append (PostgreSQL, COPY, one transaction): {logged:,} revocations in "
                f"{seconds:,.1f} s ({rate(logged, seconds):,.0f}/s)"
            )
        if not args.skip_postgres:
            theirs = run_isolated(run_postgres, root, args.pg_url, cut)
            p = theirs.value
            rows.append(
                [
                    f"PostgreSQL anti-join ({args.pg_fraction:.0%} sample)",
                    p["lineage_rows"],
                    p["revoked"],
                    round(p["seconds"], 2),
                    round(rate(p["lineage_rows"], p["seconds"])),
                    round(theirs.peak_rss_mib),
                ]
            )
            mine = c["sample_records"]
            agree = mine == p["records"]
            print(
                f"PostgreSQL: loading the sample took {p['load_seconds']:,.1f} s; revoked "
                f"records in the sample agree with Consentry's: {agree} "
                f"({len(mine):,} vs {p['revoked']:,})"
            )
            print(
                "rate ratio (Consentry / PostgreSQL): "
                + ratio(
                    rate(c["lineage_rows"], c["seconds"]), rate(p["lineage_rows"], p["seconds"])
                )
            )
        print_table(
            "Revocation job at the issue's scale",
            ["side", "lineage rows", "revoked", "seconds", "rows/s", "peak RSS MiB"],
            rows,
        )


if __name__ == "__main__":
    main()
