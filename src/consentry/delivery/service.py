"""Deliveries for a Consentry home: build, explain and verify, wired to the store, the
ledger, the lake and the keys."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from consentry.audit import SqlAuditSink
from consentry.audit.event_types import DeliveryBuilt
from consentry.delivery.attestation import ENVELOPE_FILE, verify_envelope
from consentry.delivery.build import (
    LINEAGE_FILE,
    LINEAGE_TABLE,
    DeliveryTarget,
    DeliveryTerms,
    build_delivery,
    explain_post,
    new_delivery_id,
    stage_lineage,
)
from consentry.delivery.eligibility import LicenceScope
from consentry.delivery.keyset import KeySet
from consentry.delivery.licensees import LicenseeRecord, licensee_named, registry_for
from consentry.delivery.minimise import MinimisationConfig
from consentry.engine import Lake, connect_for
from consentry.errors import BadInput, ConsentryError, Problem
from consentry.jobs import JobRecord, register_recoverer, run_job
from consentry.jobs.lineage import (
    RunLineage,
    lake_dataset,
    parquet_dataset,
    register_lineage,
    store_dataset,
)
from consentry.ledger.sync import ledger_for
from consentry.policy import PolicyFile
from consentry.settings import Settings
from consentry.signing import verify
from consentry.store import open_store
from consentry.store.models import AuditEventRow, DeliveryRow

_LINEAGE_WAIT_SECONDS = 600.0
"""How long a delivery waits for another delivery's brief hold on the lineage table."""

__all__ = [
    "VerifyReport",
    "adopt_recorded_deliveries",
    "deliver",
    "deliveries_dir",
    "explain",
    "list_deliveries",
    "target_for",
    "verify_delivery",
]


def deliveries_dir(settings: Settings) -> Path:
    return settings.home / "deliveries"


def target_for(settings: Settings, record: LicenseeRecord) -> DeliveryTarget:
    """The licensee as the build sees it: scope and its decrypted secret."""
    registry = registry_for(settings)
    try:
        secret = registry.secret(record)
    finally:
        registry.store.close()
    return DeliveryTarget(
        licensee=record.name,
        scope=LicenceScope.build(
            record.purpose,
            regions=record.regions,
            exclude_regions=record.exclude_regions,
            languages=record.languages,
            period_from=record.period_from,
            period_to=record.period_to,
        ),
        secret=secret,
        minimisation=MinimisationConfig(frozenset(record.minimise)),
    )


def terms_for(settings: Settings, policy: PolicyFile, as_of: datetime) -> DeliveryTerms:
    """The licensee's duties as the card states them: the feed, the licence, the deadline
    in force at the cut-off (URLs absolute when `CONSENTRY_PUBLIC_URL` is set)."""

    base = settings.public_url or ""
    return DeliveryTerms(
        feed_url=f"{base}/v1/licensee/revocations",
        licence_url=f"{base}/license.xml",
        revocation_sla=policy.revocation_sla_at(as_of),
    )


def _events_for(settings: Settings, as_of: datetime) -> Any:
    ledger = ledger_for(settings)
    try:
        # Every purpose: the licence's decides eligibility, the rest shape author_intents.
        purposes = sorted({p.key for v in ledger.policy.versions for p in v.purposes})
        return ledger.events_arrow(purposes, as_of), ledger.policy
    finally:
        ledger.store.close()


class _DeliveryRecoverer:
    """A delivery staged its directory and lineage: remove both, or publish both."""

    def roll_back(self, settings: Settings, job: JobRecord) -> None:
        Lake.of(settings).discard(LINEAGE_TABLE, job.intent["token"])
        shutil.rmtree(deliveries_dir(settings) / job.intent["staging"], ignore_errors=True)

    def roll_forward(self, settings: Settings, job: JobRecord) -> None:
        Lake.of(settings).publish(LINEAGE_TABLE, job.intent["token"])
        staging = deliveries_dir(settings) / job.intent["staging"]
        if staging.is_dir():
            os.replace(staging, deliveries_dir(settings) / job.intent["delivery_id"])


