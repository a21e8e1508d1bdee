"""Which posts a licensee may receive at a cut-off instant, and why the others may not.

One Ibis expression per delivery: every post gets one boolean per check and its first
failing reason, on DuckDB or Spark alike. The build, `consentry explain` and the revocation
feed all read these same columns, so they can never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import ibis
import ibis.expr.types as ir

from consentry.ledger.bulk import resolve_consent_bulk
from consentry.ledger.rules import SubjectFacts, resolve_consent
from consentry.policy import PolicyFile, expand_region

__all__ = [
    "REASON_ORDER",
    "EligibilityReason",
    "LicenceScope",
    "author_facts",
    "eligibility",
    "reasons_of",
]


class EligibilityReason(StrEnum):
    """Why a post may not go to a licensee, in the order the checks are listed."""

    CREATED_AFTER_CUTOFF = "created_after_cutoff"
    NOT_PUBLIC = "not_public"
    POST_DELETED = "post_deleted"
    AUTHOR_UNKNOWN = "author_unknown"
    AUTHOR_DELETED = "author_deleted"
    AUTHOR_DEACTIVATED = "author_deactivated"
    AUTHOR_PROTECTED = "author_protected"
    OUT_OF_SCOPE_REGION = "out_of_scope_region"
    OUT_OF_SCOPE_LANGUAGE = "out_of_scope_language"
    OUT_OF_SCOPE_PERIOD = "out_of_scope_period"
    CONSENT_DENIED = "consent_denied"


REASON_ORDER: tuple[EligibilityReason, ...] = tuple(EligibilityReason)
"""The checks in the order `reasons` lists them; a post counts under its first."""


@dataclass(frozen=True, slots=True)
class LicenceScope:
    """What a licence covers besides consent: purpose, regions, languages, period."""

    purpose: str
    regions: frozenset[str] = field(default_factory=frozenset)
    """Country codes the licence covers (groups already expanded); empty: everywhere."""
    exclude_regions: frozenset[str] = field(default_factory=frozenset)
    languages: frozenset[str] = field(default_factory=frozenset)
    """Language tags covered (lower case); empty: every language."""
    period_from: datetime | None = None
    period_to: datetime | None = None
    """Posts created in [period_from, period_to); open ends allowed."""

    @classmethod
    def build(
        cls,
        purpose: str,
        *,
        regions: Sequence[str] = (),
        exclude_regions: Sequence[str] = (),
        languages: Sequence[str] = (),
        period_from: datetime | None = None,
        period_to: datetime | None = None,
    ) -> LicenceScope:
        """Expand region groups (EU, EEA, UK) and normalise case."""

        def countries(codes: Sequence[str]) -> frozenset[str]:
            return frozenset(c for code in codes for c in expand_region(code.upper()))

        return cls(
            purpose=purpose,
            regions=countries(regions),
            exclude_regions=countries(exclude_regions),
            languages=frozenset(lang.lower() for lang in languages),
            period_from=period_from,
            period_to=period_to,
        )


def _ts(value: datetime) -> ir.TimestampScalar:
    return ibis.literal(value.astimezone(UTC), type="timestamp('UTC', 6)")


def author_facts(
    policy: PolicyFile,
    users: ir.Table,
    events: ir.Table,
    scope: LicenceScope,
    as_of: datetime,
) -> ir.Table:
    """The author half of `eligibility`: one row per id an author may have.

    Columns: `author_id`, `region`, `birth_date`, `author_protected`,
    `author_deactivated_at`, `author_deleted_at`, `known`, `consent_decision`,
    `consent_rule`, `consent_since`, `policy_version`.

    1. Every user (`known` true), plus every id with consent events that is not a user
       (`known` false, no region, no birth date): built from `users` and the events only,
       never from the posts, so it is small and can be computed once per build.
    2. Consent for the licence's purpose at `as_of` for each, by `resolve_consent_bulk`.
    """
    as_of = as_of.astimezone(UTC)
    known_users = users.select(
        author_id=users.user_id,
        region=users.region,
        birth_date=users.birth_date,
        author_protected=users.protected,
        author_deactivated_at=users.deactivated_at,
        author_deleted_at=users.deleted_at,
        known=ibis.literal(True),
    )
    # Nullable types throughout: `users` may declare NOT NULL columns (the lake's canonical
    # schema does), the strangers below are nulls, and a union needs equal schemas.
    known_users = known_users.cast(
        {name: dtype.copy(nullable=True) for name, dtype in known_users.schema().items()}
    )
    strangers = events.select(author_id=events.user_id).distinct()
    strangers = strangers.anti_join(users, strangers.author_id == users.user_id).select(
        author_id=strangers.author_id,
        region=ibis.null(known_users.region.type()),
        birth_date=ibis.null(known_users.birth_date.type()),
        author_protected=ibis.null(known_users.author_protected.type()),
        author_deactivated_at=ibis.null(known_users.author_deactivated_at.type()),
        author_deleted_at=ibis.null(known_users.author_deleted_at.type()),
        known=ibis.literal(False),
    )
    subjects = known_users.union(strangers)
    consent = resolve_consent_bulk(
        policy,
        subjects.select(
            user_id=subjects.author_id, region=subjects.region, birth_date=subjects.birth_date
        ),
        events,
        scope.purpose,
        as_of,
    )
    return subjects.join(consent, subjects.author_id == consent.user_id).select(
        subjects,
        consent_decision=consent.decision,
        consent_rule=consent.rule,
        consent_since=consent.since,
        policy_version=consent.policy_version,
    )


def eligibility(
    policy: PolicyFile,
    posts: ir.Table,
    users: ir.Table,
    events: ir.Table,
    scope: LicenceScope,
    as_of: datetime,
    *,
    facts: ir.Table | None = None,
) -> ir.Table:
    """Every post with its checks, first failing reason and the author's consent.

    Columns: the post's own, `author_region`, one boolean `fail_<reason>` per reason,
    `first_reason` (null when eligible), `eligible`, `consent_decision`, `consent_rule`,
    `consent_since`, `policy_version`.

    1. `created_after_cutoff`: created_at > as_of.
    2. `not_public`: visibility is not `public`.
    3. `post_deleted`: deleted_at <= as_of.
    4. `author_unknown`: the author is not in `users`.
    5. `author_deleted` / 6. `author_deactivated`: their instant <= as_of.
    7. `author_protected`: the account is protected.
    8. `out_of_scope_region`: the licence names regions and the author's is not among them,
       or the author's region is excluded (an unknown region is outside any named list).
    9. `out_of_scope_language`: the licence names languages and the post's is not among them.
    10. `out_of_scope_period`: created_at outside [from, to).
    11. `consent_denied`: the author's consent for the licence's purpose at as_of, resolved by
        `resolve_consent_bulk` (an author unknown to `users` is resolved as a user with no
        region and no birth date, exactly as the scalar rules do), is not `allow`.

    The author columns come from `author_facts` (pass `facts` to reuse a materialised copy).
    """
    as_of = as_of.astimezone(UTC)
    cutoff = _ts(as_of)
    if facts is None:
        facts = author_facts(policy, users, events, scope, as_of)
    # An author in neither `users` nor the events is resolved with no facts and no event:
    # one constant decision (the scalar rules, which the bulk ones are held equal to), so
    # no pass over the posts is needed to find such authors.
    nobody = resolve_consent(policy, SubjectFacts(""), scope.purpose, as_of, None)
    missing = facts.known.isnull()
    joined = posts.left_join(facts, posts.author_id == facts.author_id).select(
        posts,
        region=facts.region,
        birth_date=facts.birth_date,
        author_protected=facts.author_protected,
        author_deactivated_at=facts.author_deactivated_at,
        author_deleted_at=facts.author_deleted_at,
        known=facts.known.fill_null(False),
        consent_decision=ibis.ifelse(
            missing, ibis.literal(nobody.decision.value, "string"), facts.consent_decision
        ),
        consent_rule=ibis.ifelse(
            missing, ibis.literal(nobody.rule.value, "string"), facts.consent_rule
        ),
        consent_since=ibis.ifelse(
            missing, ibis.literal(nobody.since, "timestamp('UTC', 6)"), facts.consent_since
        ),
        policy_version=ibis.ifelse(
            missing, ibis.literal(nobody.policy_version, "string"), facts.policy_version
        ),
    )

    region = joined.region.upper()
    out_of_region = ibis.literal(False)
    if scope.regions:
        out_of_region = out_of_region | ~region.isin(sorted(scope.regions)).fill_null(False)
    if scope.exclude_regions:
        out_of_region = out_of_region | region.isin(sorted(scope.exclude_regions)).fill_null(False)
    out_of_language = ibis.literal(False)
    if scope.languages:
        out_of_language = ~joined.lang.lower().isin(sorted(scope.languages)).fill_null(False)
    out_of_period = ibis.literal(False)
    if scope.period_from is not None:
        out_of_period = out_of_period | (joined.created_at < _ts(scope.period_from))
    if scope.period_to is not None:
        out_of_period = out_of_period | (joined.created_at >= _ts(scope.period_to))

    checks: dict[EligibilityReason, ir.BooleanValue] = {
        EligibilityReason.CREATED_AFTER_CUTOFF: joined.created_at > cutoff,
        EligibilityReason.NOT_PUBLIC: joined.visibility != "public",
        EligibilityReason.POST_DELETED: (joined.deleted_at <= cutoff).fill_null(False),
        EligibilityReason.AUTHOR_UNKNOWN: ~joined.known,
        EligibilityReason.AUTHOR_DELETED: (joined.author_deleted_at <= cutoff).fill_null(False),
        EligibilityReason.AUTHOR_DEACTIVATED: (joined.author_deactivated_at <= cutoff).fill_null(
            False
        ),
        EligibilityReason.AUTHOR_PROTECTED: joined.author_protected.fill_null(False),
        EligibilityReason.OUT_OF_SCOPE_REGION: out_of_region,
        EligibilityReason.OUT_OF_SCOPE_LANGUAGE: out_of_language,
        EligibilityReason.OUT_OF_SCOPE_PERIOD: out_of_period,
        EligibilityReason.CONSENT_DENIED: joined.consent_decision != "allow",
    }
    flags = {f"fail_{reason.value}": check for reason, check in checks.items()}
    first_reason = ibis.cases(
        *[(check, reason.value) for reason, check in checks.items()],
        else_=ibis.null("string"),
    )
    return joined.mutate(**flags).mutate(
        first_reason=first_reason,
        eligible=first_reason.isnull(),
    )


def reasons_of(row: dict[str, object]) -> list[str]:
    """Every failing check of one evaluated post, in REASON_ORDER."""
    return [r.value for r in REASON_ORDER if row.get(f"fail_{r.value}")]
