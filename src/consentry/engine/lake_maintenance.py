"""A lake table's history and upkeep: its versions and which are still readable, the
files time travel can reach, compaction and vacuum (mixed into `consentry.engine.lake.Lake`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.fs as pafs

from consentry.engine.external import ExternalTable
from consentry.engine.lake_storage import DATA_PREFIX, DELTA_LOG, PUBLISH_APP
from consentry.errors import ConsentryError

if TYPE_CHECKING:
    import contextlib

    from deltalake import DeltaTable

    from consentry.engine.lake_storage import TableLocation

__all__ = ["LakeMaintenance", "TableVersion", "VacuumPlan", "Vacuumed"]


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
class VacuumPlan:
    """What a vacuum of one table will delete (`Lake.plan_vacuum`), decided before any file
    goes, so that a job can record it first and finish it after a crash."""

    table: str
    files: tuple[str, ...]
    """Paths (relative to the table folder) of the data files to delete."""
    readable_before: tuple[int, ...]
    """The versions readable when the plan was made."""

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "files": list(self.files),
            "readable_before": list(self.readable_before),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VacuumPlan:
        return cls(data["table"], tuple(data["files"]), tuple(data["readable_before"]))


@dataclass(frozen=True, slots=True)
class Vacuumed:
    """What a vacuum removed from one table (`Lake.vacuum`, `Lake.carry_out`)."""

    table: str
    files_removed: tuple[str, ...]
    """Paths (relative to the table folder) of the planned data files now gone."""
    versions_removed: tuple[int, ...]
    """Versions readable before the vacuum and not after it (time travel to them fails)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "files_removed": len(self.files_removed),
            "versions_removed": list(self.versions_removed),
        }


