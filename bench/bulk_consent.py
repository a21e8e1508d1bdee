"""Benchmark: the viral day's bulk path — 1,000,000 consent changes from a file into the lake,
the ledger and the audit log with `consentry import consent_events FILE`.

Not a test: nothing is asserted. Run:

    .venv/bin/python bench/bulk_consent.py [--changes 1000000] [--users 1000000]
        [--store sqlite|postgresql] [--server-src DIR]

1. Build a home (`consentry init`) and import `--users` accounts (`consentry import users`,
   not timed), so every change is by a user the platform knows.
2. Write the changes as a Parquet file (NumPy/Arrow): one per user, round robin, each a
   `deny` or `allow` of one of the policy's purposes made in the last day, source `settings`.
3. Time `consentry import consent_events FILE` (its own process, as an operator runs it;
   with `--server-src` the command runs that checkout's code, for before/after runs).
4. Check what arrived: the ledger's events, the consent state rows, the audit log's
   `consent.imported` event and its `events_new`; and `consentry doctor` (not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from _common import load_note, print_table, rate

PURPOSES = np.array(["ai_training_third_party", "ai_training_first_party", "business_partners"])
REGIONS = np.array(["US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "JP", "CA", "MX"])


def _cli(home: Path, env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "consentry.cli", "--home", str(home), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"consentry {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return seconds, done.stdout


def write_users(path: Path, users: int, seed: int) -> pa.Array:
    rng = np.random.default_rng(seed)
    utc = pa.timestamp("us", tz="UTC")
    ids = pc.binary_join_element_wise(
        "u", pc.cast(pa.array(np.arange(users, dtype=np.int64) + 10**11), pa.string()), ""
    )
    created = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp() * 1e6)
    pq.write_table(
        pa.table(
            {
                "user_id": ids,
                "created_at": pa.array(np.full(users, created), utc),
                "region": pa.array(REGIONS[rng.integers(0, len(REGIONS), users)]),
                "birth_date": pa.array(
                    rng.integers(-7300, 12000, users).astype(np.int32), pa.date32()
                ),
                "protected": pa.array(np.zeros(users, dtype=bool)),
                "deactivated_at": pa.nulls(users, utc),
                "deleted_at": pa.nulls(users, utc),
            }
        ),
        path,
    )
    return ids


def write_changes(path: Path, ids: pa.Array, changes: int, seed: int) -> None:
    rng = np.random.default_rng(seed + 1)
    who = np.arange(changes, dtype=np.int64) % len(ids)
    now = int(datetime.now(UTC).timestamp() * 1e6)
    pq.write_table(
        pa.table(
            {
                "event_id": pc.binary_join_element_wise(
                    "viral-", pc.cast(pa.array(np.arange(changes, dtype=np.int64)), pa.string()), ""
                ),
                "user_id": ids.take(pa.array(who)),
                "purpose": pa.array(PURPOSES[rng.integers(0, len(PURPOSES), changes)]),
                "choice": pa.array(np.where(rng.random(changes) < 0.9, "deny", "allow")),
                "at": pa.array(
                    now - 3_600 * 10**6 - rng.integers(0, 20 * 3_600 * 10**6, changes),
                    pa.timestamp("us", tz="UTC"),
                ),
                "source": pa.array(np.full(changes, "settings")),
            }
        ),
        path,
    )


def arrived(home: Path, database_url: str | None) -> dict[str, Any]:
    """Events, state rows and the import's audit event, read from the store."""
    import sqlalchemy as sa

    from consentry.settings import Settings
    from consentry.store import open_store
    from consentry.store.models import AuditEventRow, ConsentEventRow, ConsentStateRow

    settings = Settings(home=home, database_url=database_url)
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        events = session.scalar(sa.select(sa.func.count()).select_from(ConsentEventRow))
        states = session.scalar(sa.select(sa.func.count()).select_from(ConsentStateRow))
        payload = session.scalar(
            sa.select(AuditEventRow.payload)
            .where(AuditEventRow.event_type == "consent.imported")
            .order_by(AuditEventRow.seq.desc())
            .limit(1)
        )
    return {"events": events, "states": states, "audit": json.loads(payload or "{}")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "CONSENTRY_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--server-src", type=Path, default=None, help="run that checkout's code")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-doctor", action="store_true")
    args = parser.parse_args(argv)

    from api_bench import Databases

    databases = Databases(args.postgres_url) if args.store == "postgresql" else None
    try:
        with tempfile.TemporaryDirectory(prefix="consentry-bulk-") as tmp:
            scratch = Path(tmp)
            home = scratch / "home"
            url = databases.create() if databases else None
            env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTRY_")}
            if url:
                env["CONSENTRY_DATABASE_URL"] = url
            if args.server_src is not None:
                env["PYTHONPATH"] = str(args.server_src.resolve())
            _cli(home, env, "init")
            ids = write_users(scratch / "users.parquet", args.users, args.seed)
            setup, _ = _cli(home, env, "import", "users", str(scratch / "users.parquet"))
            write_changes(scratch / "changes.parquet", ids, args.changes, args.seed)
            print(
                f"{args.users:,} users imported in {setup:.1f} s on {args.store}"
                f"{'; code from ' + str(args.server_src) if args.server_src else ''}; "
                f"{load_note()}"
            )
            seconds, _ = _cli(
                home, env, "import", "consent_events", str(scratch / "changes.parquet")
            )
            found = arrived(home, url)
            doctor = "skipped"
            if not args.skip_doctor:
                check = subprocess.run(
                    [sys.executable, "-m", "consentry.cli", "--home", str(home), "doctor"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                doctor = "clean" if check.returncode == 0 else f"FAILED:\n{check.stdout}"
    finally:
        if databases is not None:
            databases.close()
    print_table(
        f"{args.changes:,} consent changes from a file (consentry import consent_events)",
        ["store", "changes", "seconds", "changes/s", "ledger events", "state rows",
         "audit events_new", "doctor"],
        [[args.store, args.changes, round(seconds, 1), round(rate(args.changes, seconds)),
          found["events"], found["states"], found["audit"].get("events_new"), doctor]],
    )  # fmt: skip


if __name__ == "__main__":
    main()
