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

The root may be `s3://bucket/prefix` (docs/engines.md, "Object storage"): parts are then
staged in a local folder and uploaded when published, and every data file is named by its
`s3://` URI. A canonical table may instead be an external source (`consentry.engine.
external`): read in place, under its own column names mapped to the canonical ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from consentry.engine.external import ExternalTable, load_external
from consentry.engine.lake_maintenance import LakeMaintenance, TableVersion, Vacuumed, VacuumPlan
from consentry.engine.lake_storage import (
    DATA_PREFIX,
    DELTA_LOG,
    PARQUET_COMPRESSION,
    PUBLISH_APP,
    LakePart,
    TableLocation,
    canonical_names,
    check_part_schema,
    database_snapshot,
    s3_filesystem,
    s3_options,
    sql_str,
)
from consentry.errors import BadInput, ConsentryError, Problem
from consentry.faults import failpoint

if TYPE_CHECKING:
    import duckdb
    import ibis
    import ibis.expr.types as ir
    from deltalake import DeltaTable

    from consentry.settings import Settings

__all__ = [
    "PARQUET_COMPRESSION",
    "ROWS_PER_PART",
    "TABLE_CONFIGURATION",
    "Lake",
    "LakePart",
    "TableVersion",
    "VacuumPlan",
    "Vacuumed",
    "s3_filesystem",
    "s3_options",
]

ROWS_PER_PART = 1_000_000
"""Upper bound on rows in one part file written by `Lake.write_arrow`."""

TABLE_CONFIGURATION: Final[dict[str, str | None]] = {
    # No min/max statistics in the log: they would copy key values out of the data files.
    "delta.dataSkippingNumIndexedCols": "0",
}
"""Delta table properties every lake table is created with."""

_STAGED = ".staged-"
_APPEND_MARK = ".append"
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
    return f"{PUBLISH_APP}{token}"


