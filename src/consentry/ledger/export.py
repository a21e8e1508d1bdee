"""Every author's signal headers at once, and their export to edge key-value stores.

The headers for one author are the rule of `consentry.ledger.signals` (`author_signals`,
`author_header_fields`); it is Python, per decision vector. Authors are many
and vectors are few (one bit per AIPREF-mapped purpose), so this module resolves every
author with `resolve_consent_bulk`, derives the headers once per distinct vector from a
representative author's real decisions, and maps authors to them with array operations.
`tests/ledger/test_signals_export.py` holds the mapping to the per-author rule.

Export file (NDJSON, UTF-8, one JSON object per line, sorted by key):

    {"key": "<author id>", "value": {"content-usage": "...", ...}}   put these headers
    {"key": "<author id>", "value": null}                           remove: site default
    {"cursor": "...", "since": ..., ...}                            trailer, always last

Snapshots (`<exports dir>/<cursor>.parquet`: `author_id`, `header_hash`) make `--since` a
join: the diff is exact whatever happened in between (policy versions coming into force,
minors coming of age, subjects synced or deleted).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import ibis
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa

from consentry.errors import BadInput, Problem
from consentry.instants import rfc3339
from consentry.ledger.bulk import resolve_consent_bulk
from consentry.ledger.rules import ConsentDecision, ConsentRule
from consentry.ledger.service import ConsentLedger
from consentry.ledger.signals import (
    AiprefValue,
    author_header_fields,
    author_signals,
)
from consentry.policy import Choice, PolicyFile, PolicyVersion
from consentry.store.models import AuditEventRow

__all__ = [
    "EXPORT_FORMAT",
    "ExportResult",
    "HeaderSet",
    "SignalTable",
    "atomic_write",
    "authors_at",
    "diff_snapshots",
    "export_signals",
    "header_set",
    "signal_purposes",
    "signal_table",
    "snapshot",
]

EXPORT_FORMAT = "consentry-signals-ndjson/1"
"""Named in every trailer; changes only with an incompatible change of the file."""

_CURSOR = re.compile(r"a[0-9]+-[A-Za-z0-9._-]{1,64}-[0-9a-f]{12}")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class HeaderSet:
    """The response header fields for content by the authors of one decision vector."""

    fields: tuple[tuple[str, str], ...]
    """(lower-case name, value), in the order a response carries them."""
    value_json: str
    """`fields` as a compact JSON object: the value written for each author."""
    digest: str
    """First 16 hex digits of the SHA-256 of `value_json`: what snapshots compare."""
    train_ai: AiprefValue | None
    """The AIPREF `train-ai` preference (None: unknown, not stated)."""


@dataclass(frozen=True, slots=True)
class SignalTable:
    """Every author's header set at one instant."""

    at: datetime
    policy_version: str | None
    header_sets: tuple[HeaderSet, ...]
    authors: pa.Table
    """`author_id` (string, sorted) and `header_set` (int32, index into `header_sets`)."""

    def counts(self) -> list[int]:
        """Authors per header set, in `header_sets` order."""
        index = self.authors["header_set"].to_numpy()
        return [int(n) for n in np.bincount(index, minlength=len(self.header_sets))]


def header_set(
    version: PolicyVersion | None, decisions: Sequence[ConsentDecision], base_url: str
) -> HeaderSet:
    """The header fields for an author with these decisions (the rule of
    `consentry.ledger.signals`, applied once).

    1. `author_signals` gives the AIPREF, TDMRep and intent signals.
    2. `author_header_fields` gives `content-usage`, and `tdm-reservation` with
       `tdm-policy` and `x-robots-tag` where rights are reserved.
    """
    signals = author_signals(version, decisions)
    fields = author_header_fields(signals, base_url)
    value_json = json.dumps(dict(fields), separators=(",", ":"), ensure_ascii=False)
    return HeaderSet(
        fields=tuple(fields),
        value_json=value_json,
        digest=hashlib.sha256(value_json.encode()).hexdigest()[:16],
        train_ai=signals.aipref.get("train-ai"),
    )


def signal_purposes(version: PolicyVersion | None) -> list[str]:
    """The purposes whose decisions can change a header: those mapped to an AIPREF
    category (the others contribute to no signal)."""
    return [p.key for p in version.purposes if p.aipref] if version else []


