"""Benchmark: import N posts rows from CSV with Consentry vs. the pandas way, in one run.

Not a test. Run: `.venv/bin/python bench/import_bench.py [--rows 2000000]`.

1. Generate a posts CSV with NumPy (ids, authors, UTC timestamps with offsets, texts with
   commas and quotes, visibilities, optional langs and deletions, 2% duplicate ids).
2. Consentry: `import_files` into an empty lake (read, validate, de-duplicate, zstd Parquet).
3. Peer: what a user would write with pandas — `read_csv`, the same validation in pandas
   (timestamps with offsets, enum, non-null), `drop_duplicates(keep="last")`, sort by key,
   `to_parquet` (zstd).
4. Print rows/s for each, the ratio and the peak memory (ru_maxrss; generation and each
   side run in fresh child processes so no one's memory hides another's).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

VISIBILITIES = np.array(["public", "unlisted", "protected", "direct"])
LANGS = np.array(["en", "fr", "de", "ja", ""])
WORDS = np.array(["consent", "data", "model", "hello", "world", "post", "shared", "quote"])


def generate(path: Path, rows: int, seed: int = 7) -> None:
    """Write a posts CSV of `rows` rows (vectorised NumPy string building)."""
    rng = np.random.default_rng(seed)
    # Unique ids, then 2% of rows repeat an earlier id (a re-exported post).
    ids = rng.permutation(rows)
    repeat = rng.random(rows) < 0.02
    ids[repeat] = ids[rng.integers(0, rows, int(repeat.sum()))]
    base = np.datetime64("2023-01-01T00:00:00", "s")
    created = base + rng.integers(0, 365 * 86400, rows).astype("timedelta64[s]")
    created_text = np.char.add(np.datetime_as_string(created, unit="s"), "Z")
    deleted = np.datetime_as_string(created + np.timedelta64(86400, "s"), unit="s")
    words = WORDS[rng.integers(0, len(WORDS), (rows, 3))]
    text = np.char.add(
        np.char.add(np.char.add(words[:, 0], ", "), np.char.add(words[:, 1], ' "')),
        np.char.add(words[:, 2], '"'),
    )
    langs = LANGS[rng.integers(0, len(LANGS), rows)]
    table = pa.table(
        {
            "post_id": np.char.add("p", ids.astype(str)),
            "author_id": np.char.add("u", rng.integers(0, rows // 10 + 1, rows).astype(str)),
            "created_at": created_text,
            "text": text,
            "visibility": VISIBILITIES[rng.integers(0, 4, rows)],
            "lang": pa.array(langs, mask=langs == ""),
            "deleted_at": pa.array(np.char.add(deleted, "+00:00"), mask=rng.random(rows) > 0.05),
        }
    )
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="needed"))


def run_consentry(csv: Path, out: Path) -> int:
    from consentry.engine import Lake
    from consentry.sources import import_files

    result = import_files(Lake(out), "posts", [csv])
    return result.rows_total


def run_pandas(csv: Path, out: Path) -> int:
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False, na_values=[""])
    problems = 0
    for column in ("post_id", "author_id", "created_at", "text", "visibility"):
        problems += int(frame[column].isna().sum())
    created = pd.to_datetime(frame["created_at"], utc=True, errors="coerce", format="ISO8601")
    problems += int(created.isna().sum())
    deleted = pd.to_datetime(frame["deleted_at"], utc=True, errors="coerce", format="ISO8601")
    problems += int((deleted.isna() & frame["deleted_at"].notna()).sum())
    problems += int((~frame["visibility"].isin(VISIBILITIES)).sum())
    if problems:
        raise SystemExit(f"pandas found {problems} problems")
    frame["created_at"] = created
    frame["deleted_at"] = deleted
    frame = frame.drop_duplicates("post_id", keep="last").sort_values("post_id")
    out.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out / "posts.parquet", compression="zstd", index=False)
    return len(frame)


def _child(name: str, csv: str, out: str, queue: mp.Queue[tuple[float, int, int]]) -> None:
    # Library imports happen before the clock starts, for both sides.
    import consentry.engine
    import consentry.sources  # noqa: F401

    start = time.perf_counter()
    total = (run_consentry if name == "consentry" else run_pandas)(Path(csv), Path(out))
    seconds = time.perf_counter() - start
    queue.put((seconds, total, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def measure(name: str, csv: Path, out: Path) -> tuple[float, int, int]:
    """(seconds, rows in result, peak RSS KiB) of one side, run in a fresh process."""
    ctx = mp.get_context("spawn")
    queue: mp.Queue[tuple[float, int, int]] = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, str(csv), str(out), queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000, help="rows to import")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="consentry-bench-"))
    try:
        csv = work / "posts.csv"
        t0 = time.perf_counter()
        # Generated in a child too: Linux keeps ru_maxrss across exec, so a big parent would
        # hide both sides' peaks.
        ctx = mp.get_context("spawn")
        child = ctx.Process(target=generate, args=(csv, args.rows))
        child.start()
        child.join()
        size = csv.stat().st_size / 1e6
        print(f"input: {args.rows:,} rows, {size:.0f} MB CSV ({time.perf_counter() - t0:.1f} s)")
        ours = measure("consentry", csv, work / "lake")
        peer = measure("pandas", csv, work / "pandas")
        if ours[1] != peer[1]:
            raise SystemExit(f"row counts differ: consentry {ours[1]}, pandas {peer[1]}")
        for label, (seconds, total, rss) in (("consentry", ours), ("pandas", peer)):
            print(
                f"{label:10s} {args.rows / seconds:12,.0f} rows/s  {seconds:6.2f} s  "
                f"{total:,} rows kept  peak RSS {rss / 1024:,.0f} MiB"
            )
        print(f"speed-up: {peer[0] / ours[0]:.2f}x (consentry vs pandas)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
