"""The policy schema: pydantic models for a policy file and its versions.

Structure is checked by pydantic; rules that span fields raise `PathError`, whose `path`
(relative to where pydantic reports the error) lets the loader point at the exact YAML line.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args, get_origin

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from consentry.errors import BadInput, Problem
from consentry.policy.duration import Duration
from consentry.policy.regions import expand_region, is_currency_code, is_region
from consentry.schema import TABLES

__all__ = [
    "AIPREF_CATEGORIES",
    "ANONYMISABLE_FIELDS",
    "DEFAULT_REVOCATION_SLA",
    "POLICY_FIELDS",
    "RETENTION_CATEGORIES",
    "RETENTION_TRIGGERS",
    "RETIRED_AIPREF_CATEGORIES",
    "AiprefCategory",
    "Choice",
    "PathError",
    "PolicyDocument",
    "PolicyFile",
    "PolicyVersion",
    "PolicyVersionNotFoundError",
    "Purpose",
    "RetentionCategory",
    "RetentionRule",
    "ScrapingTerms",
    "region_default_for",
]


class Choice(StrEnum):
    """A consent state: the purpose may use the data (`allow`) or may not (`deny`)."""

    ALLOW = "allow"
    DENY = "deny"


DEFAULT_REVOCATION_SLA: Duration = Duration(days=30)
"""The revocation deadline when no policy version is in force at the revocation instant."""

AiprefCategory = Literal["train-ai", "search", "ai-use"]
"""What a purpose's `aipref` may list: the current labels and one retired label."""

AIPREF_CATEGORIES: tuple[str, ...] = ("train-ai", "search")
"""The usage categories of the IETF AIPREF vocabulary, pinned to draft-ietf-aipref-vocab-07
(19 August 2026), "Usage Category Labels": `train-ai` ("AI Model Training": using an asset to
change the learned parameters of a model that generates synthetic content) and `search`
(selecting assets and directing users to them). Since -05 the draft defines no other label;
these are the only categories Consentry publishes."""

RETIRED_AIPREF_CATEGORIES: tuple[str, ...] = ("ai-use",)
"""Labels of earlier drafts (`ai-use`, draft -02 only) still accepted in a policy file, so a
published policy version never has to change (its content is sealed in the audit log), but
never published: a purpose listing one contributes nothing to the signals."""

RetentionCategory = Literal[
    "posts", "profile", "consent_evidence", "access_events", "deliveries", "audit"
]
RETENTION_CATEGORIES: tuple[RetentionCategory, ...] = get_args(RetentionCategory)
"""Every data category a retention rule can govern, in display order."""

RETENTION_TRIGGERS: dict[str, frozenset[str]] = {
    "posts": frozenset(
        {"max_age", "while_account_active", "after_account_deleted", "after_post_deleted"}
    ),
    "profile": frozenset({"max_age", "while_account_active", "after_account_deleted"}),
    "consent_evidence": frozenset({"max_age", "while_account_active", "after_account_deleted"}),
    # Access logs, deliveries and the audit log belong to no single account: age only.
    "access_events": frozenset({"max_age"}),
    "deliveries": frozenset({"max_age"}),
    "audit": frozenset({"max_age"}),
}
"""Category -> the end conditions that make sense for it."""

ANONYMISABLE_FIELDS: dict[str, dict[str, Literal["null", "hash"]]] = {
    "posts": {"author_id": "hash", "text": "hash", "lang": "null"},
    "profile": {"region": "hash", "birth_date": "null"},
    "consent_evidence": {"user_id": "hash"},
    "access_events": {"credential": "hash", "endpoint": "null"},
}
"""Category -> the columns `action: anonymise` may name, and how each is anonymised:
`null` (the column is nullable) or `hash` (replaced by `anon:` + a keyed hash of the value,
so equal values stay equal). Keys, instants the rules read and enum columns are never
anonymised; deliveries and the audit log can only be deleted."""

# Category -> canonical lake table whose columns `fields` may name (deliveries and audit
# live in the control-plane store; their columns are not checked here).
_CATEGORY_TABLES = {
    "posts": "posts",
    "profile": "users",
    "consent_evidence": "consent_events",
    "access_events": "access_events",
}

