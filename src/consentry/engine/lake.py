"""The lake: a folder of Delta Lake tables (the `deltalake` package, delta-rs).

Layout (see docs/engines.md)::

    root/<table>/_delta_log/00000000000000000007.json   the table's commits (Delta protocol)
    root/<table>/data-<token>/part-000000.parquet        parts published under a token
    root/<table>/.staged-<token>/part-000000.parquet     parts staged, not yet published

Every change is one Delta commit: the parts are written first, under a folder of their own,
then one commit adds them (and, for a replacement, removes the parts it replaces). A
reader loads the table's latest version once and reads exactly the files it lists, so it
never sees half a change; older versions stay readable (time travel) until `vacuum`
deletes the files they alone hold.

A job that must commit a lake table together with the control plane (docs/invariants.md)
uses two phases: `stage` gives a folder the job fills and leaves unpublished, the job
commits its store transaction, then `publish` makes it live. `publish` is idempotent: the
commit carries a Delta app transaction `consentry.publish.<token>`, so a repeated publish
finds it committed; `discard` removes an unpublished one. Recovery can finish or undo
either phase.

Commits carry no per-column statistics (`delta.dataSkippingNumIndexedCols = 0`): min and
max values in the log would keep copies of purged keys (a user id as a file's minimum)
where no vacuum reaches them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa
import pyarrow.parquet as pq

from consentry.errors import ConsentryError

if TYPE_CHECKING:
    import ibis
    import ibis.expr.types as ir
    from deltalake import DeltaTable

__all__ = [
    "PARQUET_COMPRESSION",
    "ROWS_PER_PART",
    "TABLE_CONFIGURATION",
    "Lake",
    "TableVersion",
    "Vacuumed",
]

PARQUET_COMPRESSION = "zstd"
"""Codec of every Parquet file the lake writes."""

ROWS_PER_PART = 1_000_000
"""Upper bound on rows in one part file written by `Lake.write_arrow`."""

TABLE_CONFIGURATION: Final[dict[str, str | None]] = {
    # No min/max statistics in the log: they would copy key values out of the data files.
    "delta.dataSkippingNumIndexedCols": "0",
}
"""Delta table properties every lake table is created with."""

_LOG = "_delta_log"
_STAGED = ".staged-"
_DATA = "data-"
_APPEND_MARK = ".append"
_APP_PREFIX = "consentry.publish."
_TOKEN = re.compile(r"^[0-9a-f]{8,64}$")
_PART = re.compile(r"^part-(\d+)\.parquet$")
_TABLE_NAME = re.compile(r"[a-z][a-z0-9_]*")
_OLD_POINTER = "CURRENT"  # the snapshot lake of Consentry before Delta (`lake_migration`)


def _canonical_schema(name: str) -> pa.Schema | None:
    # Imported here: consentry.sources imports this module's package for its importer.
    from consentry.schema import TABLES, arrow_schema

    return arrow_schema(name) if name in TABLES else None


def _parts(folder: Path) -> list[Path]:
    """The part files of `folder`, in part-number order."""
    found = [
        (int(m.group(1)), p) for p in folder.glob("part-*.parquet") if (m := _PART.match(p.name))
    ]
    return [p for _, p in sorted(found)]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _app_id(token: str) -> str:
    return f"{_APP_PREFIX}{token}"


@dataclass(frozen=True, slots=True)
class TableVersion:
    """One committed version of a lake table (`Lake.history`)."""

    version: int
    committed_at_ms: int
    operation: str
    token: str | None
    """The publish token of a commit made by `Lake.publish`, else None."""
    readable: bool
    """Every file the version lists still exists (False once a vacuum removed one)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "committed_at_ms": self.committed_at_ms,
            "operation": self.operation,
            "token": self.token,
            "readable": self.readable,
        }


