"""Benchmark: the vectorised demo generator vs a per-row Python `random` generator.

Run: `.venv/bin/python bench/demo_bench.py [--posts 1000000] [--sample 20000]`.

1. Generate the full demo (default 1,000,000 posts, posts/10 users, 60,000 access events)
   with `consentry.demo.generate` and time it.
2. Generate a sample of the same tables the way one would without vectorisation (a loop per
   row with `random`, f-string texts, `Table.from_pylist`), time it and extrapolate linearly
   to the full size.
3. Print rows/s of both, the ratio and the peak resident set size (`resource.getrusage`).
Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from consentry.demo import generate
from consentry.schema import arrow_schema

_PHRASES = ["Coffee first, then emails", "Acabo de terminar mi café", "雨の日は家で読書"]
_NAMES = ["maria", "jose", "yuki", "priya", "omar", "lukas", "emma", "chen"]
_REGIONS = ["DE", "FR", "ES", "GB", "US", "IN", "BR", "JP"]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _card(rnd: random.Random) -> str:
    payload = [4] + [rnd.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(payload)):
        total += (d * 2 - 9 if d > 4 else d * 2) if i % 2 == 0 else d
    return "".join(map(str, payload)) + str((10 - total % 10) % 10)


def _peer(out: Path, users: int, posts: int, access_events: int, seed: int) -> None:
    """The per-row generator a user would otherwise write (same tables, same kinds of data)."""
    rnd = random.Random(seed)
    start = datetime(2019, 1, 1, tzinfo=UTC)
    user_rows = []
    for i in range(users):
        created = start + timedelta(seconds=rnd.randrange(6 * 365 * 86_400))
        user_rows.append(
            {
                "user_id": str(10**18 + i),
                "created_at": created,
                "region": rnd.choice(_REGIONS),
                "birth_date": None if rnd.random() < 0.06 else datetime(1990, 1, 1).date(),
                "protected": rnd.random() < 0.08,
                "deactivated_at": None,
                "deleted_at": created + timedelta(days=30) if rnd.random() < 0.02 else None,
            }
        )
    weights = [1 / (r + 5) ** 1.1 for r in range(users)]
    authors = rnd.choices(range(users), weights=weights, k=posts)
    post_start = datetime(2022, 1, 1, tzinfo=UTC)
    created_at = sorted(
        post_start + timedelta(seconds=rnd.randrange(3 * 365 * 86_400)) for _ in range(posts)
    )
    post_rows = []
    for i, a in enumerate(authors):
        kind = rnd.random()
        text = rnd.choice(_PHRASES)
        if kind < 0.05:
            text += f" reach me at {rnd.choice(_NAMES)}{rnd.randrange(100)}@example.org"
        elif kind < 0.09:
            a3, b3, c4 = rnd.randrange(1000), rnd.randrange(1000), rnd.randrange(10000)
            text += f" +1 {a3:03d} {b3:03d} {c4:04d}"
        elif kind < 0.15:
            text += f" https://news.example.com/tech/{rnd.choice(_NAMES)}-{rnd.randrange(10**5)}"
        elif kind < 0.16:
            text += f" card {_card(rnd)}"
        post_rows.append(
            {
                "post_id": str(2 * 10**18 + i),
                "author_id": user_rows[a]["user_id"],
                "created_at": created_at[i],
                "text": text,
                "visibility": "public" if rnd.random() < 0.9 else "unlisted",
                "lang": "en",
                "deleted_at": None,
            }
        )
    access_rows = [
        {
            "request_id": f"req_{i:016x}",
            "ts": datetime(2025, 3, 3, tzinfo=UTC) + timedelta(seconds=rnd.randrange(7 * 86_400)),
            "credential": f"ak_{rnd.getrandbits(80):020x}",
            "posts": rnd.choice([0, 1, 5, 20, 100]),
            "endpoint": "/2/timeline/home",
        }
        for i in range(access_events)
    ]
    for name, rows in (("users", user_rows), ("posts", post_rows), ("access_events", access_rows)):
        table = pa.Table.from_pylist(rows, schema=arrow_schema(name))
        pq.write_table(table, out / f"{name}.parquet", compression="zstd")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=None, help="default: posts / 10")
    parser.add_argument("--access-events", type=int, default=60_000)
    parser.add_argument("--sample", type=int, default=20_000, help="posts for the per-row peer")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    users = args.users or max(100, args.posts // 10)

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        generate(
            Path(tmp) / "demo",
            users=users,
            posts=args.posts,
            access_events=args.access_events,
            seed=args.seed,
        )
        ours = time.perf_counter() - started
        rss_ours = _peak_rss_mb()

        scale = args.posts / args.sample
        peer_dir = Path(tmp) / "peer"
        peer_dir.mkdir()
        started = time.perf_counter()
        _peer(
            peer_dir,
            max(1, round(users / scale)),
            args.sample,
            max(1, round(args.access_events / scale)),
            args.seed,
        )
        peer = (time.perf_counter() - started) * scale

    print(
        f"demo generator : {args.posts:,} posts, {users:,} users, {args.access_events:,} requests"
    )
    print(f"  vectorised   : {ours:8.2f} s  {args.posts / ours:12,.0f} posts/s")
    print(
        f"  per-row peer : {peer:8.2f} s  {args.posts / peer:12,.0f} posts/s "
        f"(measured on {args.sample:,} posts, extrapolated)"
    )
    print(f"  ratio        : {peer / ours:8.1f}x faster")
    print(f"  peak RSS     : {rss_ours:8.0f} MB after the vectorised run, "
          f"{_peak_rss_mb():.0f} MB overall")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()
