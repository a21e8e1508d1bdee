"""The audit event types: one frozen dataclass per type, the one place each is defined.

Each class names its type (`event_type`), says in its docstring when the event is appended,
and types and explains every field it carries (`Meaning`); docs/audit.md's sections are
generated from them (`markdown`; tests/test_docs.py fails when the page and the classes
differ). Events never hold personal data: users appear only as pseudonymous references, every
other field is a key, a count, a hash or an instant.

Appending an event (`SqlAuditSink.append(session, DeliveryBuilt(...))`) writes the fields of
its instance as the payload (`AuditPayload.payload`), plus the envelope's optional fields.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, ClassVar, TypeVar

__all__ = [
    "AUDIT_EVENT_CLASSES",
    "AuditPayload",
    "ConsentAnchored",
    "ConsentChanged",
    "ConsentImported",
    "DeliveryBuilt",
    "HoldAdded",
    "HoldReleased",
    "LakeVacuumed",
    "LicenseeChanged",
    "Meaning",
    "PolicyPublished",
    "RetentionApplied",
    "RetentionPlanned",
    "RetentionVerified",
    "RevocationConfirmed",
    "RevocationIssued",
    "ScrapingAssessed",
    "SourceAdded",
    "SourceRemoved",
    "SubjectsSynced",
    "TableImported",
    "field_meanings",
    "markdown",
]


@dataclass(frozen=True, slots=True)
class Meaning:
    """What a field of an audit event holds, in the words docs/audit.md prints."""

    text: str


class AuditPayload:
    """The base of every audit event type: the fields of an instance are its payload."""

    __slots__ = ()
    event_type: ClassVar[str]

    def payload(self) -> dict[str, Any]:
        """The fields as the event's JSON payload (names as declared, values as given)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


AUDIT_EVENT_CLASSES: dict[str, type[AuditPayload]] = {}
"""Event type -> its class, in the order docs/audit.md lists them."""

_C = TypeVar("_C", bound=type[AuditPayload])


def _event(event_type: str) -> Callable[[_C], _C]:
    def register(cls: _C) -> _C:
        cls.event_type = event_type
        AUDIT_EVENT_CLASSES[event_type] = cls
        return cls

    return register


@_event("consent.changed")
@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentChanged(AuditPayload):
    """One consent choice was recorded (page, API, GPC or support)."""

    subject_ref: Annotated[str, Meaning("pseudonymous reference of the user")]
    purpose: Annotated[str, Meaning("purpose key")]
    choice: Annotated[str, Meaning("`allow` or `deny`")]
    source: Annotated[str, Meaning("`settings`, `gpc`, `api`, `import`, `support`")]
    policy_version: Annotated[str, Meaning("version in force at `at`")]
    at: Annotated[str, Meaning("RFC 3339 instant the choice takes effect")]
    ledger_seq: Annotated[int, Meaning("the event's sequence number in `consent_events`")]
    events_digest: Annotated[
        str,
        Meaning(
            "the event's anchor digest (64 hex digits; see [invariants.md](invariants.md), I4):"
            " the ledger row it covers can no longer change unnoticed"
        ),
    ]


@_event("consent.imported")
@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentImported(AuditPayload):
    """A batch of historical consent events was imported from the lake (one audit event per
    import, not per row).
    """

    events_read: Annotated[int, Meaning("rows imported")]
    events_new: Annotated[int, Meaning("rows appended (not seen before by `event_id`)")]
    subjects_affected: Annotated[int, Meaning("users whose current state was recomputed")]
    digest_sha256: Annotated[str, Meaning("SHA-256 of the sorted event ids, newline-joined")]
    events_digest: Annotated[
        str,
        Meaning(
            "the anchor sum of the appended events (64 hex digits; "
            "[invariants.md](invariants.md), I4)"
        ),
    ]


@_event("consent.anchored")
@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentAnchored(AuditPayload):
    """Consent events recorded before anchoring existed were anchored by `consentry init` (one
    audit event for all of them). Anchoring takes the rows as they are at that moment.
    """

    events: Annotated[int, Meaning("events anchored")]
    events_digest: Annotated[
        str,
        Meaning("their anchor sum (64 hex digits; [invariants.md](invariants.md), I4)"),
    ]


