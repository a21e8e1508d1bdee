"""Build one licensed delivery: eligible posts, minimised and pseudonymised, signed.

The build writes only into a staging directory (parts, manifest, signature and the lineage
file); `consentry.delivery.service.deliver` runs it as a job that stages the lineage in the
lake, commits the delivery with its audit event and only then publishes both (docs/
invariants.md, I2).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import uuid
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from consentry.delivery.attestation import ENVELOPE_FILE, envelope, statement
from consentry.delivery.cards import (
    CARD_FILE,
    CROISSANT_FILE,
    DeliveryFacts,
    croissant_bytes,
    dataset_card,
)
from consentry.delivery.eligibility import (
    REASON_ORDER,
    LicenceScope,
    author_facts,
    eligibility,
    reasons_of,
)
from consentry.delivery.minimise import MinimisationConfig, minimise_expr
from consentry.engine import Lake
from consentry.engine.hmac import hmac_sql
from consentry.errors import BadInput, ConsentryError, Problem
from consentry.ledger.bulk import resolve_consent_bulk
from consentry.policy import AIPREF_CATEGORIES, Choice, Duration, PolicyFile
from consentry.signing import Signer

__all__ = [
    "DELIVERED_SCHEMA",
    "INTENTS_TYPE",
    "LINEAGE_FILE",
    "LINEAGE_SCHEMA",
    "LINEAGE_TABLE",
    "PARQUET_METADATA_KEYS",
    "DeliveryTarget",
    "DeliveryTerms",
    "build_delivery",
    "evaluate_posts",
    "explain_post",
    "new_delivery_id",
    "stage_lineage",
]

ROWS_PER_PART = 1_000_000
ROW_GROUP_ROWS = 100_000
"""Rows per Parquet row group. Fixed, so the bytes of a part do not depend on how the engine
happened to batch its output (thread count, engine, machine)."""
LINEAGE_TABLE = "delivery_lineage"
LINEAGE_FILE = ".lineage.parquet.tmp"
"""The lineage part, written in the staging directory until the job stages it in the lake."""

INTENTS_TYPE = pa.struct([(category, pa.bool_()) for category in AIPREF_CATEGORIES])
"""`author_intents`: per AIPREF category, true (allowed), false (disallowed) or null."""

DELIVERED_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("author_ref", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("lang", pa.string()),
        ("text", pa.string()),
        ("author_intents", INTENTS_TYPE),
    ]
)
"""Columns of every delivered part file (documented in docs/deliveries.md)."""

PARQUET_METADATA_KEYS = ("consentry.delivery_id", "consentry.policy_version", "consentry.licensee")
"""Key-value metadata in every part's footer: which delivery, policy version and licensee."""

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


@dataclass(frozen=True, slots=True)
class DeliveryTerms:
    """What the dataset card and Croissant record tell the licensee about its duties."""

    feed_url: str = "/v1/licensee/revocations"
    licence_url: str = "/license.xml"
    revocation_sla: Duration = field(default_factory=lambda: Duration(days=30))


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
    posts, users, ledger_events = _sources(backend, lake, events)
    return eligibility(policy, posts, users, ledger_events, scope, as_of)


def _sources(
    backend: ibis.BaseBackend, lake: Lake, events: pa.Table
) -> tuple[ir.Table, ir.Table, ir.Table]:
    """The lake's posts and users and the ledger's events as tables on `backend`."""
    posts = lake.table(backend, "posts")
    users = lake.table(backend, "users")
    # A view over the in-memory events, not `create_table`: on Spark that writes a managed
    # table under ./spark-warehouse (consent events left on disk), and the next build in the
    # same directory fails because the table's location already exists.
    ledger_events = backend.create_view("ledger_events", ibis.memtable(events), overwrite=True)
    return posts, users, ledger_events