class Lake(LakeMaintenance):
    """Delta Lake tables under `root` (a local folder or `s3://bucket/prefix`), each changed
    by atomic, versioned commits.

    A lake on object storage stages parts in a local folder (`staging`, default a temporary
    folder of the home) and uploads them when they are published; its credentials and
    endpoint come from `storage_options` (`s3_options`: the usual AWS variables).
    """

    def __init__(
        self,
        root: Path | str,
        *,
        staging: Path | None = None,
        storage_options: Mapping[str, str] | None = None,
        external: Mapping[str, ExternalTable] | None = None,
    ) -> None:
        self.external = dict(external or {})
        text = str(root)
        self.remote = "://" in text
        if self.remote:
            scheme, _, rest = text.partition("://")
            if scheme != "s3" or not rest.strip("/"):
                raise ConsentryError(
                    f"lake location {text!r}: use a local folder or s3://bucket[/prefix]"
                )
            self.uri = f"s3://{rest.strip('/')}"
            self._base = rest.strip("/")
            self.storage_options = dict(storage_options or s3_options(os.environ))
            self._fs: pafs.FileSystem = s3_filesystem(self.storage_options)
            self.root = Path(staging or Path(tempfile.gettempdir()) / "consentry-lake-staging")
            self._staging_root = self.root
        else:
            self.root = Path(root)
            self.uri = str(self.root)
            self._base = str(self.root.absolute())
            self.storage_options = {}
            self._fs = pafs.LocalFileSystem()
            self._staging_root = self.root

    @classmethod
    def of(cls, settings: Settings) -> Lake:
        """The home's lake: `settings.lake_uri` when set (staging in the home), else
        `<home>/lake`; with the home's registered external sources (`load_external`)."""
        external = load_external(settings.home)
        if settings.lake_uri:
            return cls(
                settings.lake_uri,
                staging=settings.home / "tmp" / "lake-staging",
                external=external,
            )
        return cls(settings.lake_dir, external=external)

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The PyArrow filesystem the paths `files` returns live on."""
        return self._fs

    # ----------------------------------------------------------------- locations

    def _check_name(self, name: str) -> str:
        if not _TABLE_NAME.fullmatch(name):
            raise ConsentryError(
                f"bad table name {name!r}: use lowercase letters, digits and underscores"
            )
        return name

    def _loc(self, name: str) -> str:
        """The table's folder as a path on `filesystem`."""
        return f"{self._base}/{self._check_name(name)}"

    def _table_uri(self, name: str) -> str:
        return f"s3://{self._loc(name)}" if self.remote else self._loc(name)

    def _table_dir(self, name: str) -> Path:
        """The local folder that holds the table's staged parts (and, for a local lake, the
        table)."""
        return self._staging_root / self._check_name(name)

    def _delta_kwargs(self) -> dict[str, Any]:
        return {"storage_options": self.storage_options} if self.remote else {}

    def _where(self, name: str) -> TableLocation:
        """Where `name`'s files are: the lake's own folder, or its external source's."""
        source = self.external.get(self._check_name(name))
        if source is None:
            return TableLocation(
                self._fs, self._loc(name), self._table_uri(name), self._delta_kwargs(), None
            )
        if source.format == "mastodon":  # its files are the process's snapshot's
            return TableLocation(pafs.LocalFileSystem(), "", source.location, {}, source)
        if source.location.startswith("s3://"):
            options = s3_options(os.environ)
            loc = source.location.removeprefix("s3://").rstrip("/")
            return TableLocation(
                s3_filesystem(options), loc, source.location.rstrip("/"),
                {"storage_options": options}, source,
            )  # fmt: skip
        loc = str(Path(source.location).absolute())
        return TableLocation(pafs.LocalFileSystem(), loc, loc, {}, source)

    def _check_own(self, name: str, doing: str) -> None:
        """Refuse to change an external source through the lake's own writes."""
        source = self.external.get(name)
        if source is not None:
            raise ConsentryError(
                f"cannot {doing} {name!r}: it is read in place from the external source "
                f"{source.location} (the platform writes it; `consentry source remove {name}` "
                "to manage it in the lake instead)"
            )

    def _committed(self, name: str) -> bool:
        """True when `name` holds a committed Delta table; an unconverted table of the
        snapshot lake is an error naming the command that converts it."""
        source = self.external.get(self._check_name(name))
        if source is not None:
            return True  # checked when it was registered; a missing one fails when read
        if self.remote:
            try:
                infos = self._fs.get_file_info(pafs.FileSelector(f"{self._loc(name)}/{DELTA_LOG}"))
            except (FileNotFoundError, OSError):
                return False
            return any(i.path.endswith(".json") for i in infos)
        table_dir = self._table_dir(name)
        log = table_dir / DELTA_LOG
        if log.is_dir() and any(log.glob("*.json")):
            return True
        if (table_dir / _OLD_POINTER).is_file():
            raise ConsentryError(
                f"the lake table {table_dir} was written by an earlier Consentry (snapshot "
                "folders and a CURRENT pointer): run `consentry init` to convert it to Delta Lake"
            )
        return False

    # ----------------------------------------------------------------- reading

    def _delta(self, name: str, version: int | None = None) -> DeltaTable | None:
        """`name`'s Delta table at `version` (default: the latest); None when absent."""
        from deltalake import DeltaTable

        if not self._committed(name):
            return None
        where = self._where(name)
        if where.source is not None and where.source.format != "delta":
            return None
        try:
            return DeltaTable(where.uri, version=version, **where.delta_kwargs)
        except Exception as exc:  # delta-rs raises its own error types for a missing version
            if version is None:
                raise
            raise ConsentryError(
                f"table {name!r} has no readable version {version}: {exc}"
            ) from exc

    def tables(self) -> list[str]:
        """Names of the tables that have a committed version or an external source, sorted."""
        try:
            infos = self._fs.get_file_info(pafs.FileSelector(self._base))
        except (FileNotFoundError, OSError):
            infos = []
        names = [i.base_name for i in infos if i.type == pafs.FileType.Directory]
        own = {n for n in names if _TABLE_NAME.fullmatch(n) and self._committed(n)}
        return sorted(own | set(self.external))

    def exists(self, name: str) -> bool:
        """True when `name` has a committed version."""
        return self._committed(name)

    def version(self, name: str) -> int | None:
        """The latest committed version of `name`; None when the table is absent. A Parquet
        or Mastodon source has no versions: a number derived from its files' names and sizes
        (a Mastodon source's: its snapshot's content digest) stands in; it changes when
        they do."""
        source = self.external.get(name)
        if source is not None and source.format != "delta":
            listing = sorted((p.relative, p.size) for p in self.parts(name))
            digest = hashlib.sha256(json.dumps(listing).encode()).digest()
            return int.from_bytes(digest[:7], "big")
        table = self._delta(name)
        return None if table is None else table.version()

    def parts(self, name: str, *, version: int | None = None) -> list[LakePart]:
        """Every data file of `name` at `version` (default: the latest), in write order (by
        commit, then path); [] when the table is absent."""
        source = self.external.get(self._check_name(name))
        if source is not None and source.format != "delta":
            if version is not None:
                raise ConsentryError(f"{name!r} is a {source.format} source: it has no versions")
            if source.format == "mastodon":
                return [database_snapshot(source)[name]]
            return self._parquet_parts(name)
        table = self._delta(name, version)
        if table is None:
            return []
        where = self._where(name)
        adds = pa.table(table.get_add_actions(flatten=True))
        paths = adds.column("path").to_pylist()
        times = adds.column("modification_time").to_pylist()
        sizes = adds.column("size_bytes").to_pylist()
        rows = (
            adds.column("num_records").to_pylist()
            if "num_records" in adds.column_names
            else [None] * len(paths)
        )
        out = []
        for _, path, size, count in sorted(zip(times, paths, sizes, rows, strict=True)):
            full = where.path_of(path)
            if count is None:  # a commit by another writer without row counts
                count = self.parquet_file(full).metadata.num_rows
            out.append(LakePart(full, path, int(size), int(count)))
        return out

    def _parquet_parts(self, name: str) -> list[LakePart]:
        """Every `*.parquet` file under a Parquet source's folder, by path."""
        where = self._where(name)
        selector = pafs.FileSelector(where.loc, recursive=True)
        infos = [
            i
            for i in where.fs.get_file_info(selector)
            if i.type == pafs.FileType.File and i.path.endswith(".parquet")
            and not any(part[:1] in "._" for part in i.path[len(where.loc) + 1 :].split("/"))
        ]  # fmt: skip
        out = []
        for info in sorted(infos, key=lambda i: i.path):
            full = where.path_of(info.path[len(where.loc) + 1 :])
            rows = self.parquet_file(full).metadata.num_rows
            out.append(LakePart(full, info.path[len(where.loc) + 1 :], int(info.size or 0), rows))
        return out

    def delta_table(self, name: str) -> DeltaTable:
        """`name`'s latest version as a delta-rs table (the lake's own, or a Delta source)."""
        table = self._delta(name)
        if table is None:
            raise ConsentryError(f"{name!r} is not a Delta table of the lake at {self.uri}")
        return table

    def location_of(self, name: str) -> str:
        """Where `name` lives: a local folder or an `s3://` URI (its source's, if external)."""
        return self._where(name).uri

    def files(self, name: str, *, version: int | None = None) -> list[str]:
        """The data files of `name` at `version` (default: the latest), in write order, as
        local paths or `s3://` URIs; [] when the table is absent."""
        return [part.path for part in self.parts(name, version=version)]

    def _fs_of(self, path: str) -> tuple[pafs.FileSystem, str]:
        """The filesystem a data file's path (local or `s3://`) lives on, and its path
        there."""
        if path.startswith("s3://"):
            fs = self._fs if self.remote else s3_filesystem(s3_options(os.environ))
            return fs, path.removeprefix("s3://")
        return (pafs.LocalFileSystem() if self.remote else self._fs), path

    def parquet_file(self, path: str) -> pq.ParquetFile:
        """One of the lake's data files (`files`), opened: its footer read."""
        fs, where = self._fs_of(path)
        return pq.ParquetFile(where, filesystem=fs)

    def read_files(
        self,
        paths: Sequence[str],
        columns: Sequence[str] | None = None,
        *,
        table: str | None = None,
    ) -> pa.Table:
        """These data files (`files`), read whole or `columns` of them. With `table`,
        column names are canonical: an external source's are mapped."""
        if not paths:
            raise ConsentryError("no data files to read")
        fs, _ = self._fs_of(paths[0])
        source = self.external.get(table) if table is not None else None
        cols = list(columns) if columns is not None else None
        if source is not None and cols is not None:
            cols = [source.source_column(c) for c in cols]
        data = pq.read_table([self._fs_of(p)[1] for p in paths], filesystem=fs, columns=cols)
        return canonical_names(data, source)

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
                raise ConsentryError(f"the lake at {self.uri} has no table {name!r}")
            if schema is None:
                return pa.table({})
            return schema.empty_table()
        data = self.read_files(files, table=name)
        if schema is not None:
            data = data.select(schema.names).cast(schema)
        return data

    def row_count(self, name: str) -> int:
        """Rows in the latest version, from the log's record counts; 0 if absent."""
        return sum(part.rows for part in self.parts(name))

    def row_counts(self) -> dict[str, int]:
        """Row count of every table in the lake."""
        return {name: self.row_count(name) for name in self.tables()}

    def relation(
        self,
        con: duckdb.DuckDBPyConnection,
        paths: Sequence[str],
        alias: str,
        *,
        table: str | None = None,
    ) -> str:
        """SQL for a relation over these data files on the DuckDB connection `con` (with
        `table`, under canonical column names: an external source's are mapped).

        A local lake's files are read by DuckDB's own Parquet reader (`read_parquet`); an
        object-store lake's are registered as an Arrow dataset named `alias` (filters and
        projections are pushed down into the scan), since DuckDB's S3 support is an
        extension it would download at run time.
        """
        if not paths:
            raise ConsentryError(f"no data files to read as {alias!r}")
        if not paths[0].startswith("s3://"):
            relation = "read_parquet([" + ", ".join(sql_str(p) for p in paths) + "])"
        else:
            import pyarrow.dataset as ds

            fs, _ = self._fs_of(paths[0])
            located = [self._fs_of(p)[1] for p in paths]
            con.register(alias, ds.dataset(located, filesystem=fs, format="parquet"))
            relation = '"' + alias.replace('"', '""') + '"'
        source = self.external.get(table) if table is not None else None
        if source is None or not source.columns:
            return relation
        schema = _canonical_schema(source.table)
        names = schema.names if schema is not None else list(source.columns)
        renamed = ", ".join(f'"{source.source_column(n)}" AS "{n}"' for n in names)
        return f"(SELECT {renamed} FROM {relation})"

    def table(self, backend: ibis.BaseBackend, name: str) -> ir.Table:
        """`name` as an Ibis table on `backend` (DuckDB or PySpark), registered as a view.

        1. The latest version is resolved once; the view reads exactly its files (listed by
           delta-rs, so neither engine needs a Delta connector).
        2. A missing canonical table is an empty table with the canonical schema.
        3. The view is named after the table (replacing an earlier view of that name).
        4. On an object-store lake, DuckDB scans an Arrow dataset of the files; Spark is
           refused (it would need the hadoop-aws JARs: docs/engines.md).
        """
        import ibis

        files = self.files(name)
        if not files:
            schema = _canonical_schema(name)
            if schema is None:
                raise ConsentryError(f"the lake at {self.uri} has no table {name!r}")
            return backend.create_view(name, ibis.memtable(schema.empty_table()), overwrite=True)
        remote = files[0].startswith("s3://")
        source = self.external.get(name)
        # An external source is read under its own columns, then renamed (below).
        read_as = f"{name}_source" if source is not None else name
        if backend.name == "pyspark":
            if remote:
                raise BadInput(
                    Problem(
                        "command line",
                        None,
                        "--engine",
                        f"table {name!r} is on object storage: use --engine duckdb "
                        "(Spark would need the hadoop-aws JARs; docs/engines.md)",
                    )
                )
            session = backend._session
            session.read.parquet(*files).createOrReplaceTempView(read_as)
            view = backend.table(read_as)
        elif remote:
            import pyarrow.dataset as ds

            fs, _ = self._fs_of(files[0])
            located = [self._fs_of(f)[1] for f in files]
            backend.con.register(read_as, ds.dataset(located, filesystem=fs, format="parquet"))
            view = backend.table(read_as)
        else:
            view = backend.read_parquet(files, table_name=read_as)
        schema = _canonical_schema(name)
        if source is None or schema is None:
            return view
        # Canonical names and types: the source's columns are renamed and cast.
        target = ibis.Schema.from_pyarrow(schema)
        view = view.select(
            **{n: view[source.source_column(n)].cast(target[n]) for n in schema.names}
        )
        return backend.create_view(name, view, overwrite=True)

    # ----------------------------------------------------------------- writing

    @contextlib.contextmanager
    def _locked(self, name: str) -> Iterator[Path]:
        """Hold an exclusive lock on the table's local folder (one writer per table on this
        machine; on object storage, Delta's conditional commits refuse a second writer's
        conflicting commit)."""
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
                    and not (table_dir / DELTA_LOG).exists()
                    and not any(table_dir.glob(f"{_STAGED}*"))
                ):
                    shutil.rmtree(table_dir, ignore_errors=True)
        finally:
            os.close(fd)

    def stage(self, name: str, token: str, *, append: bool = False) -> Path:
        """An empty local folder for parts of `name` that `publish(name, token)` will make
        live (or `discard` remove). The caller must hold the table's job lock until then.

        `append=False`: the published parts replace the table's rows. `append=True`: they
        are added to them.
        """
        if not _TOKEN.match(token):
            raise ConsentryError(f"bad snapshot token {token!r}: 8 to 64 hex digits")
        self._check_own(name, "write")
        self._committed(name)  # refuses an unconverted table before anything is written
        table_dir = self._table_dir(name)
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
           (schema enforcement). On a local lake the folder is renamed `data-<token>`; on
           object storage the parts are uploaded to `data-<token>/` (again, if an earlier
           attempt stopped) and the local folder is kept until the commit.
        3. Then one Delta commit adds its parts — appending, or overwriting (removing every
           file of the latest version) — together with the app transaction. This is the
           commit point.
        4. Nothing staged and not committed: False.
        """
        with self._locked(name):
            return self._publish(name, token)

    def _publish(self, name: str, token: str) -> bool:
        """`publish` for a caller holding the table's writer lock."""
        table_dir = self._table_dir(name)
        staged = table_dir / f"{_STAGED}{token}"
        table = self._delta(name)
        if table is not None and table.transaction_version(_app_id(token)) is not None:
            (table_dir / f"{DATA_PREFIX}{token}" / _APPEND_MARK).unlink(missing_ok=True)
            if self.remote:
                shutil.rmtree(staged, ignore_errors=True)
            return True
        if self.remote:
            if not staged.is_dir():
                return False
            self._seal(name, staged, table)
            for part in _parts(staged):
                target = f"{self._loc(name)}/{DATA_PREFIX}{token}/{part.name}"
                pafs.copy_files(str(part), target, destination_filesystem=self._fs)
            # Uploaded, not committed: a process killed here leaves objects no version lists.
            failpoint("lake.uploaded")
            parts = staged
        else:
            data = table_dir / f"{DATA_PREFIX}{token}"
            if staged.is_dir():
                self._seal(name, staged, table)
                os.rename(staged, data)
                _fsync_dir(table_dir)
            if not data.is_dir():
                return False
            parts = data
        self._commit(name, table, parts, token, append=(parts / _APPEND_MARK).exists())
        (parts / _APPEND_MARK).unlink(missing_ok=True)
        if self.remote:
            shutil.rmtree(staged, ignore_errors=True)
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
            check_part_schema(name, part, expected)

    def _commit(
        self, name: str, table: DeltaTable | None, parts_dir: Path, token: str, *, append: bool
    ) -> None:
        """One Delta commit adding `parts_dir`'s parts as `data-<token>/part-…` (their
        sizes and row counts read from the local files)."""
        from deltalake import Schema
        from deltalake.transaction import (
            AddAction,
            CommitProperties,
            Transaction,
            create_table_with_add_actions,
        )

        now_ms = int(time.time() * 1000)
        parts = _parts(parts_dir)
        adds = [
            AddAction(
                path=f"{DATA_PREFIX}{token}/{part.name}",
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
                self._table_uri(name),
                Schema.from_arrow(schema),
                adds,
                mode="error",
                configuration=TABLE_CONFIGURATION,
                storage_options=self.storage_options or None,
                commit_properties=properties,
            )
        else:
            table.create_write_transaction(
                adds,  # type: ignore[arg-type]
                mode="append" if append else "overwrite",
                schema=schema,
                commit_properties=properties,
            )

    def _uncommitted_data(self, name: str, table: DeltaTable | None) -> set[str]:
        """Tokens of `data-<token>` folders no commit added (a publish that stopped)."""
        if name in self.external:
            return set()
        if self.remote:
            try:
                infos = self._fs.get_file_info(pafs.FileSelector(self._loc(name)))
            except (FileNotFoundError, OSError):
                return set()
            found = {
                i.base_name[len(DATA_PREFIX) :]
                for i in infos
                if i.type == pafs.FileType.Directory and i.base_name.startswith(DATA_PREFIX)
            }
        else:
            table_dir = self._table_dir(name)
            found = (
                {p.name[len(DATA_PREFIX) :] for p in table_dir.glob(f"{DATA_PREFIX}*")}
                if table_dir.is_dir()
                else set()
            )
        return {t for t in found if table is None or table.transaction_version(_app_id(t)) is None}

    def discard(self, name: str, token: str) -> None:
        """Remove the unpublished parts staged under `token`, if any (never published ones)."""
        if not _TABLE_NAME.fullmatch(name):
            return
        table_dir = self._table_dir(name)
        shutil.rmtree(table_dir / f"{_STAGED}{token}", ignore_errors=True)
        table = self._delta(name)
        if token in self._uncommitted_data(name, table):
            if self.remote:
                self._fs.delete_dir(f"{self._loc(name)}/{DATA_PREFIX}{token}")
            else:
                shutil.rmtree(table_dir / f"{DATA_PREFIX}{token}", ignore_errors=True)
        # A table whose only content was this staged snapshot leaves no trace.
        if table_dir.is_dir() and not any(table_dir.iterdir()):
            table_dir.rmdir()

    def staged_tokens(self, name: str) -> list[str]:
        """Tokens of the parts of `name` staged and not yet published or discarded."""
        table_dir = self._table_dir(name)
        staged = (
            {p.name[len(_STAGED) :] for p in table_dir.glob(f"{_STAGED}*")}
            if table_dir.is_dir()
            else set()
        )
        return sorted(staged | self._uncommitted_data(name, self._delta(name)))

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