@_event("table.imported")
@dataclass(frozen=True, slots=True, kw_only=True)
class TableImported(AuditPayload):
    """Rows were imported into a lake table (`consentry import`, `demo load`, the Mastodon
    connector), committed with the import run (and, for `users` and `consent_events`, with the
    ledger's own events) before the new table version was published
    ([invariants.md](invariants.md)).
    """

    table: Annotated[str, Meaning("the canonical table")]
    run_id: Annotated[int, Meaning("the import run's id (`consentry.store.ImportRun`)")]
    rows_read: Annotated[int, Meaning("rows in the input")]
    rows_new: Annotated[int, Meaning("keys the table did not have")]
    rows_replaced: Annotated[int, Meaning("keys whose rows were replaced")]
    rows_total: Annotated[int, Meaning("rows in the table afterwards")]
    snapshot: Annotated[
        str,
        Meaning(
            "the token the lake commit is published under (its Delta app transaction "
            "`consentry.publish.<token>`, its parts in `data-<token>/`)"
        ),
    ]


@_event("subjects.synced")
@dataclass(frozen=True, slots=True, kw_only=True)
class SubjectsSynced(AuditPayload):
    """The lake's `users` were synced into `subjects`."""

    subjects_read: Annotated[int, Meaning("users read from the lake")]
    subjects_new: Annotated[int, Meaning("subjects created")]
    subjects_updated: Annotated[int, Meaning("subjects updated")]
    digest_sha256: Annotated[str, Meaning("SHA-256 over the synced columns' Arrow buffers")]


@_event("licensee.changed")
@dataclass(frozen=True, slots=True, kw_only=True)
class LicenseeChanged(AuditPayload):
    """A licensee was added or disabled (see [licensees.md](licensees.md)). The event carries the
    licence's terms as they are after the change; it never carries the licensee's
    pseudonymisation secret (sealed or not) or its API key.
    """

    licensee_id: Annotated[str, Meaning("the licensee's id (16 hex digits)")]
    name: Annotated[str, Meaning("the licensee's name (a slug)")]
    change: Annotated[str, Meaning("`added` or `disabled`")]
    purpose: Annotated[str, Meaning("purpose key the licence is for")]
    regions: Annotated[
        list[str],
        Meaning("region codes in scope, as stored (empty list: everywhere)"),
    ]
    exclude_regions: Annotated[list[str], Meaning("region codes excluded")]
    languages: Annotated[list[str], Meaning("language tags in scope (empty list: every language)")]
    period_from: Annotated[
        str | None,
        Meaning("RFC 3339 start of the licensed creation period, or null"),
    ]
    period_to: Annotated[str | None, Meaning("RFC 3339 end (exclusive) of the period, or null")]
    api_key_hash_prefix: Annotated[
        str,
        Meaning(
            "first 12 hex digits of the API key's keyed hash (HMAC-SHA256 under a key derived "
            "from the master key); identifies the key without revealing it"
        ),
    ]
    at: Annotated[str, Meaning("RFC 3339 instant of the change (`created_at` or `disabled_at`)")]


@_event("delivery.built")
@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryBuilt(AuditPayload):
    """A licensed delivery was written (see [deliveries.md](deliveries.md))."""

    delivery_id: Annotated[str, Meaning("the delivery's id (its directory name)")]
    licensee_id: Annotated[str, Meaning("the licensee's id")]
    purpose: Annotated[str, Meaning("the licence's purpose")]
    as_of: Annotated[str, Meaning("the cut-off instant (RFC 3339)")]
    policy_version: Annotated[str, Meaning("the policy version in force at `as_of`")]
    considered: Annotated[int, Meaning("posts evaluated")]
    delivered: Annotated[int, Meaning("posts delivered")]
    manifest_sha256: Annotated[str, Meaning("SHA-256 of the signed manifest.json bytes")]