register_recoverer("deliver", _DeliveryRecoverer())


def _delivery_lineage(settings: Settings, job: JobRecord, *, detail: bool) -> RunLineage:
    """A delivery reads the lake's posts and users and the consent ledger; it writes the
    delivery directory (its Parquet parts: the delivered rows), the lineage table and its
    `deliveries` row."""
    directory = deliveries_dir(settings) / job.intent["delivery_id"]
    parts = sorted(directory.glob("part-*.parquet")) if detail else []
    return RunLineage(
        f"deliver.{job.subject}",
        inputs=(
            lake_dataset(settings, "posts", detail=detail),
            lake_dataset(settings, "users", detail=detail),
            store_dataset(settings, "consent_events", detail=detail),
        ),
        outputs=(
            parquet_dataset(directory, parts, detail=detail),
            lake_dataset(settings, LINEAGE_TABLE, detail=detail),
            store_dataset(settings, "deliveries", detail=detail, rows=1 if detail else None),
        ),
    )


register_lineage("deliver", _delivery_lineage)


def deliver(
    settings: Settings,
    licensee: str,
    *,
    as_of: datetime | None = None,
    engine: str | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build a delivery for `licensee` at `as_of` (default now) and record it.

    1. A disabled licensee gets nothing (exit 1); an as_of in the future is bad input.
    2. A job holding `deliver:<licensee id>` (one delivery per licensee at a time) builds
       the delivery into `deliveries/.staging-<id>/` on the chosen engine (DuckDB by
       default, Spark on request), then stages its lineage in the lake (holding the lineage
       table's lock).
    3. One transaction: the `deliveries` row and the `delivery.built` audit event (with the
       manifest's hash and counts) — from then on the delivery exists.
    4. The lineage snapshot is published and the directory renamed into place.
    """
    now = datetime.now(UTC)
    when = (as_of or now).astimezone(UTC)
    if when > now:
        raise BadInput(Problem("command line", None, "--as-of", "the cut-off is in the future"))
    record = licensee_named(settings, licensee)
    if not record.active:
        raise ConsentryError(f"licensee {licensee!r} is disabled: it gets no deliveries")
    target = target_for(settings, record)
    delivery_id = new_delivery_id(when)
    token = secrets.token_hex(8)
    root = deliveries_dir(settings)
    staging = root / f".staging-{delivery_id}"
    lake = Lake.of(settings)
    with run_job(
        settings,
        "deliver",
        record.name,
        locks=[f"deliver:{record.id}"],
        intent={"delivery_id": delivery_id, "staging": staging.name, "token": token},
    ) as job:
        events, policy = _events_for(settings, when)
        engine_name = engine or settings.engine
        backend = connect_for(settings, engine_name)
        keyset = KeySet.for_home(settings.home)
        staging.mkdir(parents=True)
        manifest = build_delivery(
            backend=backend,
            lake=lake,
            policy=policy,
            events=events,
            target=target,
            as_of=when,
            delivery_id=delivery_id,
            staging=staging,
            signer=keyset.signer("manifest"),
            attester=keyset.signer("attestation"),
            terms=terms_for(settings, policy, when),
            engine=engine_name,
            now=now,
            on_progress=on_progress,
            on_step=job.step,
        )
        if on_progress is not None:
            on_progress("recording lineage")
        job.acquire(f"lake:{LINEAGE_TABLE}", wait=_LINEAGE_WAIT_SECONDS)
        stage_lineage(lake, staging / LINEAGE_FILE, token)
        job.step("deliver.lineage_staged")
        body = (staging / "manifest.json").read_bytes()
        digest = hashlib.sha256(body).hexdigest()
        with job.transaction("deliver.committed", commit=True) as session:
            seq = SqlAuditSink().append(
                session,
                DeliveryBuilt(
                    delivery_id=delivery_id,
                    licensee_id=record.id,
                    purpose=record.purpose,
                    as_of=manifest["as_of"],
                    policy_version=manifest["policy_version"],
                    considered=manifest["counts"]["considered"],
                    delivered=manifest["counts"]["delivered"],
                    manifest_sha256=digest,
                ),
            )
            session.add(
                DeliveryRow(
                    id=delivery_id,
                    licensee_id=record.id,
                    purpose=record.purpose,
                    as_of=when,
                    created_at=now,
                    policy_version=manifest["policy_version"],
                    considered=manifest["counts"]["considered"],
                    delivered=manifest["counts"]["delivered"],
                    manifest_sha256=digest,
                    audit_seq=seq,
                )
            )
        lake.publish(LINEAGE_TABLE, token)
        job.step("deliver.lineage_published")
        os.replace(staging, root / delivery_id)
        job.step("deliver.published")
    return manifest


def explain(
    settings: Settings,
    post_id: str,
    licensee: str,
    *,
    as_of: datetime | None = None,
    engine: str | None = None,
) -> dict[str, Any]:
    """`explain_post` for the home's data (the build's own expression)."""
    when = (as_of or datetime.now(UTC)).astimezone(UTC)
    if when > datetime.now(UTC):
        raise BadInput(Problem("command line", None, "--as-of", "the cut-off is in the future"))
    record = licensee_named(settings, licensee)
    events, policy = _events_for(settings, when)
    return explain_post(
        backend=connect_for(settings, engine),
        lake=Lake.of(settings),
        policy=policy,
        events=events,
        target=target_for(settings, record),
        as_of=when,
        post_id=post_id,
    )


def adopt_recorded_deliveries(settings: Settings) -> list[str]:
    """Record the delivery directories made before deliveries were store rows: a directory
    whose manifest hashes to the `manifest_sha256` of a `delivery.built` audit event for its
    id gets its row (with that event); any other directory is left for the doctor to name.
    Returns the ids adopted."""
    root = deliveries_dir(settings)
    if not root.is_dir():
        return []
    adopted: list[str] = []
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        known = set(session.scalars(sa.select(DeliveryRow.id)))
        built = {
            payload["delivery_id"]: (seq, payload)
            for seq, payload in (
                (seq, json.loads(text))
                for seq, text in session.execute(
                    sa.select(AuditEventRow.seq, AuditEventRow.payload).where(
                        AuditEventRow.event_type == "delivery.built"
                    )
                )
            )
        }
        for directory in sorted(root.iterdir()):
            manifest_path = directory / "manifest.json"
            if directory.name in known or directory.name not in built:
                continue
            if not manifest_path.is_file():
                continue
            body = manifest_path.read_bytes()
            seq, event = built[directory.name]
            if hashlib.sha256(body).hexdigest() != event["manifest_sha256"]:
                continue
            manifest = json.loads(body)
            session.add(
                DeliveryRow(
                    id=directory.name,
                    licensee_id=event["licensee_id"],
                    purpose=event["purpose"],
                    as_of=_instant(manifest["as_of"]),
                    created_at=_instant(manifest["created_at"]),
                    policy_version=event["policy_version"],
                    considered=event["considered"],
                    delivered=event["delivered"],
                    manifest_sha256=event["manifest_sha256"],
                    audit_seq=seq,
                )
            )
            adopted.append(directory.name)
    return adopted


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def list_deliveries(settings: Settings) -> list[dict[str, Any]]:
    """Every delivery that exists (committed with its audit event, not purged) and whose
    directory is in place, as its manifest, newest first."""
    root = deliveries_dir(settings)
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        ids = session.scalars(
            sa.select(DeliveryRow.id).where(DeliveryRow.purged_at.is_(None))
        ).all()
    manifests = [
        json.loads((root / d / "manifest.json").read_text(encoding="utf-8"))
        for d in ids
        if (root / d / "manifest.json").is_file()
    ]
    return sorted(manifests, key=lambda m: (m["created_at"], m["delivery_id"]), reverse=True)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of checking a delivery directory."""

    directory: str
    signature_ok: bool
    files_ok: bool
    problems: list[str]

    @property
    def ok(self) -> bool:
        return self.signature_ok and self.files_ok and not self.problems


def _envelope_problems(
    directory: Path,
    manifest: dict[str, Any],
    body: bytes,
    entries: list[tuple[str, str, int | None]],
    keys: dict[str, Any],
) -> list[str]:
    """What is wrong with the DSSE envelope beside the manifest (step 4 of verify)."""
    path = directory / ENVELOPE_FILE
    try:
        document = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return [f"{ENVELOPE_FILE}: missing or not JSON"]
    found = verify_envelope(document, keys) if isinstance(document, dict) else None
    if found is None:
        return [f"{ENVELOPE_FILE}: the envelope does not verify with the published keys"]
    expected = {name: sha for name, sha, _ in entries}
    expected["manifest.json"] = hashlib.sha256(body).hexdigest()
    try:
        subjects = {str(s["name"]): str(s["digest"]["sha256"]) for s in found["subject"]}
    except (KeyError, TypeError):
        return [f"{ENVELOPE_FILE}: the statement's subjects are malformed"]
    problems = []
    if subjects != expected:
        problems.append(f"{ENVELOPE_FILE}: the subjects differ from the manifest's files")
    if found.get("predicate") != manifest:
        problems.append(f"{ENVELOPE_FILE}: the predicate is not this manifest")
    return problems


def verify_delivery(directory: Path, keys: dict[str, Any]) -> VerifyReport:
    """Check manifest.sig against the published keys, then every file's sha256 and rows.

    1. The signature over manifest.json's exact bytes must verify with a published key of
       kind `manifest` (any of them: retired keys verify what they signed).
    2. manifest.json must be a manifest: JSON with a `files` list of `{name, sha256, rows}`
       and, since deliveries carry them, a `documents` list of `{name, sha256}` (README.md,
       croissant.json); otherwise that is the problem reported.
    3. Every listed file must be a plain file name in the directory (a name with a path in
       it is a problem, never read), exist, and have the listed sha256 (and row count, for
       parts); no other Parquet file may be present.
    4. A manifest with documents must have manifest.intoto.json: a DSSE envelope verifying
       under a published `attestation` key whose Statement's subjects are exactly the
       listed files and manifest.json with their digests, and whose predicate is the
       manifest.
    """
    import pyarrow.parquet as pq

    problems: list[str] = []
    manifest_path = directory / "manifest.json"
    signature_path = directory / "manifest.sig"
    if not manifest_path.exists() or not signature_path.exists():
        raise BadInput(
            Problem(str(directory), None, None, "not a delivery: manifest.json or .sig missing")
        )
    body = manifest_path.read_bytes()
    signature_ok = verify(keys, body, signature_path.read_bytes(), payload="manifest")
    if not signature_ok:
        problems.append("manifest.sig does not verify with the published keys")
    try:
        manifest = json.loads(body)
        entries: list[tuple[str, str, int | None]] = [
            (str(f["name"]), str(f["sha256"]), int(f["rows"])) for f in manifest["files"]
        ]
        entries += [(str(d["name"]), str(d["sha256"]), None) for d in manifest.get("documents", [])]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        # A tampered manifest is a finding to report, not a crash.
        problems.append(f"manifest.json is not a delivery manifest ({type(exc).__name__}: {exc})")
        return VerifyReport(str(directory), signature_ok, False, problems)
    listed = {name for name, _, _ in entries}
    for name, sha256, rows in entries:
        path = directory / name
        if name in ("", ".", "..") or path.name != name:
            problems.append(f"{name}: not a file name inside the delivery directory")
            continue
        if not path.is_file():
            problems.append(f"{name}: missing")
            continue
        with path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest != sha256:
            problems.append(f"{name}: sha256 {digest} != manifest {sha256}")
        elif rows is not None and pq.ParquetFile(path).metadata.num_rows != rows:
            problems.append(f"{name}: row count differs from the manifest")
    for extra in sorted(p.name for p in directory.glob("*.parquet") if p.name not in listed):
        problems.append(f"{extra}: not listed in the manifest")
    if "documents" in manifest:
        problems += _envelope_problems(directory, manifest, body, entries, keys)
    files_ok = not [p for p in problems if not p.startswith("manifest.sig")]
    return VerifyReport(str(directory), signature_ok, files_ok, problems)
