"""Benchmark: the public signals endpoint, per post and per author, through the ASGI app
and through a real server.

Not a test: nothing is asserted. Run (issue target: >= 5,000 lookups/s on this machine):

    .venv/bin/python bench/public_signals.py [--users 20000] [--posts 200000]
        [--requests 20000] [--concurrency 8] [--seed 7]
        [--server-workers 2] [--server-duration 10] [--server-connections 32]
        [--server-threads 2] [--server-log-level info] [--server-src DIR] [--no-server]

1. Build a temporary home (`init_home`): `--users` subjects (`ConsentLedger.sync_subjects`)
   with a third of them having made 1 to 3 consent choices (`import_events`), and a
   `posts` table of `--posts` rows in the lake (authors drawn from the users, plus 2 %
   posts of authors Consentry does not know). All generated with NumPy and Arrow.
2. Ours: `GET /v1/public/signals/posts/{post_id}` and `GET /v1/public/signals/authors/{id}`
   through the whole app (`create_app`: its middlewares, routing, problem handling) with
   a real HTTP client, httpx's `AsyncClient` on an `ASGITransport`, `--concurrency`
   requests in flight, rotating over random posts or authors; every answer must be 200.
3. Peer: the authenticated `GET /v1/users/{id}/signals` (a user's own token), the route
   that existed before, driven the same way. And the app alone: the same random authors
   (and posts) handed to the ASGI app as ASGI calls, with no HTTP client in the process
   (httpx's own work is most of the CPU of the rows above).
4. Also: building the post -> author index from the lake (rows/s), and what a DuckDB point
   query per post over the snapshot's Parquet would cost instead (the alternative the
   in-memory index replaces).
5. A real server: `consentry serve --workers N` on the same home (`api_bench.Server`; its
   code from `--server-src` when given, for a before/after on one machine), driven by
   `wrk -t T -c C -d D` with a Lua script rotating over random authors (or posts) drawn
   like the in-process sides (each wrk thread starts at its own place in the list), or by
   the closed-loop httpx generator of `api_bench` when wrk is not installed. Authors and
   posts uniformly at random (each worker then answers most requests from the ledger:
   20,000 authors are rarely asked twice within its cache's 1 s), and authors drawn from
   a Zipf law (s = 1.1; a platform's page views: popular authors are asked again and
   again). Reported: requests per second, per CPU-second of the server's processes (read
   from /proc: steadier than the rate when the machine is shared), the load generator's
   CPU per request, and the ceiling they imply: the requests per second all the cores
   would carry with nothing else running (cores / the CPU seconds of both per request).
Each side runs in its own process (`run_isolated`), so each peak RSS is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from _common import (
    consent_population,
    load_note,
    print_table,
    rate,
    ratio,
    run_isolated,
    stopwatch,
)


def build_home(home: Path, users: int, posts: int, seed: int) -> None:
    """A home with `users` subjects, some consent history and `posts` posts in the lake."""
    from consentry.cli.admin import init_home
    from consentry.engine.lake import Lake
    from consentry.keys import Keyring
    from consentry.ledger.service import ConsentLedger
    from consentry.policy import load_policy
    from consentry.schema import arrow_schema
    from consentry.settings import Settings
    from consentry.store import open_store

    settings = Settings(home=home)
    init_home(settings)
    rng = np.random.default_rng(seed)
    utc = pa.timestamp("us", tz="UTC")
    subjects, events = consent_population(users, rng)
    ids = subjects["user_id"]
    start = int(datetime(2024, 11, 15, tzinfo=UTC).timestamp() * 1e6)
    store = open_store(settings.resolved_database_url)
    try:
        ledger = ConsentLedger(store, load_policy(settings.policy_file), Keyring.for_home(home))
        ledger.sync_subjects(subjects)
        ledger.import_events(events)
    finally:
        store.close()
    # 2 % of the posts are by authors Consentry was never told about.
    authors = ids.take(pa.array(rng.integers(0, users, posts)))
    strangers = rng.random(posts) < 0.02
    authors = pc.if_else(pa.array(strangers), _ids("stranger-", posts), authors)
    table = pa.table(
        {
            "post_id": _ids("p", posts),
            "author_id": authors,
            "created_at": pa.array(np.full(posts, start), utc),
            "text": pa.array(np.full(posts, "a post")),
            "visibility": pa.array(np.full(posts, "public")),
            "lang": pa.nulls(posts, pa.string()),
            "deleted_at": pa.nulls(posts, utc),
        },
        schema=arrow_schema("posts"),
    )
    Lake.of(settings).write_arrow("posts", table)


def _post_id(index: Any, i: int) -> str:
    """The index's `i`-th post id (also with the code before `PostAuthorIndex.post_id`, for
    a before/after run)."""
    if hasattr(index, "post_id"):
        return str(index.post_id(i))
    return str(index.post_ids[i].decode())


def _ids(prefix: str, n: int) -> pa.Array:
    return pc.binary_join_element_wise(
        prefix, pc.cast(pa.array(np.arange(n, dtype=np.int64) + 10**9), pa.string()), ""
    )


def drive(home: str, kind: str, requests: int, concurrency: int, seed: int) -> dict[str, Any]:
    """Run `requests` lookups of `kind` through the app; their count, seconds and statuses.

    `kind`: `post` or `author` (public, no token) or `peer` (the authenticated route)."""
    import httpx

    from consentry.api.app import create_app
    from consentry.keys import Keyring
    from consentry.serving.auth import issue_token
    from consentry.settings import Settings

    settings = Settings(home=Path(home))
    app = create_app(settings)
    svc = app.state.services
    users = [
        r[0] for r in svc.store.engine.connect().exec_driver_sql("SELECT user_id FROM subjects")
    ]
    rng = np.random.default_rng(seed)
    posts = svc.post_authors.index()
    if kind == "floor":
        paths = ["/.well-known/gpc.json"] * requests
        headers: list[dict[str, str]] = [{}] * requests
    elif kind == "post":
        chosen = rng.integers(0, len(posts), requests)
        paths = [f"/v1/public/signals/posts/{_post_id(posts, i)}" for i in chosen]
        headers = [{}] * requests
    else:
        picks = [users[i] for i in rng.integers(0, len(users), requests)]
        if kind == "author":
            paths = [f"/v1/public/signals/authors/{u}" for u in picks]
            headers = [{}] * requests
        else:
            secret = Keyring.for_home(settings.home).platform_secret
            tokens = {u: issue_token(secret, u, "user") for u in set(picks)}
            paths = [f"/v1/users/{u}/signals" for u in picks]
            headers = [{"Authorization": f"Bearer {tokens[u]}"} for u in picks]

    async def run() -> tuple[float, float, dict[int, int]]:
        statuses: dict[int, int] = {}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for i in range(min(200, requests)):  # warm up
                await client.get(paths[i], headers=headers[i])

            async def worker(start: int) -> None:
                for i in range(start, requests, concurrency):
                    response = await client.get(paths[i], headers=headers[i])
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

            cpu = time.process_time()
            with stopwatch() as sw:
                await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return sw.seconds, time.process_time() - cpu, statuses

    seconds, cpu, statuses = asyncio.run(run())
    return {"requests": requests, "seconds": seconds, "cpu": cpu, "statuses": statuses}


def direct(home: str, requests: int, seed: int) -> dict[str, Any]:
    """The endpoint's own work without HTTP: post -> author -> resolved signals -> header
    fields, as function calls (what the ASGI app adds is the difference)."""
    from consentry.api.signals import author_signals_now
    from consentry.ledger.signals import author_header_fields, site_default_signals
    from consentry.serving.services import Services
    from consentry.settings import Settings

    svc = Services.build(Settings(home=Path(home)))
    posts = svc.post_authors.index()
    rng = np.random.default_rng(seed)
    ids = [_post_id(posts, i) for i in rng.integers(0, len(posts), requests)]
    refused = 0
    cpu = time.process_time()
    with stopwatch() as sw:
        for post_id in ids:
            author = svc.post_authors.author_of(post_id)
            signals = site_default_signals() if author is None else author_signals_now(svc, author)
            refused += signals.tdm_reservation
            author_header_fields(signals, "https://platform.example")
    return {"requests": requests, "seconds": sw.seconds, "cpu": time.process_time() - cpu,
            "statuses": {200: requests}, "refused": refused}  # fmt: skip


def app_alone(home: str, kind: str, requests: int, seed: int) -> dict[str, Any]:
    """`requests` GETs of random authors (or posts) handed to the ASGI app as ASGI calls,
    one after the other: the app's own CPU per request, with no HTTP client."""
    from consentry.api.app import create_app
    from consentry.settings import Settings

    app = create_app(Settings(home=Path(home)))
    paths = served_paths(home, kind, requests, seed)
    statuses: dict[int, int] = {}

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1

    async def call(path: str) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "headers": [(b"host", b"bench")],
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {},
        }  # fmt: skip
        await app(scope, receive, send)

    async def run() -> tuple[float, float]:
        for path in paths[:200]:  # warm up (their answers may stay in the cache)
            await call(path)
        statuses.clear()
        cpu = time.process_time()
        with stopwatch() as sw:
            for path in paths:
                await call(path)
        return sw.seconds, time.process_time() - cpu

    seconds, cpu = asyncio.run(run())
    return {"requests": requests, "seconds": seconds, "cpu": cpu, "statuses": statuses}