def authors_at(subjects: pa.Table, at: datetime) -> pa.Table:
    """The subjects who were authors at `at`: created by then (or of unknown creation) and
    not deleted by then (`subjects` as `ConsentLedger.subjects_arrow` gives them)."""
    at_scalar = pa.scalar(at.astimezone(UTC), pa.timestamp("us", tz="UTC"))
    created = pc.or_kleene(
        pc.is_null(subjects["created_at"]), pc.less_equal(subjects["created_at"], at_scalar)
    )
    alive = pc.or_kleene(
        pc.is_null(subjects["deleted_at"]), pc.greater(subjects["deleted_at"], at_scalar)
    )
    return subjects.filter(pc.and_kleene(created, alive))


def signal_table(
    policy: PolicyFile,
    subjects: pa.Table,
    events: pa.Table,
    at: datetime,
    base_url: str,
) -> SignalTable:
    """Every author's header set at `at`, vectorised.

    1. The authors are `authors_at(subjects, at)`; each purpose of `signal_purposes` is
       resolved for all of them at `at` with `resolve_consent_bulk` (one DuckDB query).
    2. Each author's decision vector is an integer: bit i set when purpose i resolves to
       deny. Per distinct vector, the author with the smallest id is its representative.
    3. The representative's real decisions give the vector's `header_set`; vectors with
       equal headers share one set.
    4. Authors are mapped to sets through their vector with a sorted search (no per-author
       Python).
    """
    at = at.astimezone(UTC)
    version = policy.version_at(at)
    keys = signal_purposes(version)
    authors = authors_at(subjects, at).select(["user_id", "region", "birth_date"])
    if not keys or authors.num_rows == 0:
        only = header_set(version, [], base_url)
        ids = pc.array_sort_indices(authors["user_id"])
        return SignalTable(
            at,
            version.version if version else None,
            (only,),
            pa.table(
                {
                    "author_id": authors["user_id"].take(ids),
                    "header_set": pa.array(np.zeros(authors.num_rows, np.int32)),
                }
            ),
        )
    assert version is not None  # keys come from a version
    backend = ibis.duckdb.connect()
    try:
        users = ibis.memtable(authors)
        ledger_events = ibis.memtable(events)
        parts = []
        for i, key in enumerate(keys):
            r = resolve_consent_bulk(policy, users, ledger_events, key, at)
            parts.append(
                r.select(
                    "user_id",
                    "decision",
                    "rule",
                    "since",
                    purpose=ibis.literal(key),
                    bit=ibis.ifelse(r.decision == Choice.DENY.value, 1 << i, 0).cast("int64"),
                )
            )
        union = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
        resolved = backend.create_table("resolved", union, temp=True)
        vectors = resolved.group_by("user_id").aggregate(vector=resolved.bit.sum())
        reps = vectors.group_by("vector").aggregate(rep=vectors.user_id.min())
        rep_rows = resolved.join(reps, resolved.user_id == reps.rep).select(
            "vector", "user_id", "purpose", "decision", "rule", "since"
        )
        mapped = backend.to_pyarrow(vectors.order_by("user_id"))
        rows = backend.to_pyarrow(rep_rows).to_pylist()
    finally:
        backend.disconnect()
    by_vector: dict[int, dict[str, ConsentDecision]] = {}
    for row in rows:
        by_vector.setdefault(int(row["vector"]), {})[row["purpose"]] = ConsentDecision(
            user_id=row["user_id"],
            purpose=row["purpose"],
            decision=Choice(row["decision"]),
            rule=ConsentRule(row["rule"]),
            policy_version=version.version,
            since=row["since"],
        )
    distinct = np.array(sorted(by_vector), dtype=np.int64)
    sets: list[HeaderSet] = []
    position: dict[str, int] = {}
    set_of_vector = np.empty(len(distinct), np.int32)
    for j, vector in enumerate(distinct.tolist()):
        decisions = [by_vector[vector][k] for k in keys]
        hs = header_set(version, decisions, base_url)
        if hs.digest not in position:
            position[hs.digest] = len(sets)
            sets.append(hs)
        set_of_vector[j] = position[hs.digest]
    vector_of_author = np.asarray(mapped["vector"].to_numpy(), dtype=np.int64)
    index = set_of_vector[np.searchsorted(distinct, vector_of_author)]
    return SignalTable(
        at,
        version.version,
        tuple(sets),
        pa.table({"author_id": mapped["user_id"], "header_set": pa.array(index)}),
    )