@_event("revocation.issued")
@dataclass(frozen=True, slots=True, kw_only=True)
class RevocationIssued(AuditPayload):
    """A revocation run (or a retention purge) logged revocations for one licensee (see
    [revocations.md](revocations.md)). One event per run and licensee; no record or user ids.
    """

    run_id: Annotated[
        str,
        Meaning("the run's id (`rvr-…`), or the retention purge's id for a purge"),
    ]
    licensee_id: Annotated[str, Meaning("the licensee's id")]
    trigger: Annotated[
        str,
        Meaning("`run` (`consentry revocations`) or `retention_purge` (`revoke_purged`)"),
    ]
    as_of: Annotated[
        str,
        Meaning(
            "the instant eligibility was evaluated at (RFC 3339; the purge instant for a purge)"
        ),
    ]
    lineage_rows: Annotated[
        int,
        Meaning("lineage rows examined (the purge's matching rows for a purge)"),
    ]
    revoked: Annotated[int, Meaning("records found no longer eligible (or purged)")]
    new: Annotated[
        int,
        Meaning("revocations this run added to the log (the rest were logged before)"),
    ]
    digest_sha256: Annotated[
        str,
        Meaning("SHA-256 over the sorted `record_id:delivery_id` lines of the new revocations"),
    ]


@_event("revocation.confirmed")
@dataclass(frozen=True, slots=True, kw_only=True)
class RevocationConfirmed(AuditPayload):
    """A licensee posted a batch of deletion receipts (`POST /v1/licensee/revocations/receipts`)."""

    receipt_id: Annotated[str, Meaning("the receipt batch's id (`rcp-…`)")]
    licensee_id: Annotated[str, Meaning("the licensee's id")]
    records: Annotated[int, Meaning("distinct record ids in the batch")]
    confirmed: Annotated[int, Meaning("record ids whose pending revocations this batch confirmed")]
    already_confirmed: Annotated[
        int,
        Meaning("record ids whose revocations were all confirmed before"),
    ]
    unknown: Annotated[
        int,
        Meaning(
            "record ids that are not revocations of this licensee (reported back, nothing changed)"
        ),
    ]
    digest_sha256: Annotated[
        str,
        Meaning("SHA-256 over the batch's sorted record ids, one per line"),
    ]


@_event("hold.added")
@dataclass(frozen=True, slots=True, kw_only=True)
class HoldAdded(AuditPayload):
    """A legal hold was placed (see [retention.md](retention.md#legal-holds)). The matter's name
    and the reason may name people, so only a hash of the matter is logged.
    """

    hold_id: Annotated[str, Meaning("the hold's id (`hold-` and 12 hex digits)")]
    matter_sha256: Annotated[str, Meaning("SHA-256 (hex) of the matter's name, as given")]
    scope: Annotated[str, Meaning("`user`, `entity` or `category`")]
    target_ref: Annotated[
        str,
        Meaning(
            "for `user`: the user's pseudonymous reference; for `entity`: the pseudonymous "
            "reference of the entity name (same keyed hash); for `category`: the category"
        ),
    ]
    until: Annotated[
        str | None,
        Meaning("RFC 3339 instant the hold lapses by itself, or null (until released)"),
    ]
    at: Annotated[str, Meaning("RFC 3339 instant the hold took effect")]


@_event("hold.released")
@dataclass(frozen=True, slots=True, kw_only=True)
class HoldReleased(AuditPayload):
    """A legal hold was released; what it covered may be deleted by the next retention plan."""

    hold_id: Annotated[str, Meaning("the hold's id")]
    matter_sha256: Annotated[str, Meaning("SHA-256 (hex) of the matter's name")]
    at: Annotated[str, Meaning("RFC 3339 instant of the release")]


@_event("retention.planned")
@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionPlanned(AuditPayload):
    """`consentry retention apply` accepted a plan (its hash and inputs matched) and recorded the
    purge in state `planned`. Counts are per data category.
    """

    purge_id: Annotated[str, Meaning("the purge's id (`purge-` and 16 hex digits)")]
    plan_sha256: Annotated[str, Meaning("the plan's content hash")]
    policy_version: Annotated[str, Meaning("the policy version the plan applies")]
    at: Annotated[str, Meaning("RFC 3339 instant the plan was computed for")]
    to_delete: Annotated[dict[str, int], Meaning("category → records to delete")]
    to_anonymise: Annotated[dict[str, int], Meaning("category → records to anonymise")]
    held: Annotated[dict[str, int], Meaning("category → records due but kept by a legal hold")]
    gaps: Annotated[list[str], Meaning("categories and lake tables without a retention rule")]