_SNAKE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class PathError(ValueError):
    """A rule broken at a sub-path of the value being validated (e.g. `("purposes", 2, "key")`)."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


_STRICT = ConfigDict(frozen=True, extra="forbid")
Text = Annotated[str, Field(min_length=1)]


class Purpose(BaseModel):
    """One reason posts may be used, with its defaults for each kind of user."""

    model_config = _STRICT

    key: str = Field(description="Stable snake_case id, used in consent events and the API.")
    title: Text = Field(description="Short name shown to users.")
    description: Text = Field(description="What it means, in plain language.")
    default: Choice = Field(description="The state when the user has not chosen (allow|deny).")
    region_defaults: dict[str, Choice] = Field(
        default_factory=dict,
        description="Region code or group -> default there; the most specific entry wins.",
    )
    minors: Choice = Field(
        description="deny: never applies to minors, whatever they choose; allow: normal rules."
    )
    unknown_age: Choice = Field(
        description="deny: never applies when the age is unknown; allow: normal rules."
    )
    gpc: bool = Field(description="True when a Global Privacy Control signal means deny.")
    aipref: list[AiprefCategory] = Field(
        default_factory=list, description="AIPREF categories this purpose maps to."
    )

    @field_validator("key")
    @classmethod
    def _snake_case(cls, key: str) -> str:
        if not _SNAKE.fullmatch(key):
            raise ValueError(f"purpose keys are snake_case (e.g. ai_training), not {key!r}")
        return key

    @field_validator("region_defaults")
    @classmethod
    def _known_regions(cls, entries: dict[str, Choice]) -> dict[str, Choice]:
        for code in entries:
            if code != code.upper() and is_region(code.upper()):
                raise PathError((code,), f"region codes are upper case: write {code.upper()!r}")
            if not is_region(code):
                raise PathError(
                    (code,),
                    f"unknown region {code!r}: use an ISO 3166-1 alpha-2 code (GB, not UK) "
                    "or a group: EU, EEA, UK",
                )
        return entries

    @field_validator("aipref")
    @classmethod
    def _unique_aipref(cls, categories: list[str]) -> list[str]:
        for i, category in enumerate(categories):
            if category in categories[:i]:
                raise PathError((i,), f"{category!r} is listed twice")
        return categories

    def default_for(self, region_code: str | None) -> Choice:
        """The default for a user in `region_code`: the most specific entry, else `default`."""
        found = region_default_for(self, region_code) if region_code else None
        return self.default if found is None else found

    def resolved_region_defaults(self) -> dict[str, Choice]:
        """Country code -> default, for every country some entry covers (for vectorised joins)."""
        codes = set().union(*(expand_region(k) for k in self.region_defaults))
        return {code: self.default_for(code) for code in sorted(codes)}


def region_default_for(purpose: Purpose, region_code: str) -> Choice | None:
    """The region default that applies to `region_code`, or None when no entry covers it.

    1. Entries covering the code are the exact code and every group containing it.
    2. The exact code beats any group; among groups the smallest wins (EU before EEA).
    3. The code is compared upper-case; an unknown code is covered by no entry.
    """
    code = region_code.upper()
    covering = [
        (0 if key == code else 1, len(expand_region(key)), choice)
        for key, choice in purpose.region_defaults.items()
        if code in expand_region(key)
    ]
    if not covering:
        return None
    return min(covering, key=lambda c: (c[0], c[1]))[2]


class RetentionRule(BaseModel):
    """How long one category of data is kept, and what happens when it ends.

    End conditions (at least one; when several are given the earliest wins):
    1. `max_age`: the record's age since it was created.
    2. `while_account_active: true`: until the owning account is deleted, plus the grace in
       `after_account_deleted` (0 when absent). `after_account_deleted` alone means the same.
    3. `after_post_deleted`: a grace after the post itself is deleted (posts only).
    """

    model_config = _STRICT

    max_age: Duration | None = Field(default=None, description="Kept at most this long.")
    while_account_active: bool | None = Field(
        default=None, description="true: kept while the owning account exists."
    )
    after_account_deleted: Duration | None = Field(
        default=None, description="Grace after the account is deleted."
    )
    after_post_deleted: Duration | None = Field(
        default=None, description="Grace after the post is deleted (posts only)."
    )
    action: Literal["delete", "anonymise"] = Field(
        default="delete", description="What happens at the end: delete or anonymise."
    )
    fields: list[str] = Field(
        default_factory=list, description="Columns to null or hash when action is anonymise."
    )

    @model_validator(mode="after")
    def _coherent(self) -> RetentionRule:
        if self.while_account_active is False:
            raise PathError(
                ("while_account_active",), "write 'while_account_active: true' or leave it out"
            )
        if not self.triggers:
            raise ValueError(
                "a retention rule needs an end: max_age, while_account_active, "
                "after_account_deleted or after_post_deleted"
            )
        if self.max_age is not None and self.max_age.is_zero:
            raise PathError(("max_age",), "max_age must be longer than 0")
        if self.action == "anonymise" and not self.fields:
            raise PathError(("fields",), "action anonymise needs the fields to null or hash")
        if self.action == "delete" and self.fields:
            raise PathError(("fields",), "fields only apply to action: anonymise")
        for i, name in enumerate(self.fields):
            if name in self.fields[:i]:
                raise PathError(("fields", i), f"{name!r} is listed twice")
        return self

    @property
    def triggers(self) -> tuple[str, ...]:
        """The end conditions this rule states, in schema order."""
        return tuple(
            name
            for name in (
                "max_age",
                "while_account_active",
                "after_account_deleted",
                "after_post_deleted",
            )
            if getattr(self, name) not in (None, False)
        )

    @property
    def account_grace(self) -> Duration | None:
        """Grace after account deletion, or None when account deletion does not end the data."""
        if self.after_account_deleted is not None:
            return self.after_account_deleted
        return Duration() if self.while_account_active else None

    def expires_at(
        self,
        created_at: datetime,
        *,
        account_deleted_at: datetime | None = None,
        post_deleted_at: datetime | None = None,
    ) -> datetime | None:
        """When a record must be gone: the earliest end that has started, else None (keep).

        1. `max_age` ends it at `created_at + max_age`.
        2. An account deletion ends it at `account_deleted_at + account_grace`.
        3. A post deletion ends it at `post_deleted_at + after_post_deleted`.
        """
        ends: list[datetime] = []
        if self.max_age is not None:
            ends.append(self.max_age.add_to(created_at))
        grace = self.account_grace
        if grace is not None and account_deleted_at is not None:
            ends.append(grace.add_to(account_deleted_at))
        if self.after_post_deleted is not None and post_deleted_at is not None:
            ends.append(self.after_post_deleted.add_to(post_deleted_at))
        return min(ends) if ends else None


class ScrapingTerms(BaseModel):
    """The liquidated-damages clause for bulk access (see docs/policy.md for the semantics)."""

    model_config = _STRICT

    threshold_posts: int = Field(gt=0, description="Posts allowed per window; more is billed.")
    window: Duration = Field(
        default=Duration(seconds=86_400), description="Sliding window length (default 24h)."
    )
    amount_per_million: Decimal = Field(ge=0, description="Damages per 1,000,000 posts.")
    currency: str = Field(description="ISO 4217 code of the amount, e.g. USD.")
    rounding: Literal["pro_rata", "per_full_million", "per_started_million"] = Field(
        default="pro_rata", description="How posts become millions: exact, floor or ceil."
    )
    count: Literal["accesses"] = Field(
        default="accesses", description="What is counted: every post served (accesses)."
    )
    note: str | None = Field(default=None, description="Free-text remark, e.g. a regional variant.")

    @field_validator("window")
    @classmethod
    def _fixed_window(cls, window: Duration) -> Duration:
        if window.has_calendar_parts or window.is_zero:
            raise ValueError("the window must be a fixed, positive length (e.g. 24h or 7 days)")
        return window

    @field_validator("currency")
    @classmethod
    def _iso_4217(cls, code: str) -> str:
        if not is_currency_code(code):
            raise ValueError(f"unknown currency {code!r}: use an ISO 4217 code such as USD or EUR")
        return code


class PolicyVersion(BaseModel):
    """One dated version of the policy: its purposes, retention, scraping clause and SLA."""

    model_config = _STRICT

    version: str = Field(description="Version name, e.g. the date it was published.")
    effective_from: AwareDatetime = Field(
        description="UTC instant it takes effect (offset required)."
    )
    age_of_majority: int = Field(
        default=18, ge=1, le=30, description="Users younger than this are minors."
    )
    purposes: list[Purpose] = Field(description="Every purpose posts may be used for.")
    retention: dict[RetentionCategory, RetentionRule] = Field(
        default_factory=dict, description="Data category -> retention rule."
    )
    scraping: ScrapingTerms | None = Field(
        default=None, description="Liquidated damages for bulk access; absent when none."
    )
    revocation_sla: Duration = Field(
        default=Duration(days=30),
        description="How long a licensee has to delete revoked records (default 30 days).",
    )

    @field_validator("version")
    @classmethod
    def _version_name(cls, name: str) -> str:
        if not _VERSION.fullmatch(name):
            raise ValueError(f"version names use letters, digits, '.', '_' and '-': {name!r}")
        return name

    @field_validator("effective_from")
    @classmethod
    def _utc(cls, at: datetime) -> datetime:
        return at.astimezone(UTC)

    @field_validator("purposes")
    @classmethod
    def _unique_keys(cls, purposes: list[Purpose]) -> list[Purpose]:
        seen: set[str] = set()
        for i, purpose in enumerate(purposes):
            if purpose.key in seen:
                raise PathError((i, "key"), f"purpose key {purpose.key!r} is used twice")
            seen.add(purpose.key)
        return purposes

    @field_validator("retention")
    @classmethod
    def _fits_category(
        cls, rules: dict[RetentionCategory, RetentionRule]
    ) -> dict[RetentionCategory, RetentionRule]:
        for category, rule in rules.items():
            allowed = RETENTION_TRIGGERS[category]
            for trigger in rule.triggers:
                if trigger not in allowed:
                    names = sorted(allowed)
                    choices = ", ".join(names[:-1]) + " or " if len(names) > 1 else ""
                    raise PathError(
                        (category, trigger),
                        f"{trigger} does not apply to {category}; use {choices}{names[-1]}",
                    )
            table = _CATEGORY_TABLES.get(category)
            if table is None:
                if rule.action == "anonymise":
                    raise PathError(
                        (category, "action"), f"{category} can only be deleted, not anonymised"
                    )
                continue
            columns = TABLES[table].column_names
            allowed_fields = ANONYMISABLE_FIELDS[category]
            for i, name in enumerate(rule.fields):
                if name not in columns:
                    raise PathError(
                        (category, "fields", i),
                        f"{name!r} is not a column of {table}: " + ", ".join(columns),
                    )
                if name not in allowed_fields:
                    raise PathError(
                        (category, "fields", i),
                        f"{name!r} cannot be anonymised (a key, an instant the rules read or a "
                        f"fixed value); {category} may anonymise: " + ", ".join(allowed_fields),
                    )
        return rules

    @field_validator("revocation_sla")
    @classmethod
    def _positive_sla(cls, sla: Duration) -> Duration:
        if sla.is_zero:
            raise ValueError("revocation_sla must be longer than 0")
        return sla

    def purpose(self, key: str) -> Purpose | None:
        """The purpose with this key, or None."""
        return next((p for p in self.purposes if p.key == key), None)

    def retention_gaps(self) -> list[str]:
        """Data categories this version states no retention rule for, in display order."""
        return [c for c in RETENTION_CATEGORIES if c not in self.retention]


class PolicyDocument(BaseModel):
    """The top level of a policy YAML file."""

    model_config = _STRICT

    platform: str | None = Field(default=None, description="Whose policy this is, e.g. X.")
    versions: list[PolicyVersion] = Field(
        min_length=1, description="Every version, in any order (sorted by effective_from)."
    )

    @field_validator("versions")
    @classmethod
    def _distinct(cls, versions: list[PolicyVersion]) -> list[PolicyVersion]:
        names: set[str] = set()
        starts: set[datetime] = set()
        for i, v in enumerate(versions):
            if v.version in names:
                raise PathError((i, "version"), f"version {v.version!r} appears twice")
            if v.effective_from in starts:
                raise PathError(
                    (i, "effective_from"), "another version takes effect at the same instant"
                )
            names.add(v.version)
            starts.add(v.effective_from)
        return versions


class PolicyVersionNotFoundError(BadInput, KeyError):
    """`PolicyFile.get` was asked for a version the file does not hold (CLI exit 2)."""

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


@dataclass(frozen=True, slots=True)
class PolicyFile:
    """A loaded policy file: its versions sorted by `effective_from`, and its content hash."""

    source: str
    """Where it was read from (path or name), used in messages."""
    content_sha256: str
    """SHA-256 of the file's bytes (hex), to record which policy text was enforced."""
    versions: list[PolicyVersion]
    platform: str | None = None

    def revocation_sla_at(self, at: datetime) -> Duration:
        """The revocation deadline in force at `at`: the `revocation_sla` of the version in
        force then, or DEFAULT_REVOCATION_SLA when none is (a revocation before the first
        version still gets a deadline)."""
        version = self.version_at(at.astimezone(UTC))
        return version.revocation_sla if version is not None else DEFAULT_REVOCATION_SLA

    def version_at(self, at: datetime) -> PolicyVersion | None:
        """The version in force at `at`: the latest whose effective_from <= at (aware `at` only)."""
        if at.tzinfo is None:
            raise ValueError("version_at needs an aware datetime (with an offset)")
        current: PolicyVersion | None = None
        for v in self.versions:
            if v.effective_from <= at:
                current = v
        return current

    def default_since(
        self, purpose_key: str, region_code: str | None, at: datetime
    ) -> PolicyVersion | None:
        """The version since which `purpose_key`'s default for a user in `region_code` has
        been what it is at `at` (what "on by default since policy …" names).

        1. None when no version is in force at `at` or it lacks the purpose.
        2. Otherwise walk back from the version in force: an earlier version counts while it
           has the purpose with the same default for the region (`Purpose.default_for`); the
           earliest version of that unbroken run is the answer.
        """
        current = self.version_at(at)
        purpose = current.purpose(purpose_key) if current else None
        if current is None or purpose is None:
            return None
        choice = purpose.default_for(region_code)
        since = current
        index = next(i for i, v in enumerate(self.versions) if v is current)
        for earlier in reversed(self.versions[:index]):
            before = earlier.purpose(purpose_key)
            if before is None or before.default_for(region_code) is not choice:
                break
            since = earlier
        return since

    def get(self, version: str) -> PolicyVersion:
        """The version named `version`; else PolicyVersionNotFoundError (KeyError, BadInput)."""
        for v in self.versions:
            if v.version == version:
                return v
        known = ", ".join(v.version for v in self.versions)
        raise PolicyVersionNotFoundError(
            Problem(
                location=self.source,
                row=None,
                field="version",
                message=f"no version {version!r}; the file has {known}",
            )
        )


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic models reachable through Optional, list[...] and dict[..., ...]."""
    origin = get_origin(annotation)
    if origin in (list, dict, typing.Union, types.UnionType, Annotated):
        args = get_args(annotation)
        inner = args[:1] if origin is Annotated else args
        return [m for a in inner for m in _models_in(a)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _field_names(model: type[BaseModel]) -> list[str]:
    """Every field name under `model`, depth first; Duration is a value, not a section."""
    names: list[str] = []
    for name, info in model.model_fields.items():
        names.append(name)
        for sub in _models_in(info.annotation):
            if sub is not Duration:
                names.extend(_field_names(sub))
    return names


POLICY_FIELDS: tuple[str, ...] = tuple(dict.fromkeys(_field_names(PolicyDocument)))
"""Every field name a policy file may use, in schema order (docs/policy.md documents each)."""