def snapshot(table: SignalTable) -> pa.Table:
    """`author_id` and `header_hash` (dictionary-encoded: few distinct values)."""
    digests = pa.array([hs.digest for hs in table.header_sets], pa.string())
    return pa.table(
        {
            "author_id": table.authors["author_id"],
            "header_hash": pa.DictionaryArray.from_arrays(
                table.authors["header_set"].combine_chunks(), digests
            ),
        }
    )


def _content_digest(snap: pa.Table) -> str:
    """SHA-256 over `author_id TAB header_hash` of every row (sorted by author): equal
    digests mean equal snapshots, so a cursor names exactly one content."""
    lines = (
        pc.binary_join_element_wise(snap["author_id"], snap["header_hash"].cast(pa.string()), "\t")
        .cast(pa.large_string())
        .combine_chunks()
    )
    digest = hashlib.sha256()
    if len(lines):
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[
            lines.offset : lines.offset + len(lines) + 1
        ]
        data = lines.buffers()[2]
        assert data is not None
        digest.update((offsets - offsets[0]).astype("<i8").tobytes())
        digest.update(memoryview(data)[int(offsets[0]) : int(offsets[-1])])
    return digest.hexdigest()


def diff_snapshots(previous: pa.Table, current: pa.Table) -> tuple[pa.Array, pa.Array]:
    """(authors to put, authors to remove) to bring an edge store from `previous` to
    `current`: put where the hash is new or differs; remove where the author is gone (the
    edge then serves the site default)."""
    cur = pa.table(
        {"author_id": current["author_id"], "now": current["header_hash"].cast(pa.string())}
    )
    old = pa.table(
        {"author_id": previous["author_id"], "was": previous["header_hash"].cast(pa.string())}
    )
    joined = cur.join(old, keys="author_id", join_type="full outer")
    now, was = joined["now"], joined["was"]
    changed = pc.and_kleene(pc.is_valid(now), pc.or_kleene(pc.is_null(was), pc.not_equal(now, was)))
    put = joined.filter(pc.fill_null(changed, False))["author_id"]
    gone = joined.filter(pc.is_null(now))["author_id"]
    return (
        pc.take(put, pc.array_sort_indices(put)).combine_chunks(),
        pc.take(gone, pc.array_sort_indices(gone)).combine_chunks(),
    )


def atomic_write(path: Path, fill: Callable[[Path], object]) -> None:
    """Write `path` whole or not at all.

    1. `fill` writes a temporary file beside `path` (same directory: same file system).
    2. The file is flushed to disk, then renamed over `path` (atomic on POSIX): a reader
       sees the old file or the new one, never a part.
    3. On any error the temporary file is removed and `path` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fill(tmp)
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What one export wrote."""

    cursor: str
    since: str | None
    at: datetime
    policy_version: str | None
    audit_seq: int
    authors: int
    put: int
    remove: int
    header_sets: list[dict[str, Any]]
    """Each distinct header set with its number of authors (in the whole population)."""
    out: Path
    snapshot: Path


def _cursor(audit_seq: int, version: str | None, digest: str) -> str:
    name = _UNSAFE.sub("_", version or "none")[:64]
    return f"a{audit_seq}-{name}-{digest[:12]}"


def _audit_seq(ledger: ConsentLedger) -> int:
    with ledger.store.session() as session:
        seq = session.execute(sa.select(sa.func.max(AuditEventRow.seq))).scalar()
    return int(seq or 0)


