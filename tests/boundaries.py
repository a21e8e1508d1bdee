"""Every half-open interval of the policy and of the data model, listed once (as data).

Each row names the interval, its ends (which is closed, which open), where its rule is
stated and evaluated, and the function that evaluates it on each engine.
tests/test_boundaries.py generates one test per (interval, engine) from this table and
checks every end at the instant, one microsecond before and one microsecond after; a
pairing of the table with the probes there fails when either side lacks the other.
docs/boundaries.md is this table in prose, with a worked example.

Membership: an instant x is *inside* an interval when the rule counts it (the event decides,
the owner holds the credential, the hold protects, the access is in the window, the record
is still kept, ...). For an end at instant b:

- a `start` end: x = b - 1 µs is outside, x = b + 1 µs inside, x = b inside iff closed;
- an `end` end: x = b - 1 µs is inside, x = b + 1 µs outside, x = b inside iff closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["BOUNDARIES", "ENGINES", "OFFSETS_US", "Boundary", "End", "expected"]

ENGINES: dict[str, str] = {
    "python": "a plain Python rule (row at a time)",
    "numpy": "a vectorised NumPy kernel in the process",
    "numpy-columnar": "the columnar assessment's NumPy attribution (scraping/columnar/)",
    "sqlite": "SQL on the store, SQLite",
    "postgresql": "SQL on the store, PostgreSQL",
    "duckdb": "an Ibis expression run by DuckDB",
    "spark": "the same Ibis expression run by Spark (local session)",
    "lua": "the meter's Lua script in Redis (RedisMeter)",
}
"""The engines and backends a boundary can be evaluated on."""

OFFSETS_US: tuple[int, int, int] = (-1, 0, 1)
"""Where each end is probed: one microsecond before, at, and one microsecond after."""


@dataclass(frozen=True, slots=True)
class End:
    """One end of an interval: its name (the instant it sits at), side and closedness."""

    name: str
    side: Literal["start", "end"]
    closed: bool


@dataclass(frozen=True, slots=True)
class Boundary:
    """One half-open interval and everywhere it is evaluated."""

    name: str
    interval: str
    """The interval in notation, of the instant named in `inside`."""
    inside: str
    """What being inside means."""
    ends: tuple[End, ...]
    """The finite ends the rules compare with (an open-ended side is not listed)."""
    rule: str
    """Where the rule is stated (module and docs)."""
    engines: dict[str, str]
    """Engine (a key of ENGINES) -> the function(s) that evaluate it there."""


def expected(end: End) -> list[bool]:
    """Membership at OFFSETS_US around `end` (see the module doc)."""
    if end.side == "start":
        return [False, end.closed, True]
    return [True, end.closed, False]


BOUNDARIES: tuple[Boundary, ...] = (
    Boundary(
        name="consent_as_of",
        interval="(-inf, as_of]",
        inside="a consent event at this instant decides the answer at as_of",
        ends=(End("as_of", "end", closed=True),),
        rule="ledger/rules.py resolve_consent step 3; docs/consent.md",
        engines={
            "python": "ledger.rules.resolve_consent (refuses a latest event after as_of)",
            "sqlite": "ledger.service.ConsentLedger.resolve (ConsentEventRow.at <= :at)",
            "postgresql": "ledger.service.ConsentLedger.resolve (ConsentEventRow.at <= :at)",
            "duckdb": "ledger.bulk.resolve_consent_bulk (events.at <= as_of)",
            "spark": "ledger.bulk.resolve_consent_bulk (events.at <= as_of)",
        },
    ),
    Boundary(
        name="policy_version",
        interval="[effective_from, next effective_from)",
        inside="the version is in force at this instant",
        ends=(End("effective_from", "start", closed=True),),
        rule="policy/model.py PolicyFile.version_at; docs/policy.md",
        engines={
            # The bulk and eligibility expressions call version_at in Python: one evaluation.
            "python": "policy.model.PolicyFile.version_at",
        },
    ),
    Boundary(
        name="minor_age",
        interval="[birth, adult_from)",
        inside="the user is a minor at this instant (adult_from: 00:00 UTC of the birthday)",
        ends=(End("adult_from", "end", closed=False),),
        rule="ledger/rules.py is_minor, minor_birth_cutoff; docs/consent.md",
        engines={
            "python": "ledger.rules.is_minor",
            "duckdb": "ledger.bulk.resolve_consent_bulk (birth_date > minor_birth_cutoff(at))",
            "spark": "ledger.bulk.resolve_consent_bulk (birth_date > minor_birth_cutoff(at))",
        },
    ),
    Boundary(
        name="credential_validity",
        interval="[valid_from, valid_to)",
        inside="the entity owns the credential at an access at this instant",
        ends=(End("valid_from", "start", closed=True), End("valid_to", "end", closed=False)),
        rule="scraping/attribution.py rule 1; docs/scraping.md",
        engines={
            "python": "scraping.reference._owners (ts >= valid_from & ts < valid_to)",
            "numpy": "scraping.meter.Attributor.entities (t >= c_from & t < c_to)",
            "numpy-columnar": "scraping.columnar.resolve_credentials / CredentialMap.codes_at",
            "duckdb": "scraping.attribution._best_owners (c_from <= ts AND ts < c_to)",
            "spark": "scraping.attribution._best_owners (c_from <= ts AND ts < c_to)",
            "lua": "Meter with RedisMeter: Attributor.entities, then counted by the script",
        },
    ),
    Boundary(
        name="legal_hold",
        interval="[created_at, min(until, released_at))",
        inside="the hold protects what it covers at this instant",
        ends=(
            End("created_at", "start", closed=True),
            End("until", "end", closed=False),
            End("released_at", "end", closed=False),
        ),
        rule="retention/holds.py HoldRecord.active_at; docs/retention.md",
        engines={
            # The planner and erasure read holds through hold_set: one evaluation.
            "python": "retention.holds.HoldRecord.active_at, hold_set",
        },
    ),
    Boundary(
        name="scraping_window",
        interval="[start, start + window)",
        inside="an access at this instant is in the window starting at `start`",
        ends=(End("start", "start", closed=True), End("start + window", "end", closed=False)),
        rule="scraping/rules.py rule 1; docs/scraping.md",
        engines={
            "python": "scraping.rules.forward_counts (the pure rule)",
            "numpy": "scraping.assessment.exact_stats_numpy (segmented binary searches)",
            "duckdb": "scraping.assessment._stats_window (RANGE 0 .. window - 1 µs)",
            "spark": "scraping.assessment._stats_window (RANGE 0 .. window - 1 µs)",
        },
    ),
    Boundary(
        name="meter_upper_bound",
        interval="[(bucket(t) - span) * bucket, t]",
        inside="an access at this instant counts in the upper bound at the latest access t",
        ends=(End("oldest kept bucket start", "start", closed=True),),
        rule="scraping/meter (module doc) rules 2-3; docs/scraping.md",
        engines={
            "numpy": "scraping.meter.MemoryMeter.add (_entity_runs: bucket >= top - span)",
            "lua": "scraping.meter.RedisMeter (the script: buckets >= floor)",
        },
    ),
    Boundary(
        name="meter_lower_bound",
        interval="[(bucket(t) - span + 1) * bucket, t]",
        inside="an access at this instant counts in the lower bound at the latest access t",
        ends=(End("second kept bucket start", "start", closed=True),),
        rule="scraping/meter (module doc) rule 3; docs/scraping.md",
        engines={
            "numpy": "scraping.meter.MemoryMeter.bounds (all buckets but the oldest)",
            "lua": "scraping.meter.RedisMeter (the script: total minus the floor bucket)",
        },
    ),
    Boundary(
        name="revocation_deadline",
        interval="[revoked_at, due_at]",
        inside="an unconfirmed revocation is pending (not overdue) at this instant",
        ends=(End("due_at", "end", closed=True),),
        rule="revocation/rules.py status_of; docs/revocations.md",
        engines={
            "python": "revocation.rules.status_of (overdue once now > due)",
            "sqlite": "revocation.log.RevocationLog.overdue, counts (due_at < now)",
            "postgresql": "revocation.log.RevocationLog.overdue, counts (due_at < now)",
        },
    ),
    Boundary(
        name="retention_due",
        interval="[created_at, created_at + duration)",
        inside="the record is still kept at this instant (due from the open end on)",
        ends=(End("created_at + duration", "end", closed=False),),
        rule="retention/rules.py Condition, is_due; docs/retention.md",
        engines={
            "python": "retention.rules.Condition.holds_for, is_due",
            "duckdb": "retention.candidates._due (cut-off, or the calendar interval added)",
            "spark": "retention.candidates._due (cut-off, or the calendar interval added)",
        },
    ),
    Boundary(
        name="delivery_cutoff",
        interval="(-inf, as_of]",
        inside="the post's (or its author's) instant counts at the delivery's cut-off as_of",
        ends=(
            End("created_at", "end", closed=True),
            End("deleted_at", "end", closed=True),
            End("author_deleted_at", "end", closed=True),
            End("author_deactivated_at", "end", closed=True),
        ),
        rule="delivery/eligibility.py eligibility steps 1, 3, 5, 6; docs/deliveries.md",
        engines={
            "duckdb": "delivery.eligibility.eligibility",
            "spark": "delivery.eligibility.eligibility",
        },
    ),
    Boundary(
        name="licence_period",
        interval="[period_from, period_to)",
        inside="a post created at this instant is in the licence's period",
        ends=(End("period_from", "start", closed=True), End("period_to", "end", closed=False)),
        rule="delivery/eligibility.py eligibility step 10; docs/licensees.md",
        engines={
            "duckdb": "delivery.eligibility.eligibility",
            "spark": "delivery.eligibility.eligibility",
        },
    ),
)
"""The table: one row per interval."""