@dataclass(frozen=True, slots=True)
class Vacuumed:
    """What `Lake.vacuum` removed from one table."""

    table: str
    files_removed: tuple[str, ...]
    """Paths (relative to the table folder) of the data files deleted."""
    versions_removed: tuple[int, ...]
    """Versions readable before the vacuum and not after it (time travel to them fails)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "files_removed": len(self.files_removed),
            "versions_removed": list(self.versions_removed),
        }


class Lake:
    """Delta Lake tables under `root`, each changed by atomic, versioned commits."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r})"

    # ----------------------------------------------------------------- reading

    def _table_dir(self, name: str) -> Path:
        if not _TABLE_NAME.fullmatch(name):
            raise ConsentryError(
                f"bad table name {name!r}: use lowercase letters, digits and underscores"
            )
        return self.root / name

    def _is_delta(self, table_dir: Path) -> bool:
        """True when `table_dir` holds a committed Delta table; an unconverted table of the
        snapshot lake is an error naming the command that converts it."""
        log = table_dir / _LOG
        if log.is_dir() and any(log.glob("*.json")):
            return True
        if (table_dir / _OLD_POINTER).is_file():
            raise ConsentryError(
                f"the lake table {table_dir} was written by an earlier Consentry (snapshot "
                "folders and a CURRENT pointer): run `consentry init` to convert it to Delta Lake"
            )
        return False

    def _delta(self, name: str, version: int | None = None) -> DeltaTable | None:
        """`name`'s Delta table at `version` (default: the latest); None when absent."""
        from deltalake import DeltaTable

        table_dir = self._table_dir(name)
        if not self._is_delta(table_dir):
            return None
        try:
            return DeltaTable(str(table_dir), version=version)
        except Exception as exc:  # delta-rs raises its own error types for a missing version
            if version is None:
                raise
            raise ConsentryError(
                f"table {name!r} has no readable version {version}: {exc}"
            ) from exc

    def tables(self) -> list[str]:
        """Names of the tables that have a committed version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and _TABLE_NAME.fullmatch(p.name) and self._is_delta(p)
        )

    def exists(self, name: str) -> bool:
        """True when `name` has a committed version."""
        return self._is_delta(self._table_dir(name))

    def version(self, name: str) -> int | None:
        """The latest committed version of `name`; None when the table is absent."""
        table = self._delta(name)
        return None if table is None else table.version()

    def _live(self, name: str, version: int | None = None) -> list[tuple[Path, int]]:
        """(path, rows) of every file of `name` at `version`, in commit then part order."""
        table = self._delta(name, version)
        if table is None:
            return []
        adds = pa.table(table.get_add_actions(flatten=True))
        rows = (
            adds.column("num_records").to_pylist() if "num_records" in adds.column_names else None
        )
        entries = [
            (mtime, path, (rows[i] if rows is not None else None))
            for i, (path, mtime) in enumerate(
                zip(
                    adds.column("path").to_pylist(),
                    adds.column("modification_time").to_pylist(),
                    strict=True,
                )
            )
        ]
        table_dir = self._table_dir(name)
        out = []
        for _, path, count in sorted(entries, key=lambda e: (e[0], e[1])):
            full = table_dir / path
            out.append(
                (full, count if count is not None else pq.ParquetFile(full).metadata.num_rows)
            )
        return out

    def files(self, name: str, *, version: int | None = None) -> list[Path]:
        """The data files of `name` at `version` (default: the latest), in write order;
        [] when the table is absent."""
        return [path for path, _ in self._live(name, version)]

    def read_arrow(self, name: str, *, version: int | None = None) -> pa.Table:
        """The whole table (at `version`, default the latest) in memory.

        1. A canonical table comes back with exactly its canonical schema (nullability too).
        2. A missing canonical table is an empty table with that schema.
        3. A missing other table is an error.
        """
        schema = _canonical_schema(name)
        files = self.files(name, version=version)
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
        """Rows in the latest version, from the log's record counts; 0 if absent."""
        return sum(rows for _, rows in self._live(name))

    def row_counts(self) -> dict[str, int]:
        """Row count of every table in the lake."""
        return {name: self.row_count(name) for name in self.tables()}

    def table(self, backend: ibis.BaseBackend, name: str) -> ir.Table:
        """`name` as an Ibis table on `backend` (DuckDB or PySpark), registered as a view.

        1. The latest version is resolved once; the view reads exactly its files (listed by
           delta-rs, so neither engine needs a Delta connector).
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
            session = backend._session
            session.read.parquet(*(str(f) for f in files)).createOrReplaceTempView(name)
            return backend.table(name)
        return backend.read_parquet([str(f) for f in files], table_name=name)

    def history(self, name: str) -> list[TableVersion]:
        """Every committed version of `name`, newest first, with whether it is still readable."""
        table = self._delta(name)
        if table is None:
            raise ConsentryError(f"the lake at {self.root} has no table {name!r}")
        table_dir = self._table_dir(name)
        versions = []
        for commit in table.history():
            version = int(commit["version"])
            versions.append(
                TableVersion(
                    version=version,
                    committed_at_ms=int(commit.get("timestamp", 0)),
                    operation=str(commit.get("operation", "")),
                    token=_token_of_commit(table_dir, version),
                    readable=self._readable(name, version),
                )
            )
        return versions

    def _readable(self, name: str, version: int) -> bool:
        try:
            return all(path.exists() for path, _ in self._live_paths(name, version))
        except Exception:  # the log itself no longer holds this version
            return False

    def _live_paths(self, name: str, version: int) -> list[tuple[Path, None]]:
        table = self._delta(name, version)
        if table is None:
            return []
        table_dir = self._table_dir(name)
        paths = pa.table(table.get_add_actions(flatten=True)).column("path").to_pylist()
        return [(table_dir / p, None) for p in paths]

    def reachable_files(self, name: str) -> list[Path]:
        """Every data file that any still-readable version of `name` lists, sorted.

        This is what time travel can return: a purge is complete only when none of these
        holds a purged row (`retention.apply.verify_purge`).
        """
        table = self._delta(name)
        if table is None:
            return []
        found: set[Path] = set()
        for commit in table.history():
            version = int(commit["version"])
            if self._readable(name, version):
                found.update(path for path, _ in self._live_paths(name, version))
        return sorted(found)

    # ----------------------------------------------------------------- writing

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        """Hold an exclusive lock on the table's folder (one writer per table)."""
        table_dir = self._table_dir(name)
        created = not table_dir.exists()
        table_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(table_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield table_dir
            finally:
                # A table folder this writer created and never committed to is removed, so
                # a failed first import leaves the lake exactly as it was.
                if (
                    created
                    and not (table_dir / _LOG).exists()
                    and not any(table_dir.glob(f"{_STAGED}*"))
                ):
                    shutil.rmtree(table_dir, ignore_errors=True)
        finally:
            os.close(fd)

    def stage(self, name: str, token: str, *, append: bool = False) -> Path:
        """An empty folder for parts of `name` that `publish(name, token)` will make live
        (or `discard` remove). The caller must hold the table's job lock until then.

        `append=False`: the published parts replace the table's rows. `append=True`: they
        are added to them.
        """
        if not _TOKEN.match(token):
            raise ConsentryError(f"bad snapshot token {token!r}: 8 to 64 hex digits")
        table_dir = self._table_dir(name)
        self._is_delta(table_dir)  # refuses an unconverted table before anything is written
        table_dir.mkdir(parents=True, exist_ok=True)
        staged = table_dir / f"{_STAGED}{token}"
        shutil.rmtree(staged, ignore_errors=True)  # a half-written earlier attempt
        staged.mkdir()
        if append:
            (staged / _APPEND_MARK).touch()
        return staged

    def publish(self, name: str, token: str) -> bool:
        """Make the parts staged under `token` live; idempotent. True if they are live now.

        1. Already committed (the table records the app transaction
           `consentry.publish.<token>`): nothing to do.
        2. Still staged: a replacement gets an empty canonical part when it has none
           (readers always find a schema); every part's columns must match the table's
           (schema enforcement). The folder is renamed `data-<token>`.
        3. Renamed (now or by an earlier attempt that stopped before its commit): one Delta
           commit adds its parts — appending, or overwriting (removing every file of the
           latest version) — together with the app transaction. This is the commit point.
        4. Neither staged nor renamed nor committed: False.
        """
        with self._locked(name):
            return self._publish(name, token)

    def _publish(self, name: str, token: str) -> bool:
        """`publish` for a caller holding the table's writer lock."""
        table_dir = self._table_dir(name)
        table = self._delta(name)
        if table is not None and table.transaction_version(_app_id(token)) is not None:
            (table_dir / f"{_DATA}{token}" / _APPEND_MARK).unlink(missing_ok=True)
            return True
        staged = table_dir / f"{_STAGED}{token}"
        data = table_dir / f"{_DATA}{token}"
        if staged.is_dir():
            self._seal(name, staged, table)
            os.rename(staged, data)
            _fsync_dir(table_dir)
        if not data.is_dir():
            return False
        append = (data / _APPEND_MARK).exists()
        self._commit(name, table, data, token, append=append)
        (data / _APPEND_MARK).unlink(missing_ok=True)
        return True

    def _seal(self, name: str, staged: Path, table: DeltaTable | None) -> None:
        """Check the staged parts against the table's schema; give an empty replacement
        an empty part."""
        schema = _canonical_schema(name)
        parts = _parts(staged)
        if not parts:
            if (staged / _APPEND_MARK).exists():
                return
            if schema is None:
                raise ConsentryError(f"snapshot of {name!r} has no part files")
            pq.write_table(
                schema.empty_table(),
                staged / "part-000000.parquet",
                compression=PARQUET_COMPRESSION,
            )
            return
        expected = schema or (pa.schema(table.schema().to_arrow()) if table is not None else None)
        if expected is None:
            expected = pq.read_schema(parts[0])
        for part in parts:
            _check_part_schema(name, part, expected)

    def _commit(
        self, name: str, table: DeltaTable | None, data: Path, token: str, *, append: bool
    ) -> None:
        from deltalake import Schema
        from deltalake.transaction import (
            AddAction,
            CommitProperties,
            Transaction,
            create_table_with_add_actions,
        )

        table_dir = self._table_dir(name)
        now_ms = int(time.time() * 1000)
        parts = _parts(data)
        adds = [
            AddAction(
                path=f"{data.name}/{part.name}",
                size=part.stat().st_size,
                partition_values={},
                modification_time=now_ms,
                data_change=True,
                # Only the row count: see TABLE_CONFIGURATION.
                stats=json.dumps({"numRecords": pq.ParquetFile(part).metadata.num_rows}),
            )
            for part in parts
        ]
        schema = _canonical_schema(name)
        if schema is None:
            schema = (
                pa.schema(table.schema().to_arrow())
                if table is not None
                else pq.read_schema(parts[0])
            )
        properties = CommitProperties(app_transactions=[Transaction(_app_id(token), 1)])
        if table is None:
            create_table_with_add_actions(
                str(table_dir),
                Schema.from_arrow(schema),
                adds,
                mode="error",
                configuration=TABLE_CONFIGURATION,
                commit_properties=properties,
            )
        else:
            table.create_write_transaction(
                adds,  # type: ignore[arg-type]
                mode="append" if append else "overwrite",
                schema=schema,
                commit_properties=properties,
            )

    def discard(self, name: str, token: str) -> None:
        """Remove the unpublished parts staged under `token`, if any (never published ones)."""
        if not _TABLE_NAME.fullmatch(name):
            return
        table_dir = self.root / name
        shutil.rmtree(table_dir / f"{_STAGED}{token}", ignore_errors=True)
        data = table_dir / f"{_DATA}{token}"
        if data.is_dir():
            table = self._delta(name)
            if table is None or table.transaction_version(_app_id(token)) is None:
                shutil.rmtree(data, ignore_errors=True)
        # A table whose only content was this staged snapshot leaves no trace.
        if table_dir.is_dir() and not any(table_dir.iterdir()):
            table_dir.rmdir()

    def staged_tokens(self, name: str) -> list[str]:
        """Tokens of the parts of `name` staged and not yet published or discarded."""
        table_dir = self._table_dir(name)
        if not table_dir.is_dir():
            return []
        staged = {p.name[len(_STAGED) :] for p in table_dir.glob(f"{_STAGED}*")}
        renamed = {p.name[len(_DATA) :] for p in table_dir.glob(f"{_DATA}*")}
        if renamed:
            table = self._delta(name)
            renamed = {
                t for t in renamed if table is None or table.transaction_version(_app_id(t)) is None
            }
        return sorted(staged | renamed)

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """Write a new version of `name` that replaces its rows: yields a folder for the
        parts, commits when the block ends.

        1. Takes the table's writer lock for the whole block (read-modify-write is safe).
        2. On success the parts are published under a fresh token (`publish`).
        3. On any error they are removed and the lake is exactly as before.
        """
        token = uuid.uuid4().hex
        with self._locked(name):
            staging = self.stage(name, token)
            try:
                yield staging
                self._publish(name, token)
            except BaseException:
                self.discard(name, token)
                raise

    def write_arrow(self, name: str, data: pa.Table, *, rows_per_part: int = ROWS_PER_PART) -> None:
        """Replace `name` with `data` in one commit (zstd parts of at most `rows_per_part`).

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

    # ----------------------------------------------------------------- maintenance

    def optimize(self, name: str, *, target_size: int | None = None) -> dict[str, Any]:
        """Compact `name`'s small files into larger ones (one commit; rows unchanged)."""
        with self._locked(name):
            table = self._delta(name)
            if table is None:
                raise ConsentryError(f"the lake at {self.root} has no table {name!r}")
            metrics = table.optimize.compact(target_size=target_size)
        return {
            "table": name,
            "files_added": int(metrics.get("numFilesAdded", 0)),
            "files_removed": int(metrics.get("numFilesRemoved", 0)),
            "version": self.version(name),
        }

    def vacuum(
        self, name: str, *, grace_hours: int = 0, keep_versions: Sequence[int] = ()
    ) -> Vacuumed:
        """Delete the data files that only old versions of `name` still list.

        1. Candidates are what delta-rs's vacuum would delete with a retention of
           `grace_hours` (files removed by a commit at least that long ago, and files no
           version lists), sparing every file of the versions in `keep_versions`.
        2. Parts of a token staged or renamed but not yet committed are never deleted:
           recovery may still publish them.
        3. The candidates are deleted; part folders left empty go too.
        4. `versions_removed` are the versions readable before and not after.
        """
        from deltalake import DeltaTable

        with self._locked(name):
            table = self._delta(name)
            if table is None:
                raise ConsentryError(f"the lake at {self.root} has no table {name!r}")
            table_dir = self._table_dir(name)
            before = {v.version for v in self.history(name) if v.readable}
            pending = set(self.staged_tokens(name))
            candidates = DeltaTable(str(table_dir)).vacuum(
                retention_hours=grace_hours,
                dry_run=True,
                enforce_retention_duration=False,
                keep_versions=list(keep_versions) or None,
            )
            doomed = []
            for relative in candidates:
                folder = relative.split("/", 1)[0]
                if folder.startswith(_DATA) and folder[len(_DATA) :] in pending:
                    continue
                # delta-rs lists every file an old commit removed, deleted already or not.
                if (table_dir / relative).exists():
                    doomed.append(relative)
            for relative in doomed:
                (table_dir / relative).unlink(missing_ok=True)
            for sub in table_dir.iterdir():
                # Emptied part folders (a converted snapshot's too); never the log or a
                # staged folder.
                if sub.is_dir() and sub.name[0] not in "._" and not any(sub.iterdir()):
                    sub.rmdir()
            after = {v.version for v in self.history(name) if v.readable}
        return Vacuumed(
            table=name,
            files_removed=tuple(sorted(doomed)),
            versions_removed=tuple(sorted(before - after)),
        )


def _check_part_schema(name: str, part: Path, expected: pa.Schema) -> None:
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


def _token_of_commit(table_dir: Path, version: int) -> str | None:
    """The publish token a commit carries (its app transaction), if any.

    The commit file is JSON lines per the Delta protocol; delta-rs exposes the latest
    transaction version per app but not which commit wrote it, so the commit is read.
    """
    commit = table_dir / _LOG / f"{version:020d}.json"
    try:
        lines = commit.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        action = json.loads(line)
        txn = action.get("txn")
        if txn and str(txn.get("appId", "")).startswith(_APP_PREFIX):
            return str(txn["appId"])[len(_APP_PREFIX) :]
    return None