def _write_ndjson(
    path: Path, table: SignalTable, put: pa.Array, remove: pa.Array, trailer: dict[str, Any]
) -> None:
    """Put lines, remove lines (sorted by key together), then the trailer; the JSON of the
    lines is written by DuckDB (escaping included), the trailer appended."""
    sets = pa.table(
        {
            "header_set": pa.array(range(len(table.header_sets)), pa.int32()),
            "value": pa.array([hs.value_json for hs in table.header_sets], pa.string()),
        }
    )
    wanted = pa.table({"author_id": put})
    con = duckdb.connect()
    try:
        con.register("authors", table.authors)
        con.register("wanted", wanted)
        con.register("sets", sets)
        con.register("gone", pa.table({"author_id": remove}))
        con.execute(
            f"""COPY (
                SELECT key, value FROM (
                    SELECT a.author_id AS key, s.value::JSON AS value
                    FROM wanted w JOIN authors a USING (author_id) JOIN sets s USING (header_set)
                    UNION ALL
                    SELECT author_id AS key, NULL::JSON AS value FROM gone
                ) ORDER BY key
            ) TO '{_sql_path(path)}' (FORMAT JSON)"""
        )
    finally:
        con.close()
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(trailer, separators=(",", ":"), sort_keys=True) + "\n")


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def export_signals(
    ledger: ConsentLedger,
    exports_dir: Path,
    *,
    at: datetime,
    base_url: str,
    since: str | None = None,
    out: Path | None = None,
    on_step: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export every author's headers at `at` (all of them, or with `since` only the
    difference from that export), and keep a snapshot for the next diff.

    1. `since`, when given, must name a snapshot in `exports_dir` (BadInput otherwise);
       it is read before anything is written.
    2. The ledger's subjects and the events of the purposes in `signal_purposes` are read;
       `signal_table` gives every author's header set.
    3. The cursor is `a<audit seq>-<policy version>-<12 hex of the snapshot's digest>`:
       the audit log's last sequence number (what the ledger had recorded), the version in
       force, and the content itself, so one cursor always names one snapshot.
    4. The export file (default `<exports_dir>/<cursor>.ndjson`, for a diff
       `<cursor>.since-<since>.ndjson`) is written, then the
       snapshot `<exports_dir>/<cursor>.parquet`, each with `atomic_write`: a process
       killed midway leaves no partial file, and an export file whose snapshot is missing
       is simply never a `since`.
    """
    step = on_step or (lambda _: None)
    at = at.astimezone(UTC)
    previous = None
    if since is not None:
        if not _CURSOR.fullmatch(since) or not (exports_dir / f"{since}.parquet").is_file():
            raise BadInput(
                Problem(
                    "--since",
                    None,
                    None,
                    f"unknown cursor {since!r}: no export snapshot of that name in "
                    f"{exports_dir} (use the cursor of an earlier export's trailer)",
                )
            )
        previous = pq.read_table(exports_dir / f"{since}.parquet")
    step("reading the ledger")
    version = ledger.policy.version_at(at)
    audit_seq = _audit_seq(ledger)
    subjects = ledger.subjects_arrow()
    events = ledger.events_arrow(signal_purposes(version), at)
    step(f"resolving {subjects.num_rows:,} authors")
    table = signal_table(ledger.policy, subjects, events, at, base_url)
    snap = snapshot(table)
    cursor = _cursor(audit_seq, table.policy_version, _content_digest(snap))
    if previous is None:
        put, remove = table.authors["author_id"].combine_chunks(), pa.array([], pa.string())
    else:
        step("comparing with the earlier export")
        put, remove = diff_snapshots(previous, snap)
    counts = table.counts()
    trailer: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "cursor": cursor,
        "since": since,
        "at": rfc3339(at),
        "policy_version": table.policy_version,
        "authors": table.authors.num_rows,
        "put": len(put),
        "remove": len(remove),
    }
    # A diff is named after both cursors: a diff with no change has the cursor of its base
    # and must not replace that base's full export.
    default_name = f"{cursor}.ndjson" if since is None else f"{cursor}.since-{since}.ndjson"
    target = out if out is not None else exports_dir / default_name
    step(f"writing {len(put):,} puts and {len(remove):,} removals")
    atomic_write(target, lambda tmp: _write_ndjson(tmp, table, put, remove, trailer))
    meta = {
        b"consentry.cursor": cursor.encode(),
        b"consentry.at": rfc3339(at).encode(),
        b"consentry.header_sets": json.dumps(
            {hs.digest: dict(hs.fields) for hs in table.header_sets}, sort_keys=True
        ).encode(),
    }
    atomic_write(
        exports_dir / f"{cursor}.parquet",
        lambda tmp: pq.write_table(snap.replace_schema_metadata(meta), tmp, compression="zstd"),
    )
    return ExportResult(
        cursor=cursor,
        since=since,
        at=at,
        policy_version=table.policy_version,
        audit_seq=audit_seq,
        authors=table.authors.num_rows,
        put=len(put),
        remove=len(remove),
        header_sets=[
            {"headers": dict(hs.fields), "authors": n}
            for hs, n in zip(table.header_sets, counts, strict=True)
        ],
        out=target,
        snapshot=exports_dir / f"{cursor}.parquet",
    )