def index_build(home: str) -> dict[str, Any]:
    """Build the post -> author index from the lake's live snapshot; its size in bytes."""
    from consentry.engine.lake import Lake
    from consentry.engine.post_authors import PostAuthors

    index = PostAuthors(Lake(Path(home) / "lake"))
    with stopwatch() as sw:
        built = index.index()
    size = built.post_ids.nbytes + built.author_codes.nbytes + sum(map(len, built.authors))
    return {"rows": len(built), "seconds": sw.seconds, "bytes": size}


def duckdb_points(home: str, lookups: int, seed: int) -> dict[str, Any]:
    """The alternative: one DuckDB point query per post over the snapshot's Parquet."""
    import duckdb

    from consentry.engine.lake import Lake

    files = [str(f) for f in Lake(Path(home) / "lake").files("posts")]
    con = duckdb.connect()
    con.execute(f"CREATE VIEW posts AS SELECT * FROM read_parquet({files!r})")
    rng = np.random.default_rng(seed)
    count = con.execute("SELECT count(*) FROM posts").fetchone()[0]  # type: ignore[index]
    ids = [f"p{10**9 + int(i)}" for i in rng.integers(0, count, lookups)]
    with stopwatch() as sw:
        for post_id in ids:
            con.execute("SELECT author_id FROM posts WHERE post_id = ?", [post_id]).fetchone()
    return {"requests": lookups, "seconds": sw.seconds}


