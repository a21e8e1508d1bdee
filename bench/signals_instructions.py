"""Benchmark: machine instructions per public signals request in the ASGI app, counted by
valgrind's callgrind: a figure that does not move with the machine's load, for comparing
two versions of the code on a shared machine (CPU seconds per request do, by up to 2x).

Not a test: nothing is asserted. Run (needs `valgrind`; about a minute per kind):

    .venv/bin/python bench/signals_instructions.py [--requests 2000] [--src DIR]
        [--users 20000] [--posts 200000] [--seed 7]

1. Build the home of `bench/public_signals.py` (same users, consent history and posts).
2. Per kind (random authors, random posts, Zipf authors, drawn as there): a child process
   under `valgrind --tool=callgrind --instr-atstart=no` builds the app (`create_app`, log
   lines at `info` to /dev/null), answers 300 requests to warm up, then `--requests` GETs
   handed to it as ASGI calls; instrumentation is on (`callgrind_control -i on`) for those
   calls only. Reported: instructions per request (the app's middlewares, the fast path,
   the cache, the ledger reads, the log line and the metric; not uvicorn or the kernel).
3. `--src DIR`: the app's code from DIR (a `src` directory), for a before/after.
Uniformly random ids give steady counts (0.2 % between runs); Zipf-drawn authors less so:
their cache hits depend on the answers' reuse, counted in wall-clock seconds, and how many
requests fit in one under valgrind depends on the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from _common import print_table
from public_signals import build_home, served_paths

KINDS = ("author", "post", "author, zipf")


def child(home: str, paths_file: str, requests: int, signals: str) -> None:
    """Answer the requests of `paths_file`, counted between the `ready` and `done` files."""
    from consentry.api.app import create_app
    from consentry.observe.logs import configure_logging
    from consentry.settings import Settings

    app = create_app(Settings(home=Path(home)))
    configure_logging("text", "info")
    sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - the process's own, to its end
    paths = Path(paths_file).read_text().split("\n")
    flags = Path(signals)

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"status {message['status']}")

    async def call(path: str) -> None:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "headers": [(b"host", b"bench")],
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000), "state": {},
        }  # fmt: skip
        await app(scope, receive, send)

    async def run() -> None:
        for path in paths[-300:]:
            await call(path)
        (flags / "ready").touch()
        while not (flags / "go").exists():
            time.sleep(0.05)
        for path in paths[:requests]:
            await call(path)
        (flags / "done").touch()
        while not (flags / "end").exists():
            time.sleep(0.05)

    asyncio.run(run())


def count(home: str, kind: str, args: argparse.Namespace, scratch: Path) -> int:
    """Instructions of `args.requests` requests of `kind`, under callgrind."""
    flags = scratch / kind.replace(", ", "-")
    flags.mkdir()
    paths_file = flags / "paths.txt"
    paths_file.write_text("\n".join(served_paths(home, kind, args.requests + 300, args.seed + 1)))
    out = flags / "callgrind.out"
    env = dict(os.environ)
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve())
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={out}", sys.executable, __file__, "--child", home,
               str(paths_file), str(args.requests), str(flags)]  # fmt: skip
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_for(name: str) -> None:
        while not (flags / name).exists():
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "exited")
            time.sleep(0.2)

    control = ["callgrind_control", "-i"]
    wait_for("ready")
    subprocess.run([*control, "on", str(proc.pid)], check=True, capture_output=True)
    (flags / "go").touch()
    wait_for("done")
    subprocess.run([*control, "off", str(proc.pid)], check=True, capture_output=True)
    (flags / "end").touch()
    proc.communicate(timeout=600)
    for line in out.read_text().splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--posts", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--src", type=Path, default=None, help="the app's code from this dir")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory(prefix="consentry-signals-instr-") as tmp:
        home = str(Path(tmp) / "home")
        build_home(Path(home), args.users, args.posts, args.seed)
        rows = []
        for kind in KINDS:
            instructions = count(home, kind, args, Path(tmp))
            rows.append([kind, args.requests, instructions // args.requests])
    source = args.src or "this tree"
    print_table(
        f"Instructions per request in the ASGI app (callgrind; code from {source})",
        ["kind", "requests", "instructions per request"],
        rows,
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        main()
