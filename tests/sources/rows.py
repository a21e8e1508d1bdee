"""Valid sample rows for every canonical table, writers for each format, and a lake hash."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from consentry.schema import TABLES, arrow_schema

MISSING = object()
"""Marker: drop the column entirely."""

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

SAMPLES: dict[str, list[dict[str, Any]]] = {
    "users": [
        {
            "user_id": "u1",
            "created_at": T0,
            "region": "FR",
            "birth_date": date(1990, 2, 3),
            "protected": False,
            "deactivated_at": None,
            "deleted_at": None,
        },
        {
            "user_id": "u2",
            "created_at": datetime(2024, 5, 2, 8, 30, 15, 250000, tzinfo=UTC),
            "region": "US",
            "birth_date": None,
            "protected": True,
            "deactivated_at": datetime(2024, 6, 1, tzinfo=UTC),
            "deleted_at": None,
        },
        {
            "user_id": "u3",
            "created_at": T0,
            "region": "DE",
            "birth_date": date(2008, 12, 31),
            "protected": False,
            "deactivated_at": None,
            "deleted_at": datetime(2024, 7, 1, tzinfo=UTC),
        },
    ],
    "posts": [
        {
            "post_id": "p1",
            "author_id": "u1",
            "created_at": T0,
            "text": 'hello, "world"',
            "visibility": "public",
            "lang": "en",
            "deleted_at": None,
        },
        {
            "post_id": "p2",
            "author_id": "u2",
            "created_at": datetime(2024, 5, 1, 13, 0, tzinfo=UTC),
            "text": "two\nlines",
            "visibility": "protected",
            "lang": None,
            "deleted_at": None,
        },
        {
            "post_id": "p3",
            "author_id": "u1",
            "created_at": datetime(2024, 5, 1, 14, 0, tzinfo=UTC),
            "text": "",
            "visibility": "direct",
            "lang": "fr",
            "deleted_at": datetime(2024, 5, 3, tzinfo=UTC),
        },
    ],
    "consent_events": [
        {
            "event_id": "e1",
            "user_id": "u1",
            "purpose": "ai_training",
            "choice": "deny",
            "at": T0,
            "source": "settings",
        },
        {
            "event_id": "e2",
            "user_id": "u2",
            "purpose": "ai_training",
            "choice": "allow",
            "at": T0,
            "source": "api",
        },
        {
            "event_id": "e3",
            "user_id": "u1",
            "purpose": "research",
            "choice": "deny",
            "at": datetime(2024, 5, 9, tzinfo=UTC),
            "source": "gpc",
        },
    ],
    "access_events": [
        {
            "request_id": "r1",
            "ts": T0,
            "credential": "key-1",
            "posts": 100,
            "endpoint": "/timeline",
        },
        {"request_id": "r2", "ts": T0, "credential": "10.0.0.1", "posts": 0, "endpoint": None},
        {
            "request_id": "r3",
            "ts": datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC),
            "credential": "key-1",
            "posts": 2500,
            "endpoint": "/search",
        },
    ],
    "entities": [
        {"credential": "key-1", "entity": "Acme AI", "valid_from": T0, "valid_to": None},
        {"credential": "key-1", "entity": "Other Ltd", "valid_from": None, "valid_to": T0},
        {
            "credential": "10.0.0.0/24",
            "entity": "Acme AI",
            "valid_from": T0,
            "valid_to": datetime(2025, 1, 1, tzinfo=UTC),
        },
    ],
}
"""Three valid rows per canonical table, with canonical Python values."""


def as_text(value: Any) -> str | None:
    """A canonical Python value as CSV/JSON text."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def as_json(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    return as_text(value)


def write_csv(
    path: Path,
    table: str,
    rows: list[dict[str, Any]],
    *,
    raw: dict[int, dict[str, Any]] | None = None,
) -> Path:
    """Write rows as CSV; `raw[index][column]` replaces a cell with a literal text (or MISSING)."""
    rows = [dict(r) for r in rows]
    for index, changes in (raw or {}).items():
        rows[index].update(changes)
    names = [c for c in TABLES[table].column_names if all(r.get(c) is not MISSING for r in rows)]
    extra = [k for k in rows[0] if k not in TABLES[table].column_names]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(names + extra)
        for row in rows:
            writer.writerow(
                [
                    "" if (v := row[c]) is None else v if isinstance(v, str) else as_text(v)
                    for c in names + extra
                ]
            )
    return path


def write_jsonl(
    path: Path,
    table: str,
    rows: list[dict[str, Any]],
    *,
    raw: dict[int, dict[str, Any]] | None = None,
) -> Path:
    """Write rows as JSON Lines; `raw[index][column]` is put in the JSON as given."""
    lines = []
    for index, row in enumerate(rows):
        obj = {k: as_json(v) for k, v in row.items() if v is not MISSING}
        for k, v in (raw or {}).get(index, {}).items():
            if v is MISSING:
                obj.pop(k, None)
            else:
                obj[k] = v
        lines.append(json.dumps(obj))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_parquet(
    path: Path,
    table: str,
    rows: list[dict[str, Any]],
    *,
    raw: dict[int, dict[str, Any]] | None = None,
) -> Path:
    """Write rows as Parquet with canonical types.

    A column with a `raw` text override is written as text (other rows as their text form);
    a `raw` None makes the cell null; MISSING drops the column.
    """
    raw = raw or {}
    schema = arrow_schema(table)
    columns: dict[str, pa.Array] = {}
    for field in schema:
        overrides = {i: ch[field.name] for i, ch in raw.items() if field.name in ch}
        if any(v is MISSING for v in overrides.values()):
            continue
        values = [r[field.name] for r in rows]
        for i, v in overrides.items():
            values[i] = v
        if any(isinstance(v, str) for v in overrides.values()):
            columns[field.name] = pa.array(
                [v if isinstance(v, str) or v is None else as_text(v) for v in values], pa.string()
            )
        else:
            columns[field.name] = pa.array(values, field.type)
    pq.write_table(pa.table(columns), path)
    return path


WRITERS = {"csv": write_csv, "jsonl": write_jsonl, "parquet": write_parquet}
SUFFIX = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}


def write(fmt: str, path: Path, table: str, rows: list[dict[str, Any]], **kw: Any) -> Path:
    writer: Any = WRITERS[fmt]
    result: Path = writer(path.with_suffix(SUFFIX[fmt]), table, rows, **kw)
    return result


def tree_hash(root: Path) -> str:
    """Hash of every path and file byte under `root` (a missing root hashes as empty)."""
    digest = hashlib.sha256()
    if root.exists():
        for path in sorted(root.rglob("*")):
            digest.update(str(path.relative_to(root)).encode())
            if path.is_file():
                digest.update(path.read_bytes())
    return digest.hexdigest()


__all__ = [
    "MISSING",
    "SAMPLES",
    "SUFFIX",
    "T0",
    "as_json",
    "as_text",
    "tree_hash",
    "write",
    "write_csv",
    "write_jsonl",
    "write_parquet",
]
