"""Benchmark: each data-plane job's throughput per core on DuckDB and on Spark (in-process and
on a standalone cluster), the figures behind docs/scale.md.

Not a test: nothing is asserted. Run (defaults: 250,000 and 1,000,000 posts, ~8 minutes on
2 cores):

    .venv/bin/python bench/scale.py [--sizes 250000,1000000]
        [--engines duckdb,spark-local,spark-cluster] [--jobs resolve,deliver,plan,assess]

1. For each size N: a home holding a generated platform of N posts by N/10 users with N
   access events (`consentry demo generate`) and a licensee for third-party AI training.
2. Each job is a `consentry` process of its own, as an operator runs it, with `--engine`:
   `consent resolve ai_training_third_party` (every user's decision), `deliver lab` (every
   post judged, the eligible ones minimised, pseudonymised and written), `retention plan`
   (every record of every category against the rules) and `scraping assess` (every access
   event attributed, each entity's densest 24 hours found and billed). `spark-local` runs
   Spark's `local[2]` inside the process; `spark-cluster` a standalone master and one
   worker with 2 cores, started from the installed pyspark as the tests start it
   (`tests.services.spark_standalone`).
3. Wall time; CPU seconds of everything the job ran (the process and its children, and on
   the cluster the worker's executors); the largest process's peak RSS.
4. Marginal throughput: rows at the larger size minus rows at the smaller, over the time
   between them. The fixed costs (interpreter and JVM start, imports, signing) cancel out,
   which is what a platform's volume is made of; per core is that over the 2 cores every
   engine here uses. The peer is the other engine: each job prints DuckDB's marginal rate
   over each Spark's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _common import load_note, print_table, rate, ratio

ROOT = Path(__file__).resolve().parents[1]
CORES = 2
AS_OF = "2026-12-01T00:00:00Z"
PURPOSE = "ai_training_third_party"
JOBS: dict[str, tuple[str, ...]] = {
    "resolve": ("consent", "resolve", PURPOSE, "--at", AS_OF, "--json"),
    "deliver": ("deliver", "lab", "--as-of", AS_OF, "--json"),
    "plan": ("retention", "plan", "--at", AS_OF, "--json"),
    "assess": ("scraping", "assess", "--json"),
}
"""Job -> the `consentry` arguments it runs (`--engine` is added)."""
ROWS_OF: dict[str, str] = {"resolve": "users", "deliver": "posts", "assess": "access_events"}
"""Which input a job's throughput counts (the plan counts every record it judged)."""


@dataclass(slots=True)
class Run:
    size: int
    engine: str
    job: str
    rows: int
    seconds: float
    cpu_seconds: float
    peak_mib: float


class GroupSampler:
    """CPU seconds and resident memory of process groups, sampled from /proc every 0.1 s.

    Each process's last seen user + system time is kept, so the processes that end during
    the job (an executor, the JVM a driver started) still count; what one uses in its last
    0.1 s is missed, next to the tens of seconds being measured."""

    def __init__(self, groups: list[int]) -> None:
        self.groups = set(groups)
        self.cpu_ticks: dict[int, int] = {}
        self.peak_rss = 0

    def sample(self) -> None:
        rss = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in self.groups:
                self.cpu_ticks[int(entry)] = int(fields[11]) + int(fields[12])
                rss += int(fields[21]) * PAGE
        self.peak_rss = max(self.peak_rss, rss)

    def cpu_seconds(self) -> float:
        return sum(self.cpu_ticks.values()) / TICK


PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def consentry(home: Path, *args: str, env: dict[str, str] | None = None) -> str:
    """`consentry --home HOME ARGS` in a process of its own; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "consentry.cli", "--home", str(home), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"consentry {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def build_home(root: Path, posts: int, seed: int) -> tuple[Path, dict[str, int]]:
    """A home with a generated platform of `posts` posts; the row counts jobs read."""
    home = root / f"home-{posts}"
    consentry(home, "init")
    generated = json.loads(
        consentry(home, "demo", "generate", "--users", str(max(posts // 10, 100)), "--posts",
                  str(posts), "--access-events", str(posts), "--seed", str(seed), "--json")
    )  # fmt: skip
    consentry(home, "licensee", "add", "lab", "--purpose", PURPOSE, "--json")
    return home, _row_counts(generated)


def _row_counts(generated: dict[str, Any]) -> dict[str, int]:
    """Row counts of the generated tables, from `demo generate --json`."""
    return {str(k): int(v) for k, v in generated["facts"]["rows"].items()}


def run_job(home: Path, job: str, engine: str, env: dict[str, str], cluster_pgid: int | None
            ) -> tuple[float, float, float, dict[str, Any]]:  # fmt: skip
    """(seconds, CPU seconds, peak MiB of the job's processes together, the job's JSON)."""
    args = [sys.executable, "-m", "consentry.cli", "--home", str(home), *JOBS[job], "--engine",
            "duckdb" if engine == "duckdb" else "spark"]  # fmt: skip
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(args, env=env, stdout=out, stderr=err, start_new_session=True)
        # The cluster's executors run in its worker's process group; counted from their
        # first sample, so only the ones this job starts.
        before = GroupSampler([cluster_pgid] if cluster_pgid else [])
        before.sample()
        sampler = GroupSampler([process.pid, *([cluster_pgid] if cluster_pgid else [])])
        while process.poll() is None:
            sampler.sample()
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        if process.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(args[3:])} failed:\n{err.read()[-3000:]}")
        if cluster_pgid:
            time.sleep(1)  # the executors' last work, reported as they end
            sampler.sample()
        cpu = (
            sampler.cpu_seconds()
            - sum(before.cpu_ticks.get(pid, 0) for pid in sampler.cpu_ticks) / TICK
        )
        out.seek(0)
        answer = json.loads(out.read())
    return seconds, cpu, sampler.peak_rss / 2**20, answer


@contextmanager
def engines(
    names: list[str], scratch: Path
) -> Iterator[dict[str, tuple[dict[str, str], int | None]]]:
    """Engine name -> (the environment its jobs run in, the cluster's process group)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTRY_")}
    found: dict[str, tuple[dict[str, str], int | None]] = {}
    with ExitStack() as stack:
        for name in names:
            if name == "duckdb":
                found[name] = (base, None)
            elif name == "spark-local":
                found[name] = ({**base, "CONSENTRY_SPARK_MASTER": f"local[{CORES}]"}, None)
            elif name == "spark-cluster":
                sys.path.insert(0, str(ROOT))
                from tests.services import spark_standalone

                folder = scratch / "cluster"
                folder.mkdir()
                cluster = stack.enter_context(spark_standalone(folder, cores=CORES, memory="4g"))
                found[name] = (
                    {**base, "CONSENTRY_SPARK_MASTER": cluster.master},
                    cluster.worker_group,
                )
            else:
                raise SystemExit(f"unknown engine {name!r}: duckdb, spark-local, spark-cluster")
        yield found


def rows_for(job: str, counts: dict[str, int], answer: dict[str, Any]) -> int:
    """The rows `job` worked through: its input table's size (retention: every record the
    plan looked at, from its own answer)."""
    if job == "plan":
        return sum(int(c["total"]) for c in answer["categories"])
    return counts[ROWS_OF[job]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="250000,1000000", help="posts per home, comma-separated")
    parser.add_argument("--engines", default="duckdb,spark-local,spark-cluster")
    parser.add_argument("--jobs", default="resolve,deliver,plan,assess")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    if set(jobs) - set(JOBS) or len(sizes) < 2:
        parser.error(f"--jobs takes {', '.join(JOBS)}; --sizes takes two sizes or more")
    names = [e.strip() for e in args.engines.split(",") if e.strip()]
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="consentry-scale-") as tmp:
        scratch = Path(tmp)
        homes = {}
        for size in sizes:
            started = time.perf_counter()
            homes[size] = build_home(scratch, size, args.seed)
            print(f"home of {size:,} posts built in {time.perf_counter() - started:.0f} s: "
                  f"{homes[size][1]}; {load_note()}", flush=True)  # fmt: skip
        with engines(names, scratch) as environments:
            for job in jobs:
                for engine, (env, pgid) in environments.items():
                    for size in sizes:
                        home, counts = homes[size]
                        seconds, cpu, peak, answer = run_job(home, job, engine, env, pgid)
                        rows = rows_for(job, counts, answer)
                        runs.append(Run(size, engine, job, rows, seconds, cpu, peak))
                        print(f"  {job:8} {engine:13} {size:>10,} posts: {rows:>11,} rows in "
                              f"{seconds:6.1f} s, {cpu:6.1f} CPU s, peak {peak:,.0f} MiB",
                              flush=True)  # fmt: skip
    report(runs, sizes)


def report(runs: list[Run], sizes: list[int]) -> None:
    """Per job and engine: each size's rate, then the marginal rate and its per core."""
    small, large = sizes[0], sizes[-1]
    table = []
    marginal: dict[tuple[str, str], float] = {}
    for job in dict.fromkeys(r.job for r in runs):
        for engine in dict.fromkeys(r.engine for r in runs if r.job == job):
            by_size = {r.size: r for r in runs if r.job == job and r.engine == engine}
            a, b = by_size[small], by_size[large]
            seconds, cpu = b.seconds - a.seconds, b.cpu_seconds - a.cpu_seconds
            # Sizes too close for the difference to stand out of the noise: no marginal rate.
            measurable = seconds > 0.1 * b.seconds and cpu > 0
            if measurable:
                marginal[(job, engine)] = (b.rows - a.rows) / seconds
            here = marginal.get((job, engine))
            duck = marginal.get((job, "duckdb"))
            table.append([
                job, engine, f"{a.rows:,} / {b.rows:,}", f"{a.seconds:.1f} / {b.seconds:.1f}",
                f"{rate(b.rows, b.seconds):,.0f}",
                f"{here:,.0f}" if here else "-",
                f"{here / CORES:,.0f}" if here else "-",
                f"{(b.rows - a.rows) / cpu:,.0f}" if measurable else "-",
                f"{b.peak_mib:,.0f}",
                ratio(duck, here) if duck and here and engine != "duckdb" else "-",
            ])  # fmt: skip
    print_table(
        f"data-plane jobs, {small:,} and {large:,} posts ({load_note()})",
        ["job", "engine", "rows", "seconds", "rows/s at the larger", "marginal rows/s",
         "per core", "per CPU second", "peak MiB", "duckdb is"],
        table,
    )  # fmt: skip


if __name__ == "__main__":
    main()
