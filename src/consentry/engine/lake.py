"""The lake: a directory of Parquet tables, each replaced by atomic snapshots.

Layout (see docs/engines.md)::

    root/<table>/CURRENT                  text: the name of the live snapshot dir
    root/<table>/v-000007/part-000000.parquet
    root/<table>/.staging-<hex>/          a snapshot being written (never read)
    root/<table>/.staged-<token>/         a job's snapshot, written, waiting for its commit

A writer fills a staging dir, renames it to the next `v-NNNNNN`, then replaces CURRENT
with `os.replace` — the single atomic commit point. Readers resolve CURRENT once and read
that snapshot's files; old snapshots are removed after the commit.

A job that must commit a lake table together with the control plane (docs/invariants.md)
uses two phases instead: `stage` writes the snapshot under a token and leaves it unpublished,
the job commits its store transaction, then `publish` makes it live. `publish` is idempotent
(a snapshot published under a token is named `v-NNNNNN-<token>`, so a repeated publish finds
it) and `discard` removes an unpublished one: recovery can finish or undo either phase.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from consentry.errors import ConsentryError

if TYPE_CHECKING:
    import ibis
    import ibis.expr.types as ir

__all__ = ["PARQUET_COMPRESSION", "ROWS_PER_PART", "Lake"]

PARQUET_COMPRESSION = "zstd"
"""Codec of every Parquet file the lake writes."""

ROWS_PER_PART = 1_000_000
"""Upper bound on rows in one part file written by `Lake.write_arrow`."""

_CURRENT = "CURRENT"
_SNAPSHOT = re.compile(r"^v-(\d{6,})(?:-([0-9a-f]{8,64}))?$")
_STAGED = ".staged-"
_TOKEN = re.compile(r"^[0-9a-f]{8,64}$")
_PART = re.compile(r"^part-(\d+)\.parquet$")
_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _canonical_schema(name: str) -> pa.Schema | None:
    # Imported here: consentry.sources imports this module's package for its importer.
    from consentry.schema import TABLES, arrow_schema

    return arrow_schema(name) if name in TABLES else None


def _part_order(path: Path) -> tuple[int, str]:
    match = _PART.match(path.name)
    return (int(match.group(1)) if match else -1, path.name)


def _number(snapshot: Path) -> int:
    match = _SNAPSHOT.match(snapshot.name)
    return int(match.group(1)) if match else -1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Lake:
    """Parquet tables under `root`, each with atomic snapshot replacement."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r})"

    # ----------------------------------------------------------------- reading

    def _table_dir(self, name: str) -> Path:
        if not _TABLE_NAME.match(name):
            raise ConsentryError(
                f"bad table name {name!r}: use lowercase letters, digits and underscores"
            )
        return self.root / name

    def tables(self) -> list[str]:
        """Names of the tables that have a committed snapshot, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and (p / _CURRENT).is_file()
        )

    def exists(self, name: str) -> bool:
        """True when `name` has a committed snapshot."""
        return (self._table_dir(name) / _CURRENT).is_file()

    def snapshot_dir(self, name: str) -> Path:
        """The directory of `name`'s live snapshot (resolved from CURRENT now)."""
        current = self._table_dir(name) / _CURRENT
        try:
            snapshot = current.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConsentryError(f"the lake at {self.root} has no table {name!r}") from None
        return current.parent / snapshot

    def files(self, name: str) -> list[Path]:
        """The live snapshot's Parquet parts in write order; [] when the table is absent."""
        if not self.exists(name):
            return []
        return sorted(self.snapshot_dir(name).glob("part-*.parquet"), key=_part_order)

    def read_arrow(self, name: str) -> pa.Table:
        """The whole table in memory.

        1. A canonical table comes back with exactly its canonical schema (nullability too).
        2. A missing canonical table is an empty table with that schema.
        3. A missing other table is an error.
        """
        schema = _canonical_schema(name)
        files = self.files(name)
        if not files:
            if schema is None and not self.exists(name):
                raise ConsentryError(f"the lake at {self.root} has no table {name!r}")
            if schema is None:
                return pa.table({})
            return schema.empty_table()
        data = pq.read_table([str(f) for f in files]) if len(files) > 1 else pq.read_table(files[0])
        if schema is not None:
            data = data.select(schema.names).cast(schema)
        return data

    def row_count(self, name: str) -> int:
        """Rows in the live snapshot, from Parquet footers only (no data read); 0 if absent."""
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files(name))

    def row_counts(self) -> dict[str, int]:
        """Row count of every table in the lake."""
        return {name: self.row_count(name) for name in self.tables()}

    def table(self, backend: ibis.BaseBackend, name: str) -> ir.Table:
        """`name` as an Ibis table on `backend` (DuckDB or PySpark), registered as a view.

        1. The live snapshot is resolved once; the view reads exactly its files.
        2. A missing canonical table is an empty table with the canonical schema.
        3. The view is named after the table (replacing an earlier view of that name).
        """
        import ibis

        files = self.files(name)
        if not files:
            schema = _canonical_schema(name)
            if schema is None:
                raise ConsentryError(f"the lake at {self.root} has no table {name!r}")
            return backend.create_view(name, ibis.memtable(schema.empty_table()), overwrite=True)
        if backend.name == "pyspark":
            # Spark lists a directory itself; the snapshot holds only this table's parts.
            return backend.read_parquet(str(files[0].parent), table_name=name)
        return backend.read_parquet([str(f) for f in files], table_name=name)

    # ----------------------------------------------------------------- writing

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        """Hold an exclusive lock on the table's directory (one writer per table)."""
        table_dir = self._table_dir(name)
        created = not table_dir.exists()
        table_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(table_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield table_dir
            finally:
                # A table dir this writer created and never committed to is removed, so a
                # failed first import leaves the lake exactly as it was.
                if created and not (table_dir / _CURRENT).exists():
                    shutil.rmtree(table_dir, ignore_errors=True)
        finally:
            os.close(fd)

    def begin_snapshot(self, name: str) -> Path:
        """Create and return an empty staging directory for a new snapshot of `name`."""
        table_dir = self._table_dir(name)
        table_dir.mkdir(parents=True, exist_ok=True)
        staging = table_dir / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        return staging

    def commit_snapshot(self, name: str, staging: Path, *, token: str | None = None) -> Path:
        """Make `staging` the live snapshot of `name`; returns the snapshot dir.

        1. If the staging dir holds no part file, an empty part with the canonical schema is
           added (so readers always find a schema).
        2. The staging dir is renamed to the next `v-NNNNNN`.
        3. CURRENT is written to a temp file, fsynced and `os.replace`d: the commit point.
           A failure before it removes the new snapshot dir and leaves the old one live.
        4. After the commit, older snapshots and stale staging dirs are removed.
        """
        table_dir = self._table_dir(name)
        if staging.parent != table_dir or not staging.is_dir():
            raise ConsentryError(f"{staging} is not a staging dir of table {name!r}")
        if not any(staging.glob("part-*.parquet")):
            schema = _canonical_schema(name)
            if schema is None:
                raise ConsentryError(f"snapshot of {name!r} has no part files")
            pq.write_table(
                schema.empty_table(),
                staging / "part-000000.parquet",
                compression=PARQUET_COMPRESSION,
            )
        versions = [int(m.group(1)) for p in table_dir.iterdir() if (m := _SNAPSHOT.match(p.name))]
        number = f"v-{max(versions, default=0) + 1:06d}"
        final = table_dir / (number if token is None else f"{number}-{token}")
        os.rename(staging, final)
        try:
            self._point_current(table_dir, final)
        except BaseException:
            shutil.rmtree(final, ignore_errors=True)
            raise
        self._remove_old(table_dir, final)
        return final

    @staticmethod
    def _point_current(table_dir: Path, final: Path) -> None:
        """Write CURRENT = `final`'s name: temp file, fsync, `os.replace` (the commit)."""
        tmp = table_dir / f".CURRENT-{uuid.uuid4().hex}"
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(final.name + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, table_dir / _CURRENT)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(table_dir)

    @staticmethod
    def _remove_old(table_dir: Path, final: Path) -> None:
        """Remove snapshots older than `final` and stale staging dirs (never a job's staged
        snapshot: recovery may still publish it)."""
        for old in table_dir.iterdir():
            if old != final and (_SNAPSHOT.match(old.name) or old.name.startswith(".staging-")):
                shutil.rmtree(old, ignore_errors=True)

    # ----------------------------------------------------------------- two phases

    def stage(self, name: str, token: str) -> Path:
        """An empty directory for a snapshot of `name` that `publish(name, token)` will make
        live (or `discard` remove). The caller must hold the table's job lock until then."""
        if not _TOKEN.match(token):
            raise ConsentryError(f"bad snapshot token {token!r}: 8 to 64 hex digits")
        table_dir = self._table_dir(name)
        table_dir.mkdir(parents=True, exist_ok=True)
        staged = table_dir / f"{_STAGED}{token}"
        shutil.rmtree(staged, ignore_errors=True)  # a half-written earlier attempt
        staged.mkdir()
        return staged

    def publish(self, name: str, token: str) -> bool:
        """Make the snapshot staged under `token` live; idempotent. True if it is live now.

        1. Still staged: committed like any snapshot (renamed to `v-NNNNNN-<token>`, then
           CURRENT replaced).
        2. Already renamed but CURRENT not yet replaced (a crash in between): CURRENT is
           pointed at it.
        3. Neither: it was published before (and is live or superseded): nothing to do.
        """
        table_dir = self._table_dir(name)
        staged = table_dir / f"{_STAGED}{token}"
        with self._locked(name):
            if staged.is_dir():
                self.commit_snapshot(name, staged, token=token)
                return True
            renamed = self._published_under(table_dir, token)
            if renamed is None:
                return False
            live = self.snapshot_dir(name) if self.exists(name) else None
            if live is None or _number(live) < _number(renamed):
                self._point_current(table_dir, renamed)
                self._remove_old(table_dir, renamed)
            return True

    @staticmethod
    def _published_under(table_dir: Path, token: str) -> Path | None:
        if not table_dir.is_dir():
            return None
        for path in table_dir.iterdir():
            match = _SNAPSHOT.match(path.name)
            if match and match.group(2) == token:
                return path
        return None

    def discard(self, name: str, token: str) -> None:
        """Remove the unpublished snapshot staged under `token`, if any."""
        if _TABLE_NAME.match(name):
            shutil.rmtree(self.root / name / f"{_STAGED}{token}", ignore_errors=True)
            table_dir = self.root / name
            # A table whose only content was this staged snapshot leaves no trace.
            if table_dir.is_dir() and not any(table_dir.iterdir()):
                table_dir.rmdir()

    def staged_tokens(self, name: str) -> list[str]:
        """Tokens of the snapshots of `name` staged and not yet published or discarded."""
        table_dir = self._table_dir(name)
        if not table_dir.is_dir():
            return []
        return sorted(p.name[len(_STAGED) :] for p in table_dir.glob(f"{_STAGED}*"))

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """Write a new snapshot of `name`: yields a staging dir, commits when the block ends.

        1. Takes the table's writer lock for the whole block (read-modify-write is safe).
        2. On success the staging dir is committed (`commit_snapshot`).
        3. On any error the staging dir is removed and the lake is exactly as before.
        """
        with self._locked(name):
            staging = self.begin_snapshot(name)
            try:
                yield staging
                self.commit_snapshot(name, staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise

    def write_arrow(self, name: str, data: pa.Table, *, rows_per_part: int = ROWS_PER_PART) -> Path:
        """Replace `name` with `data` in one snapshot (zstd parts of at most `rows_per_part`).

        A canonical table's data is cast to its canonical schema first (a type mismatch is an
        error and nothing is written).
        """
        schema = _canonical_schema(name)
        if schema is not None:
            data = data.select(schema.names).cast(schema)
        with self.writing(name) as staging:
            for index, start in enumerate(range(0, max(data.num_rows, 1), rows_per_part)):
                pq.write_table(
                    data.slice(start, rows_per_part),
                    staging / f"part-{index:06d}.parquet",
                    compression=PARQUET_COMPRESSION,
                )
        return self.snapshot_dir(name)
