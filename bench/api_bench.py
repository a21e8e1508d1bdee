"""Benchmark: the consent API's single GET and PUT under load over loopback.

Not a test: nothing is asserted. Run (issue size: 3,000 subjects, 2 workers vs 1):

    .venv/bin/python bench/api_bench.py [--subjects 3000] [--duration 10] [--connections 16]
        [--generator both|wrk|python] [--workers 2] [--peer-workers 1]
        [--store sqlite|postgresql] [--endpoints GET,PUT] [--server-src DIR]
        [--log-level warning|info]

1. Build a temporary home (`init_home`), sync a few thousand subjects into the store with
   `ConsentLedger.sync_subjects` and import a few consent events per chooser with
   `ConsentLedger.import_events` (all generated with NumPy/Arrow); sign a user token per
   subject with the home's platform secret. The home (and, with `--store postgresql`, its
   database, as a template) is copied for each server so every run starts from the same
   state.
2. Start `consentry serve --workers N` on 127.0.0.1 on a free port in a subprocess (its
   code from `--server-src` when given: a checkout of another commit, for before/after
   comparisons on the same machine); wait for /healthz; warm every worker up.
3. Drive GET /v1/users/{id}/consent and PUT /v1/users/{id}/consent/ai_training_third_party
   with `wrk` when installed (`apt-get install -y wrk`; a small Lua script rotating users,
   their tokens and, for PUT, choices) and with a closed-loop asyncio + httpx generator
   (rotating users; bounded in requests and time).
4. Report requests, req/s, p50 and p99 latency and errors, the server's CPU per request
   and, on PostgreSQL, the database's (its backends serving the bench's database); the
   peer is the same app with `--peer-workers` (1; 0: none) worker, and the ratio of the two
   is printed.
The load generator shares the 2 cores with the server: wrk uses little CPU, the Python
generator a lot (its numbers understate the server).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from _common import (
    consent_population,
    group_cpu_seconds,
    latency_summary,
    load_note,
    pids_cpu_seconds,
    print_table,
    rate,
    ratio,
)

PURPOSE = "ai_training_third_party"
LOOPBACK = "127.0.0.1"
_WRK_INSTALL = "apt-get install -y wrk"


@dataclass(frozen=True, slots=True)
class Run:
    """One measured load: who served it, who drove it, what came back."""

    workers: int
    generator: str
    endpoint: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms: float
    """Server CPU (all its processes) per request: robust to other load on the machine."""
    db_cpu_ms: float
    """PostgreSQL CPU (the backends of the bench's database) per request; 0 on SQLite."""

    @property
    def per_second(self) -> float:
        return rate(self.requests, self.seconds)


# ----------------------------------------------------------------------------- the home


def build_home(
    home: Path, subjects: int, seed: int, database_url: str | None = None
) -> list[tuple[str, str]]:
    """Create a home with `subjects` users and some consent history; (user_id, token) each.
    The store is `database_url` when given (an empty database), else SQLite in the home."""
    from consentry.cli.admin import init_home
    from consentry.keys import Keyring
    from consentry.ledger.service import ConsentLedger
    from consentry.policy import load_policy
    from consentry.serving.auth import issue_token
    from consentry.settings import Settings
    from consentry.store import open_store

    settings = Settings(home=home, database_url=database_url)
    init_home(settings)
    users, events = consent_population(subjects, np.random.default_rng(seed))
    ids = users["user_id"]
    store = open_store(settings.resolved_database_url)
    try:
        keyring = Keyring.for_home(home)
        ledger = ConsentLedger(store, load_policy(settings.policy_file), keyring)
        ledger.sync_subjects(users)
        ledger.import_events(events)
    finally:
        store.close()
    secret = keyring.platform_secret
    return [(uid, issue_token(secret, uid, "user")) for uid in ids.to_pylist()]


# ----------------------------------------------------------------------------- the server


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class Databases:
    """Fresh PostgreSQL databases for the bench, created from a maintenance URL and dropped
    at the end (their names start with `consentry_apibench_`)."""

    def __init__(self, maintenance_url: str) -> None:
        import sqlalchemy as sa

        self.url = sa.make_url(maintenance_url)
        self.engine = sa.create_engine(self.url, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []

    def create(self, template: str | None = None) -> str:
        """A new database (a copy of `template` when given); its SQLAlchemy URL."""
        import sqlalchemy as sa

        name = f"consentry_apibench_{os.getpid()}_{len(self.created)}"
        copy = f" TEMPLATE {template}" if template else ""
        with self.engine.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
            conn.execute(sa.text(f"CREATE DATABASE {name}{copy}"))
        self.created.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    @staticmethod
    def cpu_seconds(name: str) -> dict[int, float]:
        """Per live PostgreSQL backend connected to database `name` (its process title names
        it), the CPU seconds it used so far."""
        return {
            pid: pids_cpu_seconds([pid])
            for pid, title in process_titles()
            if title.startswith("postgres:") and f" {name} " in f" {title} "
        }

    def close(self) -> None:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            for name in self.created:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        self.engine.dispose()


def process_titles() -> list[tuple[int, str]]:
    """(pid, command line as one string) of every process this user can see."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            found.append((int(entry), raw.replace(b"\0", b" ").decode(errors="replace").strip()))
    return found


class Server:
    """`consentry serve` in its own process group on a free loopback port."""

    def __init__(
        self,
        home: Path,
        workers: int,
        log: Path,
        *,
        database_url: str | None = None,
        source: Path | None = None,
        log_level: str = "warning",
    ) -> None:
        self.home = home
        self.workers = workers
        self.port = _free_port()
        self.log = log
        self.database_url = database_url
        self.source = source
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def cpu_seconds(self) -> float:
        """CPU used so far by the server's process group (supervisor and workers)."""
        return group_cpu_seconds(self.proc.pid) if self.proc is not None else 0.0

    def __enter__(self) -> Server:
        exe = Path(sys.executable).with_name("consentry")
        command = [str(exe), "--home", str(self.home), "serve", "--host", LOOPBACK]
        command += ["--port", str(self.port), "--workers", str(self.workers)]
        command += ["--log-level", self.log_level]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTRY_")}
        if self.database_url:
            env["CONSENTRY_DATABASE_URL"] = self.database_url
        if self.source is not None:
            # Ahead of the installed (editable) package: the server runs that tree's code.
            env["PYTHONPATH"] = str(self.source.resolve())
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + 90
        with httpx.Client(base_url=self.base, timeout=2, trust_env=False) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited early:\n{self.log.read_text()[-3000:]}")
                try:
                    if client.get("/healthz").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError(f"server not ready:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        # The group is the one this object started (start_new_session): uvicorn's
        # supervisor and its workers, nothing else.
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# ----------------------------------------------------------------------------- generators


def _get_path(uid: str) -> str:
    return f"/v1/users/{uid}/consent"


def _put_path(uid: str) -> str:
    return f"/v1/users/{uid}/consent/{PURPOSE}"


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _parse_wrk(output: str, connections: int) -> tuple[int, float, float, float, int]:
    """(requests, seconds, p50 ms, p99 ms, errors) from `wrk --latency` output.

    Warns when wrk's latencies contradict its own count: with `connections` closed-loop
    connections, mean latency x requests per second (the requests in flight, Little's law)
    cannot exceed `connections`. Now and then (about one run in four here) wrk 4.1 reports a
    mean ten times what its rate allows, with a p99 of hundreds of ms, while its rate is that
    of the runs around it; such a run's percentiles are not evidence of anything."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    p50 = re.search(r"^\s*50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s*99%\s+(\S+)", output, re.M)
    if not (done and p50 and p99):
        raise RuntimeError(f"cannot read wrk output:\n{output}")
    errors = 0
    if non2xx := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(non2xx.group(1))
    if sockets := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                            output):  # fmt: skip
        errors += sum(int(g) for g in sockets.groups())
    seconds = _ms(done.group(2) + done.group(3)) / 1000
    if mean := re.search(r"^\s*Latency\s+(\S+)", output, re.M):
        in_flight = _ms(mean.group(1)) / 1000 * int(done.group(1)) / seconds
        if in_flight > 1.5 * connections:
            print(
                f"  note: wrk's mean latency x rate puts {in_flight:.0f} requests in flight "
                f"with {connections} connections (Little's law allows {connections}): its "
                "latency figures for this run contradict its count; rerun before reading p99"
            )
    return int(done.group(1)), seconds, _ms(p50.group(1)), _ms(p99.group(1)), errors


_WRK_LUA = """
local users = {%(users)s}
local tokens = {%(tokens)s}
local n = #users
local i = math.random(n)
request = function()
  i = i %% n + 1
%(request)s
end
"""
_GET_REQUEST = """\
  return wrk.format("GET", "/v1/users/" .. users[i] .. "/consent",
    {["Authorization"] = "Bearer " .. tokens[i]})"""
_PUT_REQUEST = """\
  local choice = (i %% 2 == 0) and "allow" or "deny"
  return wrk.format("PUT", "/v1/users/" .. users[i] .. "/consent/%(purpose)s",
    {["Authorization"] = "Bearer " .. tokens[i], ["Content-Type"] = "application/json"},
    '{"choice":"' .. choice .. '"}')"""


def run_wrk(
    wrk: str,
    base: str,
    endpoint: str,
    subjects: list[tuple[str, str]],
    args: argparse.Namespace,
    scratch: Path,
) -> tuple[int, float, float, float, int]:
    """One wrk run against `endpoint`, a small Lua script rotating `--users` users and
    their tokens (and, for PUT, the choice)."""
    command = [wrk, "-t", str(args.wrk_threads), "-c", str(args.connections)]
    command += ["-d", f"{args.duration}s", "--timeout", "10s", "--latency"]
    script = scratch / f"{endpoint.lower()}.lua"
    picked = subjects[: args.users]
    request = _GET_REQUEST if endpoint == "GET" else _PUT_REQUEST % {"purpose": PURPOSE}
    script.write_text(
        _WRK_LUA
        % {
            "users": ",".join(json.dumps(u) for u, _ in picked),
            "tokens": ",".join(json.dumps(t) for _, t in picked),
            "request": request,
        }
    )
    command += ["-s", str(script), base + "/"]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    return _parse_wrk(done.stdout, args.connections)


async def _drive(
    base: str, plan: list[tuple[str, str, dict[str, str], bytes | None]], args: argparse.Namespace
) -> tuple[int, float, float, float, int]:
    """Closed loop: `concurrency` tasks each send a request, await it, send the next."""
    if not base.startswith(f"http://{LOOPBACK}:"):
        raise ValueError("the load generator only talks to loopback")
    latencies: list[float] = []
    errors = 0
    counter = itertools.count()
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=None)
    async with httpx.AsyncClient(
        base_url=base, limits=limits, timeout=10, trust_env=False
    ) as client:
        started = time.perf_counter()
        deadline = started + args.duration

        async def worker() -> None:
            nonlocal errors
            while (i := next(counter)) < args.py_requests and time.perf_counter() < deadline:
                method, path, headers, body = plan[i % len(plan)]
                sent = time.perf_counter()
                try:
                    response = await client.request(method, path, headers=headers, content=body)
                    ok = response.status_code < 400
                except httpx.TransportError:
                    ok = False
                latencies.append(time.perf_counter() - sent)
                errors += 0 if ok else 1

        await asyncio.gather(*(worker() for _ in range(args.connections)))
        elapsed = time.perf_counter() - started
    p50, p99, _ = latency_summary(latencies)
    return len(latencies), elapsed, p50, p99, errors


def run_python(
    base: str, endpoint: str, subjects: list[tuple[str, str]], args: argparse.Namespace
) -> tuple[int, float, float, float, int]:
    """The asyncio + httpx generator, rotating over every subject."""
    plan: list[tuple[str, str, dict[str, str], bytes | None]] = []
    for k, (uid, token) in enumerate(subjects):
        auth = {"Authorization": f"Bearer {token}"}
        if endpoint == "GET":
            plan.append(("GET", _get_path(uid), auth, None))
        else:
            body = json.dumps({"choice": "allow" if k % 2 else "deny"}).encode()
            headers = auth | {"Content-Type": "application/json"}
            plan.append(("PUT", _put_path(uid), headers, body))
    return asyncio.run(_drive(base, plan, args))


def warm_up(base: str, subjects: list[tuple[str, str]], workers: int) -> None:
    """Enough requests that every worker has served both endpoints (imports, caches)."""
    with httpx.Client(base_url=base, timeout=30, trust_env=False) as client:
        for uid, token in subjects[: 20 * workers]:
            auth = {"Authorization": f"Bearer {token}"}
            client.get(_get_path(uid), headers=auth).raise_for_status()
            client.put(_put_path(uid), headers=auth, json={"choice": "deny"}).raise_for_status()


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=3000, help="users in the store")
    parser.add_argument("--duration", type=int, default=10, help="seconds per load run")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--py-requests", type=int, default=30_000, help="cap per Python run")
    parser.add_argument("--users", type=int, default=500, help="users the wrk scripts rotate")
    parser.add_argument("--generator", choices=["both", "wrk", "python"], default="both")
    parser.add_argument("--workers", type=int, default=2, help="workers of the measured server")
    parser.add_argument(
        "--peer-workers", type=int, default=1, help="workers of the peer server (0: no peer)"
    )
    parser.add_argument("--endpoints", default="GET,PUT", help="GET, PUT or both (GET,PUT)")
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "CONSENTRY_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        help="maintenance database of the PostgreSQL server (--store postgresql)",
    )
    parser.add_argument(
        "--server-src",
        type=Path,
        default=None,
        help="run the servers from this source directory (a checkout's src/) instead",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        help="the servers' log level (info: one log line per request)",
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    endpoints = [e.strip().upper() for e in args.endpoints.split(",") if e.strip()]
    if not endpoints or set(endpoints) - {"GET", "PUT"}:
        parser.error("--endpoints takes GET, PUT or GET,PUT")

    wrk = shutil.which("wrk")
    generators = [g for g in ("wrk", "python") if args.generator in (g, "both")]
    if "wrk" in generators and wrk is None:
        print(f"wrk is not installed ({_WRK_INSTALL}); using the Python generator only")
        generators = ["python"]
    server_counts = [args.workers] + ([args.peer_workers] if args.peer_workers > 0 else [])

    runs: list[Run] = []
    databases = Databases(args.postgres_url) if args.store == "postgresql" else None
    try:
        with tempfile.TemporaryDirectory(prefix="consentry-apibench-") as tmp:
            scratch = Path(tmp)
            template = scratch / "template"
            started = time.perf_counter()
            template_url = databases.create() if databases else None
            subjects = build_home(template, args.subjects, args.seed, template_url)
            print(
                f"home: {args.subjects:,} subjects with consent history on {args.store}, built "
                f"in {time.perf_counter() - started:.1f} s; {args.connections} connections, "
                f"{args.duration} s per run, generators: {', '.join(generators)}"
                f"{'; server code from ' + str(args.server_src) if args.server_src else ''}; "
                f"{load_note()}"
            )
            for workers in server_counts:
                home = scratch / f"home-{workers}w"
                shutil.copytree(template, home)
                url = None
                if databases is not None and template_url is not None:
                    url = databases.create(template=template_url.rsplit("/", 1)[1])
                db_name = url.rsplit("/", 1)[1] if url else None
                log = scratch / f"server-{workers}w.log"
                with Server(home, workers, log, database_url=url, source=args.server_src) as server:
                    warm_up(server.base, subjects, workers)

                    def db_cpu(name: str | None = db_name) -> dict[int, float]:
                        return Databases.cpu_seconds(name) if name else {}

                    for generator in generators:
                        for endpoint in endpoints:
                            cpu_before, db_before = server.cpu_seconds(), db_cpu()
                            if generator == "wrk" and wrk is not None:
                                measured = run_wrk(
                                    wrk, server.base, endpoint, subjects, args, scratch
                                )
                            else:
                                measured = run_python(server.base, endpoint, subjects, args)
                            count = max(1, measured[0])
                            cpu_ms = (server.cpu_seconds() - cpu_before) * 1000 / count
                            # Backends alive at the end: what they used during the run (a
                            # backend that ended meanwhile is not counted).
                            db_used = sum(
                                cpu - db_before.get(pid, 0.0) for pid, cpu in db_cpu().items()
                            )
                            db_ms = db_used * 1000 / count
                            runs.append(Run(workers, generator, endpoint, *measured, cpu_ms, db_ms))
                            print(f"  measured {workers} worker(s), {generator}, {endpoint}")
                text = log.read_text(errors="replace")
                if any(r.errors for r in runs if r.workers == workers) and text.strip():
                    # Errors are non-2xx answers or socket errors/timeouts; the log says which.
                    tail = "\n    ".join(text.strip().splitlines()[-15:])
                    print(f"  server log ({workers} worker(s)), last lines:\n    {tail}")
    finally:
        if databases is not None:
            databases.close()

    by_key = {(r.workers, r.generator, r.endpoint): r for r in runs}
    rows: list[list[Any]] = []
    for r in runs:
        peer = by_key.get((args.peer_workers, r.generator, r.endpoint))
        vs = "-" if r.workers == args.peer_workers or peer is None else ratio(
            r.per_second, peer.per_second
        )  # fmt: skip
        rows.append(
            [
                f"{r.workers} worker(s)",
                r.generator,
                r.endpoint,
                r.requests,
                round(r.per_second),
                round(r.p50_ms, 2),
                round(r.p99_ms, 2),
                r.errors,
                round(r.cpu_ms, 2),
                round(r.db_cpu_ms, 2),
                vs,
            ]
        )
    print_table(
        f"consent API over loopback on {args.store} (GET /v1/users/{{id}}/consent, "
        f"PUT /v1/users/{{id}}/consent/{PURPOSE})",
        ["server", "generator", "endpoint", "requests", "req/s", "p50 ms", "p99 ms", "errors",
         "server CPU ms/req", "db CPU ms/req", f"vs {args.peer_workers} worker"],
        rows,
    )  # fmt: skip
    for endpoint in endpoints:
        head = by_key.get((args.workers, generators[0], endpoint))
        if head is None:
            continue
        cores = os.cpu_count() or 1
        per_request = head.cpu_ms + head.db_cpu_ms
        print(
            f"{endpoint}: {head.per_second:,.0f}/s, p99 {head.p99_ms:.1f} ms "
            f"({args.workers} workers, {head.generator}, {args.store}); CPU per request "
            f"{head.cpu_ms:.2f} ms server + {head.db_cpu_ms:.2f} ms database: a ceiling of "
            f"about {cores * 1000 / max(per_request, 1e-9):,.0f}/s with all {cores} cores; "
            f"{load_note()}"
        )


if __name__ == "__main__":
    main()
