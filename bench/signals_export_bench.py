"""Benchmark: every author's signal headers for an edge store (`consentry signals export`).

Not a test: nothing is asserted. Run:

    .venv/bin/python bench/signals_export_bench.py [--authors 1000000] [--events 100000]

1. Generate, vectorised, `--authors` adult subjects in six regions (two in the EU, one in
   the UK) and `--events` choices for third-party AI training (70% deny) on distinct authors.
2. Time, on the shipped policy at 2025-06-01: `signal_table` (bulk resolution of every
   AIPREF-mapped purpose, one header derivation per distinct vector, the mapping of authors
   to header sets), the snapshot and its digest, writing the full NDJSON with
   `atomic_write`, and `diff_snapshots` of two snapshots of every author.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from consentry.ledger.export import (
    _content_digest,
    _write_ndjson,
    atomic_write,
    diff_snapshots,
    signal_table,
    snapshot,
)
from consentry.policy import load_policy
from consentry.settings import DEFAULT_POLICY_FILE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    n, k = args.authors, min(args.events, args.authors)
    rng = np.random.default_rng(1)
    utc = pa.timestamp("us", tz="UTC")
    ids = pa.array(np.char.add("u", np.arange(n).astype(str)))
    subjects = pa.table(
        {
            "user_id": ids,
            "region": pa.array(
                np.array(["US", "FR", "JP", "DE", "BR", "GB"])[rng.integers(0, 6, n)]
            ),
            "birth_date": pa.array([date(1980, 1, 1)] * n, pa.date32()),
            "created_at": pa.nulls(n, utc),
            "deleted_at": pa.nulls(n, utc),
        }
    )
    chosen = rng.choice(n, k, replace=False)
    events = pa.table(
        {
            "user_id": ids.take(pa.array(chosen)),
            "purpose": pa.array(["ai_training_third_party"] * k),
            "choice": pa.array(np.where(rng.random(k) < 0.7, "deny", "allow")),
            "at": pa.array([datetime(2025, 1, 1, tzinfo=UTC)] * k, utc),
            "source": pa.array(["settings"] * k),
            "event_id": pa.array(np.char.add("e", np.arange(k).astype(str))),
        }
    )
    policy = load_policy(DEFAULT_POLICY_FILE)
    at = datetime(2025, 6, 1, tzinfo=UTC)
    t0 = time.perf_counter()
    table = signal_table(policy, subjects, events, at, "https://platform.example")
    t1 = time.perf_counter()
    snap = snapshot(table)
    _content_digest(snap)
    t2 = time.perf_counter()
    out = Path(tempfile.mkdtemp()) / "full.ndjson"
    everyone = table.authors["author_id"].combine_chunks()
    atomic_write(
        out,
        lambda p: _write_ndjson(p, table, everyone, pa.array([], pa.string()), {"cursor": "x"}),
    )
    t3 = time.perf_counter()
    diff_snapshots(snap, snap)
    t4 = time.perf_counter()
    print(f"authors {table.authors.num_rows:,}, header sets {len(table.header_sets)}")
    print(f"  signal_table (resolve, derive, map)  {t1 - t0:7.2f} s")
    print(f"  snapshot and digest                  {t2 - t1:7.2f} s")
    print(f"  full NDJSON, {out.stat().st_size / 1e6:6.1f} MB            {t3 - t2:7.2f} s")
    print(f"  diff of two full snapshots           {t4 - t3:7.2f} s")
    out.unlink()


if __name__ == "__main__":
    main()
