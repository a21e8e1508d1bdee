"""Bring up the external services tests need, or fail loudly.

A test that needs PostgreSQL, Redis or Spark never skips: if the service is down we try to
start it the way this machine does; if that fails the test errors with the reason. In CI
(`CI=true`) and locally alike, a missing service is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import sqlalchemy as sa

__all__ = [
    "POSTGRES_URL",
    "REDIS_URL",
    "ensure_nginx",
    "ensure_postgres",
    "ensure_redis",
    "free_port",
    "postgres_schema",
    "serving",
]

POSTGRES_URL = os.environ.get(
    "CONSENTRY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CONSENTRY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _wait(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _answers(host, port):
            return True
        time.sleep(0.2)
    return False


def ensure_postgres() -> str:
    """Return the test database URL once PostgreSQL answers on 127.0.0.1:5432."""
    if _answers("127.0.0.1", 5432):
        return POSTGRES_URL
    versions = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").exists() else []
    if versions and shutil.which("pg_ctlcluster"):
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main", "start"],
            check=False,
            capture_output=True,
        )
    if not _wait("127.0.0.1", 5432, 30):
        raise RuntimeError(
            "PostgreSQL is not answering on 127.0.0.1:5432 and could not be started; "
            "these tests need the real server (see .ci/run)."
        )
    return POSTGRES_URL


def ensure_redis() -> str:
    """Return the test Redis URL once Redis answers on 127.0.0.1:6379."""
    if _answers("127.0.0.1", 6379):
        return REDIS_URL
    if shutil.which("redis-server"):
        subprocess.run(
            [
                "redis-server",
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            check=False,
            capture_output=True,
        )
    if not _wait("127.0.0.1", 6379, 15):
        raise RuntimeError(
            "Redis is not answering on 127.0.0.1:6379 and could not be started; "
            "these tests need the real server (see .ci/run)."
        )
    return REDIS_URL


NGINX = Path("/usr/sbin/nginx")


def ensure_nginx() -> Path:
    """The nginx binary (Debian package `nginx`), installed with apt-get when missing.

    Tests run their own nginx (`nginx -p <tmp> -c <conf>`, in the foreground), so nothing
    is started here; the package's own service is never used.
    """
    if not NGINX.exists() and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "nginx"]
        if subprocess.run(install, env=env, check=False, capture_output=True).returncode:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True)
            subprocess.run(install, env=env, check=False, capture_output=True)
    if not NGINX.exists():
        raise RuntimeError(
            "nginx is not installed and could not be installed (apt-get install nginx); "
            "these tests need the real server (see .ci/run)."
        )
    return NGINX


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(
    home: Path,
    *,
    seconds: float = 30,
    workers: int = 1,
    log_level: str = "warning",
    log_format: str = "text",
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[str]:
    """Run a real `consentry serve` for `home` on a free loopback port; yield its base URL.

    1. The server is a subprocess (`python -m consentry.cli serve --workers N`), as a user
       starts it, with `env` added to the environment; its output goes to `log` when given.
    2. Ready means `/healthz` answers 200; a server that exits first, or is not ready
       within `seconds`, fails the test with its output.
    3. On exit the server is terminated (killed if it does not stop within 10 s).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = open(log, "wb") if log is not None else subprocess.PIPE  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "consentry.cli", "serve", "--port", str(port),
         "--workers", str(workers), "--log-level", log_level, "--log-format", log_format],
        env={**os.environ, "CONSENTRY_HOME": str(home), **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + seconds
        while True:
            assert server.poll() is None, "consentry serve exited:\n" + (
                server.stdout.read().decode() if server.stdout else ""
            )
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"consentry serve did not come up in {seconds} s"
            time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if log is not None:
            out.close()  # type: ignore[union-attr]


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL for a fresh, empty schema on the real PostgreSQL server (`ensure_postgres`),
    dropped with everything in it when the block ends: tests on PostgreSQL never share a
    schema."""
    base = ensure_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
