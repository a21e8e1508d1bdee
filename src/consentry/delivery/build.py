"""Build one licensed delivery: eligible posts, minimised and pseudonymised, signed.

The directory is assembled beside the deliveries and renamed into place last, so a crash
leaves no visible delivery; lineage (which internal ids went into it) stays in the lake.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.parquet as pq

from consentry.delivery.eligibility import REASON_ORDER, LicenceScope, eligibility, reasons_of
from consentry.delivery.minimise import MinimisationConfig, minimise_expr
from consentry.delivery.pseudonyms import hmac_sql
from consentry.delivery.signing import Signer
from consentry.engine import Lake
from consentry.errors import BadInput, ConsentryError, Problem
from consentry.ledger.bulk import resolve_consent_bulk
from consentry.policy import AIPREF_CATEGORIES, Choice, PolicyFile

__all__ = [
    "DELIVERED_SCHEMA",
    "LINEAGE_SCHEMA",
    "LINEAGE_TABLE",
    "DeliveryTarget",
    "build_delivery",
    "evaluate_posts",
    "explain_post",
]

ROWS_PER_PART = 1_000_000
LINEAGE_TABLE = "delivery_lineage"

DELIVERED_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("author_ref", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("lang", pa.string()),
        ("text", pa.string()),
        ("author_intents", pa.string()),
    ]
)
"""Columns of every delivered part file (documented in docs/deliveries.md)."""

LINEAGE_SCHEMA = pa.schema(
    [
        ("delivery_id", pa.string()),
        ("licensee", pa.string()),
        ("record_id", pa.string()),
        ("post_id", pa.string()),
        ("author_id", pa.string()),
    ]
)
"""Private lineage: which internal post and author ids went into which delivery."""


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """Everything the build needs to know about the licensee."""

    licensee: str
    scope: LicenceScope
    secret: bytes
    minimisation: MinimisationConfig = field(default_factory=MinimisationConfig)


def evaluate_posts(
    backend: ibis.BaseBackend,
    lake: Lake,
    policy: PolicyFile,
    events: pa.Table,
    scope: LicenceScope,
    as_of: datetime,
) -> ir.Table:
    """The eligibility expression over the lake's posts and users (shared by build and
    explain, so both follow one code path)."""
    posts = lake.table(backend, "posts")
    users = lake.table(backend, "users")
    ledger_events = backend.create_table("ledger_events", events, overwrite=True)
    return eligibility(policy, posts, users, ledger_events, scope, as_of)


def _intents_expr(
    policy: PolicyFile, authors: ir.Table, events: ir.Table, as_of: datetime
) -> ir.Table:
    """Per author, the AIPREF `Content-Usage` value at `as_of` (any deny wins per category)."""
    version = policy.version_at(as_of)
    purposes = [p for p in (version.purposes if version else []) if p.aipref]
    table = authors
    for i, purpose in enumerate(purposes):
        decided = resolve_consent_bulk(policy, authors, events, purpose.key, as_of)
        decided = decided.select(_uid=decided.user_id, **{f"_d{i}": decided.decision})
        table = table.join(decided, table.user_id == decided._uid).drop("_uid")
    parts: list[ir.StringValue] = []
    for category in AIPREF_CATEGORIES:
        voters = [f"_d{i}" for i, p in enumerate(purposes) if category in p.aipref]
        if not voters:
            continue
        denied = ibis.literal(False)
        for column in voters:
            denied = denied | (table[column] == Choice.DENY.value)
        parts.append(ibis.literal(f"{category}=") + ibis.ifelse(denied, "n", "y"))
    usage: ir.StringValue = ibis.literal("")
    for i, part in enumerate(parts):
        usage = part if i == 0 else usage + ", " + part
    return table.select(intents_user=table.user_id, author_intents=usage)


def _arrow_batches(backend: ibis.BaseBackend, query: str) -> Iterator[pa.RecordBatch]:
    """Run engine SQL and stream the result as Arrow record batches."""
    if backend.name == "duckdb":
        reader = backend.con.sql(query).to_arrow_reader(100_000)
        yield from reader
        return
    frame = backend._session.sql(query)
    yield from frame.toArrow().to_batches()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_delivery(
    *,
    backend: ibis.BaseBackend,
    lake: Lake,
    policy: PolicyFile,
    events: pa.Table,
    target: DeliveryTarget,
    as_of: datetime,
    deliveries_dir: Path,
    signer: Signer,
    engine: str,
    now: datetime | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write one delivery and return its manifest.

    1. Evaluate every post (`eligibility`); count each excluded post under its first reason.
    2. Project the eligible posts: record_id = HMAC(post_id), author_ref = HMAC(author_id)
       under the licensee's secret, created_at truncated to the hour, lang, minimised text,
       the author's `Content-Usage` value at as_of.
    3. Write zstd Parquet parts sorted by record_id (the same inputs give the same bytes)
       into a staging directory; write the lineage into the lake (one atomic snapshot).
    4. Write manifest.json (counts, files with sha256 and rows, lineage digest) and its
       Ed25519 signature manifest.sig, then rename the staging directory into place.
    """
    now = now or datetime.now(UTC)
    as_of = as_of.astimezone(UTC)
    if as_of > now:
        raise BadInput(Problem("command line", None, "--as-of", "the cut-off is in the future"))
    version = policy.version_at(as_of)
    step = on_progress or (lambda _message: None)
    delivery_id = f"dlv-{as_of.strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:12]}"

    step("evaluating eligibility")
    evaluated = evaluate_posts(backend, lake, policy, events, target.scope, as_of)
    tally = backend.to_pyarrow(
        evaluated.group_by("first_reason").aggregate(posts=evaluated.count())
    ).to_pylist()
    by_reason = {row["first_reason"]: int(row["posts"]) for row in tally}
    considered = sum(by_reason.values())
    delivered_count = by_reason.pop(None, 0)
    excluded = {reason.value: by_reason.get(reason.value, 0) for reason in REASON_ORDER}

    eligible = evaluated.filter(evaluated.eligible)
    authors = eligible.select(
        user_id=eligible.author_id, region=eligible.region, birth_date=eligible.birth_date
    ).distinct()
    intents = _intents_expr(policy, authors, backend.table("ledger_events"), as_of)
    rows = eligible.join(intents, eligible.author_id == intents.intents_user).select(
        post_id=eligible.post_id,
        author_id=eligible.author_id,
        created_hour=eligible.created_at.truncate("h").cast("timestamp('UTC', 6)"),
        lang=eligible.lang,
        text=minimise_expr(eligible.text, target.minimisation),
        author_intents=intents.author_intents,
    )
    view = f"delivery_rows_{uuid.uuid4().hex[:8]}"
    backend.create_view(view, rows, overwrite=True)
    dialect = "duckdb" if backend.name == "duckdb" else "pyspark"
    query = (
        f"SELECT {hmac_sql('post_id', target.secret, dialect)} AS record_id, "
        f"{hmac_sql('author_id', target.secret, dialect)} AS author_ref, "
        f"created_hour AS created_at, lang, text, author_intents, post_id, author_id "
        f"FROM {view} ORDER BY record_id"
    )

    deliveries_dir.mkdir(parents=True, exist_ok=True)
    staging = deliveries_dir / f".staging-{delivery_id}"
    staging.mkdir()
    try:
        step("writing part files")
        files, lineage = _write_parts(
            _arrow_batches(backend, query), staging, delivery_id, target.licensee
        )
        if sum(f["rows"] for f in files) != delivered_count:
            raise ConsentryError("delivered rows do not match the eligibility count")
        # Lineage first: an orphan lineage part (crash before the rename below) names a
        # delivery that does not exist and is ignored; a delivery without lineage never is.
        step("recording lineage")
        lineage_sha256 = _append_lineage(lake, lineage)
        manifest: dict[str, Any] = {
            "delivery_id": delivery_id,
            "licensee": target.licensee,
            "purpose": target.scope.purpose,
            "as_of": as_of.isoformat().replace("+00:00", "Z"),
            "policy_version": version.version if version else None,
            "engine": engine,
            "created_at": now.isoformat().replace("+00:00", "Z"),
            "counts": {
                "considered": considered,
                "delivered": delivered_count,
                "excluded": excluded,
            },
            "files": files,
            "columns": [f.name for f in DELIVERED_SCHEMA],
            "lineage_sha256": lineage_sha256,
            "signing_key": signer.kid,
        }
        body = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        (staging / "manifest.json").write_bytes(body)
        (staging / "manifest.sig").write_bytes(signer.sign(body))
        os.replace(staging, deliveries_dir / delivery_id)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        backend.drop_view(view, force=True)
    return manifest