class LakeMaintenance:
    """History, readable versions, reachable files, `optimize` and `vacuum` of the lake's
    tables; the rest of `Lake` provides the locations, the tables and the writer lock."""

    uri: str
    remote: bool
    external: dict[str, ExternalTable]

    if TYPE_CHECKING:

        def _check_name(self, name: str) -> str: ...
        def _check_own(self, name: str, doing: str) -> None: ...
        def _delta(self, name: str, version: int | None = None) -> DeltaTable | None: ...
        def _where(self, name: str) -> TableLocation: ...
        def _fs_of(self, path: str) -> tuple[pafs.FileSystem, str]: ...
        def _table_dir(self, name: str) -> Path: ...
        def _locked(self, name: str) -> contextlib.AbstractContextManager[Path]: ...
        def files(self, name: str, *, version: int | None = None) -> list[str]: ...
        def staged_tokens(self, name: str) -> list[str]: ...
        def version(self, name: str) -> int | None: ...

    def history(self, name: str) -> list[TableVersion]:
        """Every committed version of `name`, newest first, with whether it is still readable."""
        source = self.external.get(self._check_name(name))
        if source is not None and source.format != "delta":
            raise ConsentryError(f"{name!r} is a {source.format} source: it has no versions")
        table = self._delta(name)
        if table is None:
            raise ConsentryError(f"the lake at {self.uri} has no table {name!r}")
        readable = {v for v, paths in self._readable_versions(name).items() if paths is not None}
        versions = []
        for commit in table.history():
            version = int(commit["version"])
            versions.append(
                TableVersion(
                    version=version,
                    committed_at_ms=int(commit.get("timestamp", 0)),
                    operation=str(commit.get("operation", "")),
                    token=self._token_of_commit(name, version),
                    readable=version in readable,
                )
            )
        return versions

    def _readable_versions(self, name: str) -> dict[int, list[str] | None]:
        """Version -> the files it lists when every one of them still exists, else None.

        1. One delta-rs table is moved forward version by version (`load_as_version` from
           the previous version replays only the commits in between), so the cost grows
           with the number of versions, not with its square.
        2. A version the log no longer holds is not readable.
        3. Whether the files exist is asked once for all of them (one batched call).
        """
        latest = self._delta(name)
        if latest is None:
            return {}
        where = self._where(name)
        listed: dict[int, list[str] | None] = {}
        walker: DeltaTable | None = None
        for version in range(latest.version() + 1):
            try:
                if walker is None:
                    walker = self._delta(name, version)
                else:
                    walker.load_as_version(version)
            except Exception:  # the log no longer holds this version (delta-rs's own errors)
                walker = None
                listed[version] = None
                continue
            assert walker is not None
            paths = pa.table(walker.get_add_actions(flatten=True)).column("path").to_pylist()
            listed[version] = [where.path_of(p) for p in paths]
        every = sorted({p for paths in listed.values() if paths for p in paths})
        present = set()
        if every:
            fs, _ = self._fs_of(every[0])
            infos = fs.get_file_info([self._fs_of(p)[1] for p in every])
            present = {
                p for p, i in zip(every, infos, strict=True) if i.type != pafs.FileType.NotFound
            }
        return {
            v: (paths if paths is not None and all(p in present for p in paths) else None)
            for v, paths in listed.items()
        }

    def reachable_files(self, name: str) -> list[str]:
        """Every data file that any still-readable version of `name` lists, sorted.

        This is what time travel can return: a purge is complete only when none of these
        holds a purged row (`retention.verify.verify_purge`).
        """
        source = self.external.get(name)
        if source is not None and source.format != "delta":
            return sorted(self.files(name))
        found: set[str] = set()
        for paths in self._readable_versions(name).values():
            found.update(paths or ())
        return sorted(found)

    def _token_of_commit(self, name: str, version: int) -> str | None:
        """The publish token a commit carries (its app transaction), if any.

        The commit file is JSON lines per the Delta protocol; delta-rs exposes the latest
        transaction version per app but not which commit wrote it, so the commit is read.
        """
        where = self._where(name)
        try:
            with where.fs.open_input_stream(f"{where.loc}/{DELTA_LOG}/{version:020d}.json") as fh:
                lines = fh.read().decode("utf-8").splitlines()
        except (FileNotFoundError, OSError):
            return None
        for line in lines:
            txn = json.loads(line).get("txn")
            if txn and str(txn.get("appId", "")).startswith(PUBLISH_APP):
                return str(txn["appId"])[len(PUBLISH_APP) :]
        return None

    def optimize(self, name: str, *, target_size: int | None = None) -> dict[str, Any]:
        """Compact `name`'s small files into larger ones (one commit; rows unchanged)."""
        self._check_own(name, "optimize")
        with self._locked(name):
            table = self._delta(name)
            if table is None:
                raise ConsentryError(f"the lake at {self.uri} has no table {name!r}")
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
        """Delete the data files that only old versions of `name` still list: its plan
        (`plan_vacuum`) carried out (`carry_out`) under one hold of the table's lock."""
        with self._locked(name):
            return self._carry_out(self._plan_vacuum(name, grace_hours, keep_versions))

    def plan_vacuum(
        self, name: str, *, grace_hours: int = 0, keep_versions: Sequence[int] = ()
    ) -> VacuumPlan:
        """What a vacuum of `name` would delete now; nothing is deleted.

        1. Candidates are what delta-rs's vacuum would delete with a retention of
           `grace_hours` (files removed by a commit at least that long ago, and files no
           version lists), sparing every file of the versions in `keep_versions`.
        2. Parts of a token staged or uploaded but not yet committed are never planned:
           recovery may still publish them.
        3. Only candidates still there are planned (delta-rs lists files an earlier vacuum
           deleted too).
        """
        with self._locked(name):
            return self._plan_vacuum(name, grace_hours, keep_versions)

    def carry_out(self, plan: VacuumPlan) -> Vacuumed:
        """Delete the files of `plan` still there (idempotent: a plan carried out twice,
        say by a recovery after a crash, deletes each file once).

        1. On a local lake, part folders left empty go too (never the log or a staged
           folder).
        2. `files_removed` are the planned files now gone; `versions_removed` the versions
           readable when the plan was made and not now.
        """
        with self._locked(plan.table):
            return self._carry_out(plan)

    def _plan_vacuum(self, name: str, grace_hours: int, keep_versions: Sequence[int]) -> VacuumPlan:
        source = self.external.get(name)
        if source is not None and not source.purge:
            self._check_own(name, "vacuum")
        table = self._delta(name)
        if table is None:
            raise ConsentryError(f"the lake at {self.uri} has no table {name!r}")
        before = [v.version for v in self.history(name) if v.readable]
        pending = set(self.staged_tokens(name)) if source is None else set()
        candidates = table.vacuum(
            retention_hours=grace_hours,
            dry_run=True,
            enforce_retention_duration=False,
            keep_versions=list(keep_versions) or None,
        )
        listed = [
            c
            for c in candidates
            if not (c.startswith(DATA_PREFIX) and c.split("/", 1)[0][len(DATA_PREFIX) :] in pending)
        ]
        return VacuumPlan(name, tuple(sorted(self._present(name, listed))), tuple(sorted(before)))

    def _present(self, name: str, relative: Sequence[str]) -> list[str]:
        """The files of `relative` (paths in table `name`) that exist."""
        if not relative:
            return []
        where = self._where(name)
        infos = where.fs.get_file_info([f"{where.loc}/{r}" for r in relative])
        return [r for r, i in zip(relative, infos, strict=True) if i.type != pafs.FileType.NotFound]

    def _carry_out(self, plan: VacuumPlan) -> Vacuumed:
        where = self._where(plan.table)
        for relative in self._present(plan.table, plan.files):
            where.fs.delete_file(f"{where.loc}/{relative}")
        if not self.remote and plan.table not in self.external:
            for sub in self._table_dir(plan.table).iterdir():
                # Emptied part folders (a converted snapshot's too); never the log or a
                # staged folder.
                if sub.is_dir() and sub.name[0] not in "._" and not any(sub.iterdir()):
                    sub.rmdir()
        left = set(self._present(plan.table, plan.files))
        after = {v.version for v in self.history(plan.table) if v.readable}
        return Vacuumed(
            table=plan.table,
            files_removed=tuple(f for f in plan.files if f not in left),
            versions_removed=tuple(sorted(set(plan.readable_before) - after)),
        )
