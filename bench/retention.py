"""Benchmark: plan retention over a large lake on DuckDB, against the same rules in pandas.

Not a test: nothing is asserted. Run (defaults: the issue's size, 50,000,000 posts by
5,000,000 users); `--scale` shrinks both for a quick run:

    .venv/bin/python bench/retention.py
    .venv/bin/python bench/retention.py --scale 0.02

1. Generate a synthetic lake with DuckDB straight to zstd Parquet in the lake layout
   (`<lake>/<table>/v-000001/part-*.parquet` + `CURRENT`): users created 2015-2024, 1% of
   accounts deleted; posts with random authors, 3% deleted. Then `consentry init` the home
   and place `--holds` user holds (legal holds on random users).
2. Consentry: `compute_plan` at `--at` under the shipped X policy (version 2024-11-15:
   posts kept while the account is active or until deleted, profiles while the account is
   active, ...) on embedded DuckDB — every category, the gaps and the input fingerprints;
   rows planned = posts + users (+ the small tables).
3. Peer: the posts and profile rules as pandas filters (pyarrow-backed dtypes: the fairest
   pandas for string ids): read the columns the rules need, merge posts with users and the
   held users, compute the due masks, count per action. On `--pandas-posts` posts (all
   users) when that is fewer than all posts, its time extrapolated linearly to all posts
   (memory would not allow the whole at 50M). When the peer ran on everything, its counts
   are compared with the plan's.
4. Each side runs in its own (spawned) process, so each peak RSS (`ru_maxrss`) is its own.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import load_note, print_table, rate, ratio, run_isolated, stopwatch

AT = "2026-06-01T00:00:00Z"
PART_ROWS = 5_000_000


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def generate(root: str, users: int, posts: int, holds: int, seed: int) -> dict[str, int]:
    """Write the synthetic lake with DuckDB and initialise the home; return row counts."""
    import random

    import duckdb

    from consentry.cli.admin import init_home
    from consentry.keys import Keyring
    from consentry.retention import add_hold
    from consentry.settings import Settings
    from consentry.store import open_store

    home = Path(root) / "home"
    settings = Settings(home=home)
    init_home(settings)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SELECT setseed({(seed % 1000) / 1000})")
    lake = settings.lake_dir

    def table(name: str, select: str, rows: int) -> None:
        snapshot = lake / name / "v-000001"
        snapshot.mkdir(parents=True)
        for part, start in enumerate(range(0, rows, PART_ROWS)):
            stop = min(rows, start + PART_ROWS)
            con.execute(
                f"COPY ({select.format(start=start, stop=stop)}) TO "
                f"'{snapshot / f'part-{part:06d}.parquet'}' (FORMAT parquet, COMPRESSION zstd)"
            )
        (lake / name / "CURRENT").write_text("v-000001\n")

    table(
        "users",
        "SELECT 'u' || i AS user_id, "
        "TIMESTAMPTZ '2015-01-01 00:00:00+00' "
        "+ to_seconds((hash(i) % 315360000)::BIGINT) AS created_at, "
        "CASE WHEN i % 5 = 0 THEN 'DE' ELSE 'US' END AS region, "
        "DATE '1970-01-01' + (hash(i * 7) % 15000)::INTEGER AS birth_date, "
        "(i % 13 = 0) AS protected, NULL::TIMESTAMPTZ AS deactivated_at, "
        "CASE WHEN hash(i * 3) % 100 = 0 THEN TIMESTAMPTZ '2024-01-01 00:00:00+00' "
        "+ to_seconds((hash(i * 5) % 80000000)::BIGINT) END AS deleted_at "
        "FROM range({start}, {stop}) t(i)",
        users,
    )
    table(
        "posts",
        "SELECT 'p' || i AS post_id, 'u' || (hash(i) % " + str(users) + ") AS author_id, "
        "TIMESTAMPTZ '2016-01-01 00:00:00+00' "
        "+ to_seconds((hash(i * 11) % 300000000)::BIGINT) AS created_at, "
        "'post ' || i AS text, 'public' AS visibility, 'en' AS lang, "
        "CASE WHEN hash(i * 13) % 100 < 3 THEN TIMESTAMPTZ '2025-01-01 00:00:00+00' "
        "+ to_seconds((hash(i * 17) % 40000000)::BIGINT) END AS deleted_at "
        "FROM range({start}, {stop}) t(i)",
        posts,
    )
    rng = random.Random(seed)
    with open_store(settings.resolved_database_url) as store:
        keyring = Keyring.for_settings(settings)
        for _ in range(holds):
            add_hold(
                store,
                keyring,
                matter="bench matter",
                reason="bench",
                scope="user",
                target=f"u{rng.randrange(users)}",
            )
    return {"users": users, "posts": posts}


def run_consentry(root: str, at: str, memory_limit: str) -> dict[str, Any]:
    """`compute_plan` on DuckDB, timed end to end (inputs, every category, fingerprints)."""
    from consentry.retention import compute_plan
    from consentry.settings import Settings

    settings = Settings(home=Path(root) / "home", duckdb_memory_limit=memory_limit)
    with stopwatch() as sw:
        plan = compute_plan(settings, at=_at(at), engine="duckdb")
    counted = ("total", "keep", "delete", "held")
    return {
        "seconds": sw.seconds,
        "posts": {k: getattr(plan.category("posts"), k) for k in counted},
        "profile": {k: getattr(plan.category("profile"), k) for k in counted},
        "plan_sha256": plan.plan_sha256,
    }


def run_pandas(root: str, at: str, posts_limit: int) -> dict[str, Any]:
    """The posts and profile rules of 2024-11-15 as pandas filters, on the first
    `posts_limit` posts and every user."""
    import pandas as pd
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    from consentry.engine import Lake
    from consentry.store import open_store
    from consentry.store.models import LegalHold

    home = Path(root) / "home"
    lake = Lake(home / "lake")
    at_ts = pd.Timestamp(_at(at))
    with stopwatch() as sw:
        with open_store(f"sqlite:///{home / 'consentry.db'}") as store, store.session() as s:
            held = {
                r[0]
                for r in s.execute(
                    sa.select(LegalHold.target).where(
                        LegalHold.scope == "user", LegalHold.released_at.is_(None)
                    )
                )
            }
        users = pd.concat(
            pq.read_table(f, columns=["user_id", "deleted_at"]).to_pandas(
                types_mapper=pd.ArrowDtype
            )
            for f in lake.files("users")
        )
        frames = []
        remaining = posts_limit
        for f in lake.files("posts"):
            if remaining <= 0:
                break
            part = pq.read_table(f, columns=["post_id", "author_id", "deleted_at"]).slice(
                0, remaining
            )
            remaining -= part.num_rows
            frames.append(part.to_pandas(types_mapper=pd.ArrowDtype))
        posts = pd.concat(frames)
        # posts: while_account_active, after_post_deleted 0 days.
        merged = posts.merge(
            users.rename(columns={"user_id": "author_id", "deleted_at": "account_deleted_at"}),
            on="author_id",
            how="left",
        )
        due = (merged["account_deleted_at"] <= at_ts).fillna(False) | (
            merged["deleted_at"] <= at_ts
        ).fillna(False)
        is_held = merged["author_id"].isin(held)
        post_counts = {
            "total": len(merged),
            "delete": int((due & ~is_held).sum()),
            "held": int((due & is_held).sum()),
        }
        post_counts["keep"] = post_counts["total"] - post_counts["delete"] - post_counts["held"]
        # profile: while_account_active.
        udue = (users["deleted_at"] <= at_ts).fillna(False)
        uheld = users["user_id"].isin(held)
        profile_counts = {
            "total": len(users),
            "delete": int((udue & ~uheld).sum()),
            "held": int((udue & uheld).sum()),
        }
        profile_counts["keep"] = (
            profile_counts["total"] - profile_counts["delete"] - profile_counts["held"]
        )
    return {
        "seconds": sw.seconds,
        "posts_done": len(posts),
        "users": len(users),
        "posts": post_counts,
        "profile": profile_counts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="Fraction of 50M posts / 5M users."
    )
    parser.add_argument("--pandas-posts", type=int, default=10_000_000, help="Posts for the peer.")
    parser.add_argument("--holds", type=int, default=100, help="User holds to place.")
    parser.add_argument("--at", default=AT, help="Plan instant (RFC 3339).")
    parser.add_argument("--duckdb-memory-limit", default="2GB", help="DuckDB memory limit.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="Keep the generated lake.")
    args = parser.parse_args()
    users = max(1000, int(5_000_000 * args.scale))
    posts = max(10_000, int(50_000_000 * args.scale))
    root = tempfile.mkdtemp(prefix="retention-bench-")
    try:
        started = time.perf_counter()
        generate(root, users, posts, args.holds, args.seed)
        print(
            f"generated {posts:,} posts, {users:,} users in {time.perf_counter() - started:.1f} s"
        )
        print(load_note())
        ours = run_isolated(run_consentry, root, args.at, args.duckdb_memory_limit)
        sample = min(posts, args.pandas_posts)
        theirs = run_isolated(run_pandas, root, args.at, sample)
        planned = posts + users
        ours_rate = rate(planned, ours.value["seconds"])
        peer_rows = theirs.value["posts_done"] + users
        peer_rate = rate(peer_rows, theirs.value["seconds"])
        extrapolated = planned / peer_rate if peer_rate else 0.0
        print_table(
            f"Retention planning: {posts:,} posts + {users:,} users (rows planned {planned:,})",
            ["side", "rows", "seconds", "rows/s", "peak RSS MiB"],
            [
                [
                    "consentry (DuckDB, all categories)",
                    planned,
                    ours.value["seconds"],
                    ours_rate,
                    ours.peak_rss_mib,
                ],
                [
                    "pandas (posts + profile rules)"
                    + (
                        ""
                        if sample == posts
                        else f", {sample:,} posts, extrapolated {extrapolated:,.1f} s"
                    ),
                    peer_rows,
                    theirs.value["seconds"],
                    peer_rate,
                    theirs.peak_rss_mib,
                ],
            ],
        )
        print(f"\nconsentry / pandas (rows/s): {ratio(ours_rate, peer_rate)}")
        print(f"consentry posts: {ours.value['posts']}; profile: {ours.value['profile']}")
        print(f"pandas posts:    {theirs.value['posts']}; profile: {theirs.value['profile']}")
        if sample == posts:
            agree = (
                ours.value["posts"] == theirs.value["posts"]
                and ours.value["profile"] == theirs.value["profile"]
            )
            print(f"counts agree: {agree}")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
