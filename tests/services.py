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
import time
from pathlib import Path

__all__ = ["POSTGRES_URL", "REDIS_URL", "ensure_postgres", "ensure_redis"]

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