def _intents_expr(
    policy: PolicyFile, authors: ir.Table, events: ir.Table, as_of: datetime
) -> ir.Table:
    """Per author, the AIPREF preferences at `as_of` as an `INTENTS_TYPE` struct: per
    category, any deny among the purposes mapped to it gives false, else true; a category
    no purpose maps to is null (unknown)."""
    version = policy.version_at(as_of)
    purposes = [p for p in (version.purposes if version else []) if p.aipref]
    table = authors
    for i, purpose in enumerate(purposes):
        decided = resolve_consent_bulk(policy, authors, events, purpose.key, as_of)
        decided = decided.select(_uid=decided.user_id, **{f"_d{i}": decided.decision})
        table = table.join(decided, table.user_id == decided._uid).drop("_uid")
    values: dict[str, ir.BooleanValue] = {}
    for category in AIPREF_CATEGORIES:
        voters = [f"_d{i}" for i, p in enumerate(purposes) if category in p.aipref]
        if not voters:
            values[category] = ibis.null().cast("boolean")
            continue
        denied = ibis.literal(False)
        for column in voters:
            denied = denied | (table[column] == Choice.DENY.value)
        values[category] = ~denied
    return table.select(intents_user=table.user_id, author_intents=ibis.struct(values))


def _arrow_batches(backend: ibis.BaseBackend, query: str) -> Generator[pa.RecordBatch]:
    """Run engine SQL and stream the result as Arrow record batches.

    Closing the generator (done by the build whatever happens) closes the DuckDB result: an
    open result would make the build's clean-up fail and hide the error that stopped it."""
    if backend.name == "duckdb":
        reader = backend.con.sql(query).to_arrow_reader(100_000)
        try:
            yield from reader
        finally:
            reader.close()
        return
    frame = backend._session.sql(query)
    yield from frame.toArrow().to_batches()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _z(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _languages(staging: Path, files: list[dict[str, Any]]) -> list[str]:
    """The distinct `lang` values of the written parts (one column read back, vectorised)."""
    found: set[str] = set()
    for f in files:
        column = pq.read_table(staging / f["name"], columns=["lang"]).column("lang")
        found.update(v for v in pc.unique(column).to_pylist() if v)
    return sorted(found)


def new_delivery_id(as_of: datetime) -> str:
    """A fresh delivery id: the cut-off and 48 random bits."""
    return f"dlv-{as_of.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:12]}"


def build_delivery(
    *,
    backend: ibis.BaseBackend,
    lake: Lake,
    policy: PolicyFile,
    events: pa.Table,
    target: DeliveryTarget,
    as_of: datetime,
    delivery_id: str,
    staging: Path,
    signer: Signer,
    engine: str,
    attester: Signer | None = None,
    terms: DeliveryTerms | None = None,
    now: datetime | None = None,
    on_progress: Callable[[str], None] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write one delivery into the empty directory `staging` and return its manifest.

    1. Evaluate every post (`eligibility`); count each excluded post under its first reason.
    2. Project the eligible posts: record_id = HMAC(post_id), author_ref = HMAC(author_id)
       under the licensee's secret, created_at truncated to the hour, lang, minimised text,
       the author's `Content-Usage` value at as_of.
    3. Write zstd Parquet parts sorted by record_id (the same inputs give the same data
       pages; the footer's key-value metadata names the delivery, policy version and
       licensee), and the private lineage as `LINEAGE_FILE` (step `deliver.parts_written`).
    4. Write the dataset card README.md and croissant.json (`consentry.delivery.cards`).
    5. Write manifest.json (counts, parts with sha256 and rows, the two documents with
       sha256, the lineage part's digest), its Ed25519 signature manifest.sig (`signer`,
       the manifest key) and the DSSE envelope manifest.intoto.json of an in-toto Statement
       over every file (`attester`, the attestation key) (step `deliver.signed`).
    Nothing outside `staging` is written: the caller stages the lineage, commits, publishes.
    """
    now = now or datetime.now(UTC)
    as_of = as_of.astimezone(UTC)
    if as_of > now:
        raise BadInput(Problem("command line", None, "--as-of", "the cut-off is in the future"))
    version = policy.version_at(as_of)
    terms = terms or DeliveryTerms()
    progress = on_progress or (lambda _message: None)
    reached = on_step or (lambda _name: None)

    progress("evaluating eligibility")
    posts, users, ledger_events = _sources(backend, lake, events)
    facts_name = f"delivery_facts_{uuid.uuid4().hex[:8]}"
    facts = author_facts(policy, users, ledger_events, target.scope, as_of)
    if backend.name == "duckdb":
        # Computed once (every user's consent), read by the tally, the eligible rows and the
        # intents; Spark keeps the expression (a table there would be written to disk).
        facts = backend.create_table(facts_name, facts, temp=True)
    evaluated = eligibility(policy, posts, users, ledger_events, target.scope, as_of, facts=facts)
    tally = backend.to_pyarrow(
        evaluated.group_by("first_reason").aggregate(posts=evaluated.count())
    ).to_pylist()
    by_reason = {row["first_reason"]: int(row["posts"]) for row in tally}
    considered = sum(by_reason.values())
    delivered_count = by_reason.pop(None, 0)
    excluded = {reason.value: by_reason.get(reason.value, 0) for reason in REASON_ORDER}

    eligible = evaluated.filter(evaluated.eligible)
    # Intents (and pseudonyms) per author, not per post. Every author of an eligible post
    # is known and allows the purpose, so these authors are a superset of those needed and
    # come from the small facts table instead of another pass over the posts.
    authors = facts.filter(facts.known & (facts.consent_decision == Choice.ALLOW.value))
    intents = _intents_expr(
        policy,
        authors.select(
            user_id=authors.author_id, region=authors.region, birth_date=authors.birth_date
        ),
        ledger_events,
        as_of,
    )
    rows = _minimised(
        eligible.select(
            post_id=eligible.post_id,
            author_id=eligible.author_id,
            created_hour=eligible.created_at.truncate("h").cast("timestamp('UTC', 6)"),
            lang=eligible.lang,
            text=eligible.text,
        ),
        target.minimisation,
    )
    view = f"delivery_rows_{uuid.uuid4().hex[:8]}"
    intents_view = f"delivery_intents_{uuid.uuid4().hex[:8]}"
    backend.create_view(view, rows, overwrite=True)
    backend.create_view(intents_view, intents, overwrite=True)
    dialect = "duckdb" if backend.name == "duckdb" else "pyspark"
    query = (
        f"SELECT {hmac_sql('post_id', target.secret, dialect)} AS record_id, author_ref, "
        f"created_hour AS created_at, lang, text, author_intents, post_id, author_id "
        f"FROM {view} JOIN (SELECT intents_user, author_intents, "
        f"{hmac_sql('intents_user', target.secret, dialect)} AS author_ref "
        f"FROM {intents_view}) AS authors ON author_id = intents_user "
        f"ORDER BY record_id"
    )
    try:
        progress("writing part files")
        with contextlib.closing(_arrow_batches(backend, query)) as batches:
            files, lineage = _write_parts(
                batches,
                staging,
                delivery_id,
                target.licensee,
                {
                    "consentry.delivery_id": delivery_id,
                    "consentry.policy_version": version.version if version else "",
                    "consentry.licensee": target.licensee,
                },
            )
        if sum(f["rows"] for f in files) != delivered_count:
            raise ConsentryError("delivered rows do not match the eligibility count")
        reached("deliver.parts_written")
        facts = DeliveryFacts(
            delivery_id=delivery_id,
            licensee=target.licensee,
            purpose=target.scope.purpose,
            as_of=_z(as_of),
            created_at=_z(now),
            policy_version=version.version if version else None,
            considered=considered,
            delivered=delivered_count,
            excluded=excluded,
            files=files,
            languages=_languages(staging, files),
            minimised=target.minimisation.names,
            intent_categories=AIPREF_CATEGORIES,
            revocation_sla=terms.revocation_sla.iso(),
            revocation_sla_words=terms.revocation_sla.describe(),
            feed_url=terms.feed_url,
            licence_url=terms.licence_url,
        )
        documents = {
            CARD_FILE: dataset_card(facts).encode("utf-8"),
            CROISSANT_FILE: croissant_bytes(facts),
        }
        for name, content in documents.items():
            (staging / name).write_bytes(content)
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
            "documents": [
                {"name": name, "sha256": hashlib.sha256(content).hexdigest()}
                for name, content in documents.items()
            ],
            "columns": [f.name for f in DELIVERED_SCHEMA],
            "lineage_sha256": _sha256(lineage),
            "signing_key": signer.kid,
        }
        body = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        (staging / "manifest.json").write_bytes(body)
        (staging / "manifest.sig").write_bytes(signer.sign(body))
        subjects = [(f["name"], f["sha256"]) for f in [*files, *manifest["documents"]]]
        subjects.append(("manifest.json", hashlib.sha256(body).hexdigest()))
        signed = envelope(statement(subjects, manifest), attester or signer)
        (staging / ENVELOPE_FILE).write_text(json.dumps(signed, indent=2) + "\n", "utf-8")
        reached("deliver.signed")
    finally:
        backend.drop_view(view, force=True)
        backend.drop_view(intents_view, force=True)
        if backend.name == "duckdb":
            backend.drop_table(facts_name, force=True)
    return manifest


_MARKER_CHARS = tuple(chr(code) for code in range(0xFDD0, 0xFDE0))
"""The reserved non-characters minimisation removes first (see `consentry.delivery.minimise`)."""
_DIGITS = tuple("0123456789")
_HINTS: dict[str, tuple[str, ...]] = {
    "url": ("://", "ww.", "wW.", "Ww.", "WW."),
    "handle": ("@",),
    "email": ("@",),
    "card": _DIGITS,
    "ip": (*_DIGITS, ":"),
    "phone": _DIGITS,
}
"""Per kind, substrings one of which every identifier of that kind contains (a scheme's
`://` or `www.`; `@`; a digit; an IPv6 colon). Texts with none skip the kind's rewrites."""
_ANY_HINT = f"[0-9@:{_MARKER_CHARS[0]}-{_MARKER_CHARS[-1]}]|[Ww][.]"
"""Matches every text holding a hint of any kind or a reserved marker."""


def _contains_any(text: ir.StringValue, needles: tuple[str, ...]) -> ir.BooleanValue:
    found: ir.BooleanValue = ibis.literal(False)
    for needle in needles:
        found = found | text.contains(needle)
    return found


def _minimised(rows: ir.Table, config: MinimisationConfig) -> ir.Table:
    """`rows` with `text` minimised: `minimise_expr`'s results, computed kind by kind.

    1. One projection per kind, each applying `minimise_expr` for that kind alone to the
       previous one's text. Applying the kinds one after another is what `minimise_expr`
       does; as one expression, each guarded kind repeats the whole expression before it,
       which made the minimisation cost grow geometrically with the number of kinds.
    2. Texts with no hint of any kind (one regex test; most posts) pass through untouched.
    3. The reserved markers are removed first, then a kind runs only on texts holding one
       of its `_HINTS` (cheap substring tests) - texts without one cannot change.
    """
    if not config.names:
        return rows
    staged = rows.mutate(_hinted=rows.text.re_search(_ANY_HINT))
    staged = staged.mutate(
        text=ibis.ifelse(
            staged._hinted & _contains_any(staged.text, _MARKER_CHARS),
            staged.text.re_replace(f"[{_MARKER_CHARS[0]}-{_MARKER_CHARS[-1]}]", ""),
            staged.text,
        )
    )
    for kind in config.names:
        one = MinimisationConfig(frozenset({kind}))
        staged = staged.mutate(
            text=ibis.ifelse(
                staged._hinted & _contains_any(staged.text, _HINTS[kind]),
                minimise_expr(staged.text, one),
                staged.text,
            )
        )
    return staged.drop("_hinted")


def _fixed_chunks(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    """Re-cut a stream of batches into single-chunk tables of exactly `size` rows (the last
    may be shorter), whatever the batch sizes were (chunk edges could move page edges)."""
    pending: list[pa.Table] = []
    held = 0
    for batch in batches:
        pending.append(pa.Table.from_batches([batch]))
        held += batch.num_rows
        while held >= size:
            joined = pa.concat_tables(pending)
            yield joined.slice(0, size).combine_chunks()
            rest = joined.slice(size)
            pending, held = [rest], rest.num_rows
    if held:
        yield pa.concat_tables(pending).combine_chunks()


def _write_parts(
    batches: Iterator[pa.RecordBatch],
    staging: Path,
    delivery_id: str,
    licensee: str,
    metadata: dict[str, str],
) -> tuple[list[dict[str, Any]], Path]:
    """Roll zstd parts of ROWS_PER_PART rows; return their descriptions and the lineage file.

    1. Rows are re-cut into ROW_GROUP_ROWS chunks first and each part holds whole chunks up
       to its limit, so part files and row groups fall at the same rows on every run.
    2. The lineage is streamed to a hidden file in `staging` as the rows go by (memory stays
       bounded by a couple of chunks, whatever the delivery's size); `stage_lineage` moves
       it into the lake.
    3. Encoding and compressing a chunk (Arrow releases the GIL) runs on two writer threads,
       one for the parts and one for the lineage, while this thread fetches the next chunk
       from the engine: the three overlap instead of taking turns. Each writer still writes
       its chunks in order (chunk k is finished before chunk k + 1 is handed over), so the
       bytes are the same as a sequential write's.
    """
    files: list[dict[str, Any]] = []
    part_schema = DELIVERED_SCHEMA.with_metadata(metadata)
    lineage_path = staging / LINEAGE_FILE
    lineage_writer = pq.ParquetWriter(lineage_path, LINEAGE_SCHEMA, compression="zstd")
    writer: pq.ParquetWriter | None = None
    rows_in_part = 0
    path: Path | None = None

    def close() -> None:
        nonlocal writer
        if writer is not None and path is not None:
            writer.close()
            files.append({"name": path.name, "rows": rows_in_part, "sha256": _sha256(path)})
        writer = None

    def write_delivered(delivered: pa.Table) -> None:
        nonlocal writer, rows_in_part, path
        offset = 0
        while offset < delivered.num_rows:
            if writer is None:
                path = staging / f"part-{len(files):05d}.parquet"
                writer = pq.ParquetWriter(path, part_schema, compression="zstd")
                rows_in_part = 0
            take = min(ROWS_PER_PART - rows_in_part, delivered.num_rows - offset)
            writer.write_table(delivered.slice(offset, take))
            rows_in_part += take
            offset += take
            if rows_in_part == ROWS_PER_PART:
                close()

    def lineage_of(table: pa.Table) -> pa.Table:
        return pa.table(
            {
                "delivery_id": pa.repeat(pa.scalar(delivery_id), table.num_rows),
                "licensee": pa.repeat(pa.scalar(licensee), table.num_rows),
                "record_id": table.column("record_id"),
                "post_id": table.column("post_id"),
                "author_id": table.column("author_id"),
            },
            schema=LINEAGE_SCHEMA,
        )

    in_flight: list[Future[None]] = []
    try:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="delivery-writer") as pool:
            for table in _fixed_chunks(batches, min(ROW_GROUP_ROWS, ROWS_PER_PART)):
                lineage = lineage_of(table)
                delivered = table.select(DELIVERED_SCHEMA.names).cast(DELIVERED_SCHEMA)
                for future in in_flight:
                    future.result()  # the previous chunk is written: keep each file in order
                in_flight = [
                    pool.submit(lineage_writer.write_table, lineage),
                    pool.submit(write_delivered, delivered),
                ]
            for future in in_flight:
                future.result()
            close()
    finally:
        lineage_writer.close()
        if writer is not None:
            writer.close()
    if not files:
        path = staging / "part-00000.parquet"
        pq.write_table(part_schema.empty_table(), path, compression="zstd")
        files.append({"name": path.name, "rows": 0, "sha256": _sha256(path)})
    return files, lineage_path


def stage_lineage(lake: Lake, lineage: Path, token: str) -> None:
    """Stage `lineage` (moved in) under `token` as parts appended to the lineage table. The
    caller holds the lineage table's job lock until it publishes or discards them."""
    staged = lake.stage(LINEAGE_TABLE, token, append=True)
    shutil.move(lineage, staged / "part-000000.parquet")


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