_ROTATE_LUA = """
local paths = {%(paths)s}
local n = #paths
local started = 0
function setup(thread)
  thread:set("offset", started)
  started = started + 1
end
function init(args)
  i = math.floor(offset * n / %(threads)d)
end
function request()
  i = i %% n + 1
  return wrk.format("GET", paths[i])
end
"""


def served_paths(home: str, kind: str, count: int, seed: int) -> list[str]:
    """`count` request paths of `kind` (`author` or `post`), drawn at random (with repeats)
    from the home's users or posts; `author, zipf`: authors drawn from a Zipf law (s = 1.1)
    over a random order of the users."""
    from consentry.engine.lake import Lake
    from consentry.engine.post_authors import PostAuthors
    from consentry.store import open_store

    rng = np.random.default_rng(seed)
    if kind == "post":
        posts = PostAuthors(Lake(Path(home) / "lake")).index()
        return [
            f"/v1/public/signals/posts/{_post_id(posts, i)}"
            for i in rng.integers(0, len(posts), count)
        ]
    store = open_store(f"sqlite:///{Path(home) / 'consentry.db'}")
    with store, store.engine.connect() as conn:
        users = [r[0] for r in conn.exec_driver_sql("SELECT user_id FROM subjects")]
    if kind == "author, zipf":
        order = rng.permutation(len(users))
        picks = order[(rng.zipf(1.1, count) - 1) % len(users)]
    else:
        picks = rng.integers(0, len(users), count)
    return [f"/v1/public/signals/authors/{users[i]}" for i in picks]


