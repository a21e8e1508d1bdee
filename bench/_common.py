"""Helpers shared by the benchmarks: peak memory, timing, isolated runs and result tables.

Benchmarks are not tests: they measure and print, they never assert a timing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import statistics
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Measured",
    "Stopwatch",
    "group_cpu_seconds",
    "latency_summary",
    "load_note",
    "peak_rss_mib",
    "pids_cpu_seconds",
    "print_table",
    "rate",
    "ratio",
    "run_isolated",
    "stopwatch",
]


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (`ru_maxrss` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_note() -> str:
    """The 1-minute load average and core count, to print next to timings (other work on
    the machine slows every side down)."""
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds used so far by the live processes of process group `pgid`.

    Read from /proc (Linux): unlike throughput, CPU time per request barely depends on what
    else the machine is running, so it compares runs made under different loads.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        # After the command: state, ppid, pgrp, ... utime (12th), stime (13th).
        if fields is not None and int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def pids_cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU seconds used so far by the live processes `pids`."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / tick


@dataclass(slots=True)
class Stopwatch:
    """Seconds elapsed inside a `stopwatch()` block (set when the block ends)."""

    seconds: float = 0.0


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    """Time a block with `time.perf_counter`: `with stopwatch() as sw: ...; sw.seconds`."""
    watch = Stopwatch()
    started = time.perf_counter()
    try:
        yield watch
    finally:
        watch.seconds = time.perf_counter() - started


@dataclass(slots=True)
class Measured:
    """What one side of a benchmark returned from its own process, that process's peak,
    and the CPU seconds it used (user and system, all threads, the whole process)."""

    value: Any
    peak_rss_mib: float
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0


def _child(target: Callable[..., Any], args: tuple[Any, ...], queue: Any) -> None:
    try:
        value = target(*args)
    except BaseException:
        queue.put(("error", traceback.format_exc(), 0.0, (0.0, 0.0)))
        raise
    usage = resource.getrusage(resource.RUSAGE_SELF)
    queue.put(("ok", value, peak_rss_mib(), (usage.ru_utime, usage.ru_stime)))


def run_isolated(target: Callable[..., Any], *args: Any) -> Measured:
    """Run `target(*args)` in a fresh (spawned) process; return its value and peak RSS.

    1. A fresh process per side means no side's memory hides another's: Linux keeps
       `ru_maxrss` for the life of a process, so measuring in one process would only ever
       show the largest side.
    2. `target` must be a module-level function and its value picklable (it crosses a queue).
    3. A failure in the child is re-raised here as a RuntimeError carrying its traceback.
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, args, queue))
    proc.start()
    try:
        status, value, peak, (user, system) = queue.get()
    finally:
        proc.join()
    if status != "ok":
        raise RuntimeError(f"{getattr(target, '__name__', target)} failed:\n{value}")
    return Measured(value=value, peak_rss_mib=peak, cpu_user_s=user, cpu_system_s=system)


def rate(count: float, seconds: float) -> float:
    """Items per second (0 when no time was measured)."""
    return count / seconds if seconds > 0 else 0.0


def ratio(ours: float, theirs: float) -> str:
    """`ours / theirs` as a short "12.3x" string (rates: higher is better)."""
    if theirs <= 0:
        return "n/a"
    return f"{ours / theirs:,.1f}x"


def latency_summary(latencies_s: Sequence[float]) -> tuple[float, float, float]:
    """(p50, p99, max) in milliseconds of a list of latencies in seconds."""
    if not latencies_s:
        return (0.0, 0.0, 0.0)
    ordered = sorted(latencies_s)
    if len(ordered) == 1:
        p50 = p99 = ordered[0]
    else:
        cuts = statistics.quantiles(ordered, n=100, method="inclusive")
        p50, p99 = cuts[49], cuts[98]
    return (p50 * 1000, p99 * 1000, ordered[-1] * 1000)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print `rows` under `header` as an aligned plain-text table (numbers right-aligned)."""
    cells = [[str(h) for h in header]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [
        all(isinstance(row[i], int | float) for row in rows) if rows else False
        for i in range(len(header))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    print(f"\n{title}")
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))


POPULATION_REGIONS = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "BR", "IN", "JP", "CA", "MX")
POPULATION_PURPOSES = ("ai_training_third_party", "ai_training_first_party", "business_partners")


def consent_population(users: int, rng: Any) -> tuple[Any, Any]:
    """A synthetic platform's `users` table and consent history, drawn from `rng`.

    1. Users `u<10^9 + i>` created 2020-01-01, a region each, birth dates 1950-2011 (5 %
       unknown), 8 % protected.
    2. A third of them made 1 to 3 earlier choices among three purposes after 2024-11-15,
       allow or deny at random, so reads see real history.
    Returns (users, events) as Arrow tables in the lake's column names.
    """
    from datetime import UTC, date, datetime

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    def ids(prefix: str, n: int) -> Any:
        numbers = pa.array(np.arange(n, dtype=np.int64) + 10**9)
        return pc.binary_join_element_wise(prefix, pc.cast(numbers, pa.string()), "")

    utc = pa.timestamp("us", tz="UTC")
    regions = np.array(POPULATION_REGIONS)
    user_ids = ids("u", users)
    first_day = (date(1950, 1, 1) - date(1970, 1, 1)).days
    last_day = (date(2012, 1, 1) - date(1970, 1, 1)).days
    table = pa.table(
        {
            "user_id": user_ids,
            "created_at": pa.array(
                np.full(users, int(datetime(2020, 1, 1, tzinfo=UTC).timestamp() * 1e6)), utc
            ),
            "region": pa.array(regions[rng.integers(0, len(regions), users)]),
            "birth_date": pa.array(
                rng.integers(first_day, last_day, users).astype(np.int32),
                pa.date32(),
                mask=rng.random(users) < 0.05,
            ),
            "protected": pa.array(rng.random(users) < 0.08),
            "deactivated_at": pa.nulls(users, utc),
            "deleted_at": pa.nulls(users, utc),
        }
    )
    choosers = np.flatnonzero(rng.random(users) < 0.33)
    who = np.repeat(choosers, rng.integers(1, 4, len(choosers)))
    n = len(who)
    start = int(datetime(2024, 11, 15, tzinfo=UTC).timestamp() * 1e6)
    events = pa.table(
        {
            "event_id": ids("seed-", n),
            "user_id": user_ids.take(pa.array(who)),
            "purpose": pa.array(np.array(POPULATION_PURPOSES)[rng.integers(0, 3, n)]),
            "choice": pa.array(np.where(rng.random(n) < 0.5, "allow", "deny")),
            "at": pa.array(start + rng.integers(0, 180 * 86_400 * 10**6, n), utc),
            "source": pa.array(np.full(n, "settings")),
        }
    )
    return table, events
