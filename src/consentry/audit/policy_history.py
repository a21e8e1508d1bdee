"""Policy history: publishing versions into the audit log (who a new version affects is
`consentry.ledger.impact`).

Publishing is explicit (`consentry policy publish`): every version of the policy file that
the log does not hold yet gets one `policy.published` event; a version already published
with different content is refused (a published version is never silently rewritten).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from consentry.audit.event_types import PolicyPublished
from consentry.audit.events import SqlAuditSink, canonical_json
from consentry.errors import ConsentryError
from consentry.instants import rfc3339
from consentry.policy import PolicyFile, PolicyVersion, diff_versions
from consentry.store import Store
from consentry.store.models import AuditEventRow

__all__ = [
    "PublishedVersion",
    "publish_policy",
    "published_versions",
    "version_sha256",
]


def version_sha256(version: PolicyVersion) -> str:
    """SHA-256 (hex) of the version's canonical JSON: what a `policy.published` commits to."""
    return hashlib.sha256(
        canonical_json(version.model_dump(mode="json")).encode("utf-8")
    ).hexdigest()


@dataclass(frozen=True, slots=True)
class PublishedVersion:
    """A `policy.published` event as read back."""

    event_id: int
    version: str
    effective_from: str
    version_sha256: str
    published_at: datetime


def published_versions(store: Store) -> dict[str, PublishedVersion]:
    """Version name -> its (first) `policy.published` event."""
    with store.session() as session:
        rows = session.execute(
            sa.select(AuditEventRow.seq, AuditEventRow.at, AuditEventRow.payload)
            .where(AuditEventRow.event_type == "policy.published")
            .order_by(AuditEventRow.seq)
        ).all()
    found: dict[str, PublishedVersion] = {}
    for seq, at, payload in rows:
        data = json.loads(payload)
        found.setdefault(
            data["version"],
            PublishedVersion(
                seq, data["version"], data["effective_from"], data["version_sha256"], at
            ),
        )
    return found


def publish_policy(store: Store, policy: PolicyFile) -> list[PublishedVersion]:
    """Record every not-yet-published version of `policy` in the audit log.

    1. Versions are taken in effective order; each payload names the previous version and
       how many plain-word changes separate them (`diff_versions`).
    2. A version published before with the same content is skipped; with other content it
       is refused (ConsentryError) and nothing is written.
    3. All new events commit in one transaction. Returns the newly published versions.
    """
    already = published_versions(store)
    pending: list[tuple[PolicyVersion, PolicyVersion | None, str]] = []
    previous: PolicyVersion | None = None
    for version in policy.versions:
        digest = version_sha256(version)
        seen = already.get(version.version)
        if seen is not None and seen.version_sha256 != digest:
            raise ConsentryError(
                f"policy version {version.version} was published (audit event "
                f"{seen.event_id}) with other content (sha256 {seen.version_sha256[:16]}…); "
                "a published version cannot change — add a new version instead"
            )
        if seen is None:
            pending.append((version, previous, digest))
        previous = version
    sink = SqlAuditSink()
    with store.session() as session:
        for version, before, digest in pending:
            sink.append(
                session,
                PolicyPublished(
                    version=version.version,
                    effective_from=rfc3339(version.effective_from),
                    version_sha256=digest,
                    file_sha256=policy.content_sha256,
                    previous_version=before.version if before else None,
                    changes=len(diff_versions(before, version)) if before else 0,
                    purposes=[p.key for p in version.purposes],
                ),
            )
    return [
        v
        for name, v in published_versions(store).items()
        if name in {p.version for p, _, _ in pending}
    ]
