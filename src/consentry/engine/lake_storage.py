"""Where a lake table's files live and what they must hold: a local folder, an S3 prefix,
or the process's snapshot of a database source; the S3 settings from the usual AWS
variables; the names the Delta layout uses; a part's schema check and an external
source's column names mapped back to the canonical ones.

Used by `consentry.engine.lake` (docs/engines.md, "Object storage").
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from consentry.engine.external import ExternalTable, read_source
from consentry.errors import ConsentryError

__all__ = [
    "DATA_PREFIX",
    "DELTA_LOG",
    "PARQUET_COMPRESSION",
    "PUBLISH_APP",
    "SNAPSHOT_PREFIX",
    "SNAPSHOT_SECONDS",
    "LakePart",
    "TableLocation",
    "canonical_names",
    "check_part_schema",
    "database_snapshot",
    "new_snapshot_folder",
    "s3_filesystem",
    "s3_options",
    "sql_str",
    "sweep_dead_snapshots",
]

PARQUET_COMPRESSION = "zstd"
"""Codec of every Parquet file the lake writes."""

DELTA_LOG: Final = "_delta_log"
"""A Delta table's log folder (the Delta protocol's name)."""
DATA_PREFIX: Final = "data-"
"""Parts published under token T live in `data-T/`."""
PUBLISH_APP: Final = "consentry.publish."
"""The Delta app transaction id of a publish is this + its token."""


def s3_options(env: Mapping[str, str]) -> dict[str, str]:
    """delta-rs storage options for an `s3://` lake from the usual AWS variables.

    1. `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
       `AWS_SESSION_TOKEN`, `AWS_REGION` (else `AWS_DEFAULT_REGION`, else us-east-1) are
       passed on as given.
    2. An `http://` endpoint (a test server, SeaweedFS or MinIO on a private network) is
       allowed explicitly (`AWS_ALLOW_HTTP`).
    3. Commits use conditional writes (`conditional_put=etag`: S3, SeaweedFS and MinIO
       refuse a second writer's commit of the same version), so concurrent writers need no
       lock service.
    """
    options = {
        key: env[key]
        for key in (
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        )
        if env.get(key)
    }
    options["AWS_REGION"] = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1"
    if options.get("AWS_ENDPOINT_URL", "").startswith("http://"):
        options["AWS_ALLOW_HTTP"] = "true"
    options["conditional_put"] = "etag"
    return options


def s3_filesystem(options: Mapping[str, str]) -> pafs.S3FileSystem:
    """The PyArrow S3 filesystem for the same storage options (`s3_options`)."""
    endpoint = options.get("AWS_ENDPOINT_URL")
    return pafs.S3FileSystem(
        access_key=options.get("AWS_ACCESS_KEY_ID"),
        secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
        session_token=options.get("AWS_SESSION_TOKEN"),
        region=options.get("AWS_REGION"),
        endpoint_override=endpoint,
        scheme="http" if endpoint and endpoint.startswith("http://") else "https",
    )


SNAPSHOT_SECONDS: Final = 60.0
"""How long one process reuses its read of a database source (a Mastodon server) before
reading it again: every job of a command reads one consistent snapshot, and a server
(the public signals' post index) reads the database at most once a minute."""

SNAPSHOT_PREFIX: Final = "consentry-source-"
"""The name of a snapshot folder in the system's temporary directory starts with this."""
_OWNER_LOCK: Final = ".owner.lock"
_UNLOCKED_GRACE_SECONDS: Final = 600.0


@dataclass(slots=True)
class _Snapshot:
    read_at: float
    parts: dict[str, LakePart]
    folder: Path
    owner_fd: int
    """Holds the folder's owner lock for as long as this process keeps the folder."""


_SNAPSHOTS: dict[str, _Snapshot] = {}
_SNAPSHOTS_LOCK = threading.Lock()


def database_snapshot(source: ExternalTable) -> dict[str, LakePart]:
    """Every table of a database source, read now (or within `SNAPSHOT_SECONDS`) into
    Parquet files in a private temporary folder of this process.

    1. The source's reader (`read_source`) reads all its tables in one snapshot.
    2. Each table is written as one zstd Parquet file named by its content's digest.
    3. A newer read replaces the folder of the older one; the last is removed at exit, so
       no copy of the platform's rows outlives the process. A process killed outright
       cannot remove its folder: the next read by any process removes it
       (`sweep_dead_snapshots`).
    """
    key = json.dumps(source.to_json(), sort_keys=True)
    with _SNAPSHOTS_LOCK:
        found = _SNAPSHOTS.get(key)
        if found is not None and time.monotonic() - found.read_at < SNAPSHOT_SECONDS:
            return found.parts
        sweep_dead_snapshots()
        folder, owner_fd = new_snapshot_folder()
        try:
            parts = {}
            for table, data in read_source(source).items():
                path = folder / f"{table}.parquet"
                pq.write_table(data, path, compression=PARQUET_COMPRESSION)
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
                named = path.rename(folder / f"{table}-{digest}.parquet")
                parts[table] = LakePart(str(named), named.name, named.stat().st_size, data.num_rows)
        except BaseException:
            _remove(folder, owner_fd)
            raise
        if found is not None:
            _remove(found.folder, found.owner_fd)
        else:
            atexit.register(_drop_snapshot, key)
        _SNAPSHOTS[key] = _Snapshot(time.monotonic(), parts, folder, owner_fd)
        return parts


def new_snapshot_folder() -> tuple[Path, int]:
    """A new private folder for a snapshot and the open descriptor holding its owner lock
    (an exclusive `flock` on `.owner.lock` inside it, dropped by the kernel when this
    process ends, however it ends)."""
    folder = Path(tempfile.mkdtemp(prefix=SNAPSHOT_PREFIX))
    # Locked under another name, then renamed: a sweeper never finds the lock file free
    # in the moment between its creation and its lock.
    fresh = folder / f"{_OWNER_LOCK}.new"
    fd = os.open(fresh, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    fresh.rename(folder / _OWNER_LOCK)
    return folder, fd


def sweep_dead_snapshots(directory: Path | None = None) -> list[Path]:
    """Remove the snapshot folders (in `directory`, default the system's temporary one)
    whose owner process is gone; return them.

    1. A folder whose owner lock can be taken has no live owner: removed.
    2. A folder without a lock file is one being created (the lock follows `mkdtemp` at
       once) unless it is older than ten minutes: then its creator died in between.
    3. Folders of other users, or that vanish meanwhile, are left alone.
    """
    removed = []
    for folder in Path(directory or tempfile.gettempdir()).glob(f"{SNAPSHOT_PREFIX}*"):
        try:
            fd = os.open(folder / _OWNER_LOCK, os.O_RDWR)
        except FileNotFoundError:
            with contextlib.suppress(OSError):
                if time.time() - folder.stat().st_mtime > _UNLOCKED_GRACE_SECONDS:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed.append(folder)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _remove(folder, fd)
        removed.append(folder)
    return removed


def _remove(folder: Path, owner_fd: int) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    os.close(owner_fd)


def _drop_snapshot(key: str) -> None:
    found = _SNAPSHOTS.pop(key, None)
    if found is not None:
        _remove(found.folder, found.owner_fd)


@dataclass(frozen=True, slots=True)
class TableLocation:
    """Where one table's files are: the lake's folder or an external source's."""

    fs: pafs.FileSystem
    loc: str
    """The table's folder as a path on `fs`."""
    uri: str
    """The table's location as delta-rs opens it."""
    delta_kwargs: dict[str, Any]
    source: ExternalTable | None

    def path_of(self, relative: str) -> str:
        """A file of the table (path relative to its folder) as `Lake.files` names it."""
        full = f"{self.loc}/{relative}"
        return f"s3://{full}" if isinstance(self.fs, pafs.S3FileSystem) else full


@dataclass(frozen=True, slots=True)
class LakePart:
    """One data file of a lake table's version."""

    path: str
    """Its path on the lake's filesystem (`Lake.filesystem`)."""
    relative: str
    """Its path inside the table's folder (as the Delta log names it)."""
    size: int
    rows: int


def sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def canonical_names(data: pa.Table, source: ExternalTable | None) -> pa.Table:
    """`data` read from `source` with its mapped columns renamed to the canonical names."""
    if source is None or not source.columns:
        return data
    back = {v: k for k, v in source.columns.items()}
    return data.rename_columns([back.get(c, c) for c in data.column_names])


def check_part_schema(name: str, part: Path, expected: pa.Schema) -> None:
    """A part's columns must be the table's, in order, with the same types (schema
    enforcement; nullability is the table's to state)."""
    found = pq.read_schema(part)
    if found.names != expected.names:
        raise ConsentryError(
            f"{part}: columns {found.names} do not match table {name!r}'s {expected.names}"
        )
    for field in expected:
        got = found.field(field.name).type
        if got != field.type:
            raise ConsentryError(
                f"{part}: column {field.name!r} is {got}, table {name!r} has {field.type}"
            )