@_event("retention.applied")
@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionApplied(AuditPayload):
    """The purge was executed (state `applied`)."""

    purge_id: Annotated[str, Meaning("the purge's id")]
    plan_sha256: Annotated[str, Meaning("the plan's content hash")]
    deleted: Annotated[
        dict[str, int],
        Meaning("store → records deleted (`lake.posts`, `store.consent_events`, …)"),
    ]
    anonymised: Annotated[dict[str, int], Meaning("store → records anonymised")]
    delivery_dirs_removed: Annotated[int, Meaning("delivery directories removed")]
    revocations: Annotated[int, Meaning("revocations issued for delivered posts that were deleted")]
    versions_vacuumed: Annotated[
        dict[str, list[int]],
        Meaning(
            "lake table → the versions made unreadable by the purge's vacuum (they held the "
            "purged rows; time travel to them now fails)"
        ),
    ]
    consent_anchor_removed: Annotated[
        str,
        Meaning(
            "the anchor sum of the consent events deleted or changed by anonymisation, as they "
            "were ([invariants.md](invariants.md), I5)"
        ),
    ]
    consent_anchor_added: Annotated[
        str,
        Meaning("the anchor sum of the anonymised consent events as they are now"),
    ]


@_event("retention.verified")
@dataclass(frozen=True, slots=True, kw_only=True)
class RetentionVerified(AuditPayload):
    """Every store was queried again after the purge (state `verified` when nothing is left)."""

    purge_id: Annotated[str, Meaning("the purge's id")]
    plan_sha256: Annotated[str, Meaning("the plan's content hash")]
    remaining: Annotated[
        dict[str, int],
        Meaning("category → records still due for deletion or anonymisation (0 when verified)"),
    ]
    checked: Annotated[dict[str, int], Meaning("category → records examined by the re-query")]
    ok: Annotated[bool, Meaning("true when nothing is left")]


@_event("lake.vacuumed")
@dataclass(frozen=True, slots=True, kw_only=True)
class LakeVacuumed(AuditPayload):
    """`consentry lake vacuum` deleted data files of a lake table that only superseded versions
    still listed (see [engines.md](engines.md#vacuum)): time travel to `versions_removed` is no
    longer possible. One event per table the vacuum removed anything from, appended once the
    files are gone; a vacuum killed after deleting a table's files gets the event from
    recovery (the vacuum is a job: [invariants.md](invariants.md#jobs)).
    """

    table: Annotated[str, Meaning("the lake table")]
    files_removed: Annotated[int, Meaning("data files deleted")]
    versions_removed: Annotated[
        list[int],
        Meaning("the table's versions readable before the vacuum and not after it, ascending"),
    ]
    grace_hours: Annotated[
        int,
        Meaning("files removed from the table less than this many hours ago were kept"),
    ]


@_event("source.added")
@dataclass(frozen=True, slots=True, kw_only=True)
class SourceAdded(AuditPayload):
    """`consentry source add` registered an external source: from now on the lake reads
    `table` in place at `location` instead of Consentry's imported copy (see
    [sources.md](sources.md)). Appended once every row of the source passed validation, and
    committed before the registry file is written.
    """

    table: Annotated[str, Meaning("the canonical table the source stands in for")]
    format: Annotated[str, Meaning("`delta` or `parquet`")]
    location: Annotated[str, Meaning("the source's absolute local path or `s3://` URI")]
    columns: Annotated[
        dict[str, str],
        Meaning("the column map: canonical column -> the source's column (renamed ones only)"),
    ]
    purge: Annotated[
        bool, Meaning("retention purges may delete and anonymise rows of the source itself")
    ]
    rows: Annotated[int, Meaning("rows the source held when validated")]
    files: Annotated[int, Meaning("data files validated")]
    shadows_imported: Annotated[
        bool,
        Meaning(
            "the lake held an imported copy of `table` (`--replace-imported`): it is kept, "
            "unread while the source is registered"
        ),
    ]