def real_server(home: str, args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    """Per kind (author, post): one load run against `consentry serve` on `home`; its
    requests, seconds, errors and the server's CPU seconds."""
    import httpx

    from api_bench import Server, _drive, _parse_wrk

    wrk = shutil.which("wrk")
    results = []
    log = scratch / "server.log"
    with Server(Path(home), args.server_workers, log, source=args.server_src,
                log_level=args.server_log_level) as server:  # fmt: skip
        for kind in ("author", "post", "author, zipf"):
            paths = served_paths(home, kind, 50_000, args.seed + 1)
            # Warm every worker up: a new connection per request (`Connection: close`), as
            # one kept-alive connection would reach one worker only, and the others would
            # build their post index and fill their caches in the measured run.
            with httpx.Client(base_url=server.base, timeout=30, trust_env=False) as client:
                for path in paths[-200 * args.server_workers :]:
                    client.get(path, headers={"Connection": "close"}).raise_for_status()
            cpu = server.cpu_seconds()
            client_before = _client_cpu()
            if wrk is not None:
                script = scratch / f"{kind.replace(', ', '-')}.lua"
                script.write_text(_ROTATE_LUA % {
                    "paths": ",".join(json.dumps(p) for p in paths),
                    "threads": args.server_threads,
                })  # fmt: skip
                command = [wrk, "-t", str(args.server_threads), "-c",
                           str(args.server_connections), "-d", f"{args.server_duration}s",
                           "--timeout", "10s", "--latency", "-s", str(script),
                           server.base]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True, check=True,
                                      timeout=args.server_duration + 120)  # fmt: skip
                count, seconds, p50, p99, errors = _parse_wrk(done.stdout, args.server_connections)
            else:
                settings = argparse.Namespace(
                    connections=args.server_connections,
                    duration=args.server_duration,
                    py_requests=10**9,
                )
                plan: list[tuple[str, str, dict[str, str], bytes | None]] = [
                    ("GET", path, {}, None) for path in paths
                ]
                count, seconds, p50, p99, errors = asyncio.run(_drive(server.base, plan, settings))
            results.append({
                "kind": kind, "generator": "wrk" if wrk else "httpx", "requests": count,
                "seconds": seconds, "p50_ms": p50, "p99_ms": p99, "errors": errors,
                "cpu": server.cpu_seconds() - cpu, "client_cpu": _client_cpu() - client_before,
                "load": load_note(),
            })  # fmt: skip
    return results