def _write_parts(
    batches: Iterator[pa.RecordBatch], staging: Path, delivery_id: str, licensee: str
) -> tuple[list[dict[str, Any]], pa.Table]:
    """Roll zstd parts of ROWS_PER_PART rows; return their descriptions and the lineage."""
    files: list[dict[str, Any]] = []
    lineage_parts: list[pa.Table] = []
    writer: pq.ParquetWriter | None = None
    rows_in_part = 0
    path: Path | None = None

    def close() -> None:
        nonlocal writer
        if writer is not None and path is not None:
            writer.close()
            files.append({"name": path.name, "rows": rows_in_part, "sha256": _sha256(path)})
        writer = None

    for batch in batches:
        table = pa.Table.from_batches([batch])
        lineage_parts.append(
            pa.table(
                {
                    "delivery_id": pa.array([delivery_id] * table.num_rows, pa.string()),
                    "licensee": pa.array([licensee] * table.num_rows, pa.string()),
                    "record_id": table.column("record_id"),
                    "post_id": table.column("post_id"),
                    "author_id": table.column("author_id"),
                },
                schema=LINEAGE_SCHEMA,
            )
        )
        delivered = table.select(DELIVERED_SCHEMA.names).cast(DELIVERED_SCHEMA)
        offset = 0
        while offset < delivered.num_rows:
            if writer is None:
                path = staging / f"part-{len(files):05d}.parquet"
                writer = pq.ParquetWriter(path, DELIVERED_SCHEMA, compression="zstd")
                rows_in_part = 0
            take = min(ROWS_PER_PART - rows_in_part, delivered.num_rows - offset)
            writer.write_table(delivered.slice(offset, take))
            rows_in_part += take
            offset += take
            if rows_in_part == ROWS_PER_PART:
                close()
    close()
    if not files:
        path = staging / "part-00000.parquet"
        pq.write_table(DELIVERED_SCHEMA.empty_table(), path, compression="zstd")
        files.append({"name": path.name, "rows": 0, "sha256": _sha256(path)})
    lineage = pa.concat_tables(lineage_parts) if lineage_parts else LINEAGE_SCHEMA.empty_table()
    return files, lineage