@_event("source.removed")
@dataclass(frozen=True, slots=True, kw_only=True)
class SourceRemoved(AuditPayload):
    """`consentry source remove` unregistered an external source (see
    [sources.md](sources.md)): the lake reads Consentry's own copy of `table` again, if it has
    one. The source itself is not touched. Committed before the registry file is written.
    """

    table: Annotated[str, Meaning("the canonical table")]
    format: Annotated[str, Meaning("`delta` or `parquet`")]
    location: Annotated[str, Meaning("the source's location as registered")]


@_event("scraping.assessed")
@dataclass(frozen=True, slots=True, kw_only=True)
class ScrapingAssessed(AuditPayload):
    """A scraping assessment was recorded by `consentry scraping assess` (see
    [scraping.md](scraping.md)). Entities are not named here: an unmapped credential (an
    account id, an IP address) is its own entity and may be personal data; the full result is
    the file `<home>/scraping/assessments/<assessment_id>.json` whose hash is `result_sha256`.
    """

    assessment_id: Annotated[
        str,
        Meaning("the assessment's id (row of `scraping_assessments`, name of the result file)"),
    ]
    policy_version: Annotated[str, Meaning("the policy version whose `scraping` block was applied")]
    mode: Annotated[str, Meaning("`earliest` or `max_total`")]
    rounding: Annotated[str, Meaning("`pro_rata`, `per_full_million` or `per_started_million`")]
    engine: Annotated[str, Meaning("`duckdb` or `spark`")]
    accesses: Annotated[int, Meaning("accesses counted (after de-duplication by request_id)")]
    entities: Annotated[int, Meaning("entities with any access")]
    billed_entities: Annotated[int, Meaning("entities with at least one billed window")]
    billed_windows: Annotated[int, Meaning("billed windows over all entities")]
    total_amount: Annotated[str, Meaning("the total owed, decimal string with two places")]
    currency: Annotated[str, Meaning("ISO 4217 code of the amounts")]
    result_sha256: Annotated[
        str,
        Meaning("SHA-256 of the result file (canonical JSON: sorted keys, no whitespace)"),
    ]


@_event("policy.published")
@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyPublished(AuditPayload):
    """A policy version was recorded as published (`consentry policy publish`; see
    [transparency.md](transparency.md)). Each version is published once; a version already
    published with other content is refused.
    """

    version: Annotated[str, Meaning("the version's name")]
    effective_from: Annotated[str, Meaning("RFC 3339 instant it takes effect")]
    version_sha256: Annotated[
        str,
        Meaning("SHA-256 of the version's canonical JSON (what was published)"),
    ]
    file_sha256: Annotated[str, Meaning("SHA-256 of the policy file's bytes at publishing")]
    previous_version: Annotated[str | None, Meaning("the version before it in the file, or null")]
    changes: Annotated[
        int,
        Meaning("number of plain-word changes from the previous version (`consentry policy diff`)"),
    ]
    purposes: Annotated[list[str], Meaning("purpose keys of the version")]


def field_meanings(cls: type[AuditPayload]) -> list[tuple[str, str]]:
    """(field, meaning) of an event type's fields, in declaration order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    found = []
    for f in fields(cls):  # type: ignore[arg-type]
        meaning = next(
            m for m in getattr(hints[f.name], "__metadata__", ()) if isinstance(m, Meaning)
        )
        found.append((f.name, meaning.text))
    return found


def markdown() -> str:
    """docs/audit.md's event type sections: per type its docstring and a field table."""
    out: list[str] = []
    for event_type, cls in AUDIT_EVENT_CLASSES.items():
        doc = " ".join((cls.__doc__ or "").split())
        out += [f"## `{event_type}`", "", doc, "", "| field | meaning |", "|---|---|"]
        out += [f"| `{name}` | {text} |" for name, text in field_meanings(cls)]
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown(), end="")