def _client_cpu() -> float:
    """CPU seconds of the load generator so far: this process (the httpx generator) and
    its finished children (wrk; the server is not waited for until it stops)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--posts", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duckdb-lookups", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--server-workers", type=int, default=2, help="real server's workers")
    parser.add_argument("--server-duration", type=int, default=10, help="seconds per load run")
    parser.add_argument("--server-connections", type=int, default=32)
    parser.add_argument("--server-threads", type=int, default=2, help="wrk threads")
    parser.add_argument(
        "--server-log-level", default="info", help="the server's (info: a line per request)"
    )
    parser.add_argument(
        "--server-src", type=Path, default=None, help="serve this source directory's code"
    )
    parser.add_argument("--no-server", action="store_true", help="skip the real server")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="consentry-signals-bench-") as tmp:
        home = str(Path(tmp) / "home")
        with stopwatch() as sw:
            build_home(Path(home), args.users, args.posts, args.seed)
        print(f"home: {args.users:,} users, {args.posts:,} posts in {sw.seconds:.1f} s")
        print(load_note())

        runs = {}
        runs["direct"] = run_isolated(direct, home, args.requests, args.seed)
        for kind in ("post", "author", "peer", "floor"):
            runs[kind] = run_isolated(drive, home, kind, args.requests, args.concurrency, args.seed)
        for kind in ("post", "author"):
            runs[f"{kind}, app alone"] = run_isolated(
                app_alone, home, kind, args.requests, args.seed
            )
        built = run_isolated(index_build, home)
        points = run_isolated(duckdb_points, home, args.duckdb_lookups, args.seed)
        served = [] if args.no_server else real_server(home, args, Path(tmp))

    peer_rate = rate(runs["peer"].value["requests"], runs["peer"].value["seconds"])
    labels = {
        "direct": "ours, no HTTP: post -> author -> signals -> fields",
        "floor": "floor: GET /.well-known/gpc.json (no lookup)",
        "post": "ours: GET /v1/public/signals/posts/{id}",
        "author": "ours: GET /v1/public/signals/authors/{id}",
        "peer": "peer: GET /v1/users/{id}/signals (token)",
        "post, app alone": "ours, ASGI calls, no client: posts/{id}",
        "author, app alone": "ours, ASGI calls, no client: authors/{id}",
    }
    rows: list[list[Any]] = []
    for kind, measured in runs.items():
        value = measured.value
        per_second = rate(value["requests"], value["seconds"])
        statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(value["statuses"].items()))
        rows.append(
            [labels[kind], value["requests"], value["seconds"], per_second,
             rate(value["requests"], value["cpu"]), ratio(per_second, peer_rate),
             measured.peak_rss_mib, statuses]
        )  # fmt: skip
    print_table(
        f"Lookups in one process (HTTP rows: httpx ASGITransport, {args.concurrency} in flight)",
        ["side", "lookups", "seconds", "lookups/s", "per CPU-s", "vs peer", "peak MiB", "statuses"],
        rows,
    )
    index_rate = rate(built.value["rows"], built.value["seconds"])
    point_rate = rate(points.value["requests"], points.value["seconds"])
    print_table(
        "Post -> author",
        ["way", "rows or lookups", "seconds", "per second", "peak MiB"],
        [
            ["index build from the lake (rows)", built.value["rows"], built.value["seconds"],
             index_rate, built.peak_rss_mib],
            ["DuckDB point query per post (lookups)", points.value["requests"],
             points.value["seconds"], point_rate, points.peak_rss_mib],
        ],
    )  # fmt: skip
    print(f"index size: {built.value['bytes'] / 2**20:,.1f} MiB for {built.value['rows']:,} posts")
    through_app = rate(runs["post"].value["requests"], runs["post"].value["seconds"])
    no_http = rate(runs["direct"].value["requests"], runs["direct"].value["seconds"])
    print(f"per post, lookups/s: {through_app:,.0f} through the app, {no_http:,.0f} without HTTP")
    if served:
        cores = os.cpu_count() or 1
        print_table(
            f"Real server: consentry serve --workers {args.server_workers} "
            f"(log level {args.server_log_level}"
            f"{', code from ' + str(args.server_src) if args.server_src else ''}), "
            f"{args.server_connections} connections, {args.server_duration} s, random ids",
            ["kind", "generator", "requests", "req/s", "p50 ms", "p99 ms", "errors",
             "per server CPU-s", "server CPU ms/req", "client CPU ms/req",
             f"{cores}-core ceiling req/s", "load then"],
            [[r["kind"], r["generator"], r["requests"], rate(r["requests"], r["seconds"]),
              r["p50_ms"], r["p99_ms"], r["errors"], rate(r["requests"], r["cpu"]),
              r["cpu"] * 1000 / max(1, r["requests"]),
              r["client_cpu"] * 1000 / max(1, r["requests"]),
              rate(cores * r["requests"], r["cpu"] + r["client_cpu"]), r["load"]]
             for r in served],
        )  # fmt: skip
        print(
            f"ceiling: what {cores} cores would serve if server and load generator had them "
            "to themselves (requests / their CPU seconds); req/s is what they got here"
        )


if __name__ == "__main__":
    main()