def _append_lineage(lake: Lake, lineage: pa.Table) -> str:
    """Add this delivery's lineage as a new part of the lake's lineage table (atomically);
    return the SHA-256 of that part (the manifest's lineage digest)."""
    existing = lake.files(LINEAGE_TABLE) if lake.exists(LINEAGE_TABLE) else []
    with lake.writing(LINEAGE_TABLE) as staging:
        # Earlier deliveries' parts are immutable: hard links, not copies.
        for i, old in enumerate(existing):
            os.link(old, staging / f"part-{i:06d}.parquet")
        part = staging / f"part-{len(existing):06d}.parquet"
        pq.write_table(lineage, part, compression="zstd")
        return _sha256(part)


def explain_post(
    *,
    backend: ibis.BaseBackend,
    lake: Lake,
    policy: PolicyFile,
    events: pa.Table,
    target: DeliveryTarget,
    as_of: datetime,
    post_id: str,
) -> dict[str, Any]:
    """Why one post would (not) go to the licensee at as_of — the build's own expression.

    Returns `{"post_id", "licensee", "as_of", "eligible", "reasons": [...], "consent":
    {"decision", "rule", "policy_version", "since"}}`; an unknown post is bad input.
    """
    as_of = as_of.astimezone(UTC)
    evaluated = evaluate_posts(backend, lake, policy, events, target.scope, as_of)
    found = backend.to_pyarrow(evaluated.filter(evaluated.post_id == post_id)).to_pylist()
    if not found:
        raise BadInput(Problem("command line", None, "POST_ID", f"no post {post_id!r}"))
    row = found[0]
    return {
        "post_id": post_id,
        "licensee": target.licensee,
        "as_of": as_of.isoformat().replace("+00:00", "Z"),
        "eligible": bool(row["eligible"]),
        "reasons": reasons_of(row),
        "consent": {
            "decision": row["consent_decision"],
            "rule": row["consent_rule"],
            "policy_version": row["policy_version"],
            "since": row["consent_since"].isoformat().replace("+00:00", "Z")
            if row["consent_since"]
            else None,
        },
    }
