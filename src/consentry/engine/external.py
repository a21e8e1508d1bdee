"""External sources: the platform's own tables, read in place instead of imported.

A canonical lake table (users, posts, consent_events, access_events, entities) may be
registered as an *external source*: a Delta table or a folder of Parquet files, on a local
path or `s3://…`, with a column map from canonical names to the source's; or, for users
and posts, a Mastodon server's PostgreSQL database, read by the Mastodon connector each
time a job reads the table (`register_source_reader`). The registry is
one JSON file in the home (`<home>/sources.json`), written atomically; `Lake.of(settings)`
reads it, and from then on every job reads the source where the registry says, with the
canonical column names (`consentry source add`, docs/sources.md).
"""

from __future__ import annotations

import importlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import pyarrow as pa

from consentry.errors import ConsentryError

__all__ = [
    "DATABASE_SOURCE_TABLES",
    "EXTERNAL_FORMATS",
    "EXTERNAL_TABLES",
    "SOURCES_FILE",
    "ExternalTable",
    "SourceReader",
    "load_external",
    "read_source",
    "register_source_reader",
    "save_external",
]

SOURCES_FILE: Final = "sources.json"
"""The registry's file name inside the home."""

EXTERNAL_FORMATS: Final = ("delta", "parquet", "mastodon")
EXTERNAL_TABLES: Final = ("users", "posts", "consent_events", "access_events", "entities")
"""The lake tables a source may stand in for (the lineage is always Consentry's own)."""
DATABASE_SOURCE_TABLES: Final = ("users", "posts")
"""The tables a Mastodon database can stand in for (what the Mastodon connector reads)."""


@dataclass(frozen=True, slots=True)
class ExternalTable:
    """One registered source.

    `columns` maps a canonical column to the source's column that holds it; a canonical
    column not named keeps its name. `purge`: retention purges may delete and anonymise rows
    of the source itself (Delta sources only: a Delta commit, then a vacuum). `options`:
    what the format's reader needs besides the location (a Mastodon source's
    `default_region`).
    """

    table: str
    format: Literal["delta", "parquet", "mastodon"]
    location: str
    columns: Mapping[str, str] = field(default_factory=dict)
    purge: bool = False
    options: Mapping[str, str] = field(default_factory=dict)

    def source_column(self, canonical: str) -> str:
        """The source's name for the canonical column `canonical`."""
        return self.columns.get(canonical, canonical)

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "format": self.format,
            "location": self.location,
            "columns": dict(sorted(self.columns.items())),
            "purge": self.purge,
            "options": dict(sorted(self.options.items())),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExternalTable:
        fmt = data.get("format")
        if data.get("table") not in EXTERNAL_TABLES or fmt not in EXTERNAL_FORMATS:
            raise ConsentryError(f"bad external source entry {dict(data)!r}")
        return cls(
            table=str(data["table"]),
            format="delta" if fmt == "delta" else "parquet" if fmt == "parquet" else "mastodon",
            location=str(data["location"]),
            columns={str(k): str(v) for k, v in dict(data.get("columns") or {}).items()},
            purge=bool(data.get("purge", False)),
            options={str(k): str(v) for k, v in dict(data.get("options") or {}).items()},
        )


SourceReader = Callable[[ExternalTable], Mapping[str, pa.Table]]
"""Reads a source that is not files (a database) into canonical tables, by table name."""

_READERS: dict[str, SourceReader] = {}


def register_source_reader(fmt: str, reader: SourceReader) -> None:
    """Make `reader` read the sources of format `fmt` (`consentry.sources.mastodon`
    registers the Mastodon connector)."""
    _READERS[fmt] = reader


def read_source(source: ExternalTable) -> Mapping[str, pa.Table]:
    """Every table a database source holds, canonical, read now.

    The readers live in `consentry.sources` (a layer above this one), which registers them
    when imported; a process that has not imported it yet imports it here.
    """
    if source.format not in _READERS:
        importlib.import_module("consentry.sources.mastodon")
    reader = _READERS.get(source.format)
    if reader is None:
        raise ConsentryError(f"no reader for {source.format} sources")
    return reader(source)


def load_external(home: Path) -> dict[str, ExternalTable]:
    """The registry of `home` (table -> source); {} when it has none."""
    path = home / SOURCES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ConsentryError(f"{path}: not a readable sources registry ({exc})") from exc
    entries = [ExternalTable.from_json(e) for e in data.get("sources", [])]
    return {e.table: e for e in entries}


def save_external(home: Path, tables: Mapping[str, ExternalTable]) -> None:
    """Write the registry atomically (temp file, fsync, rename)."""
    path = home / SOURCES_FILE
    tmp = path.with_name(f".{SOURCES_FILE}.{uuid.uuid4().hex}")
    body = {"sources": [tables[name].to_json() for name in sorted(tables)]}
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(body, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
