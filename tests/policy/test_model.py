"""Regions, version lookup and the shipped X policy file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consentry.errors import BadInput
from consentry.policy import (
    POLICY_FIELDS,
    REGION_GROUPS,
    Choice,
    Duration,
    PolicyFile,
    PolicyVersion,
    PolicyVersionNotFoundError,
    Purpose,
    default_policy_path,
    expand_region,
    load_policy,
    parse_policy,
    region_default_for,
)
from consentry.settings import DEFAULT_POLICY_FILE, Settings


def _purpose(**region_defaults: str) -> Purpose:
    return Purpose(
        key="p",
        title="P",
        description="d",
        default=Choice.ALLOW,
        region_defaults={k: Choice(v) for k, v in region_defaults.items()},
        minors=Choice.DENY,
        unknown_age=Choice.ALLOW,
        gpc=True,
    )


def test_region_groups() -> None:
    assert len(REGION_GROUPS["EU"]) == 27
    assert REGION_GROUPS["EEA"] == REGION_GROUPS["EU"] | {"IS", "LI", "NO"}
    assert REGION_GROUPS["UK"] == frozenset({"GB"})
    assert "GB" not in REGION_GROUPS["EU"]
    assert expand_region("DE") == frozenset({"DE"})
    assert expand_region("EEA") == REGION_GROUPS["EEA"]
    with pytest.raises(KeyError):
        expand_region("XX")


def test_most_specific_region_entry_wins() -> None:
    purpose = _purpose(EEA="allow", EU="deny", DE="allow", UK="deny", GB="allow")
    assert region_default_for(purpose, "DE") is Choice.ALLOW  # exact beats EU
    assert region_default_for(purpose, "FR") is Choice.DENY  # EU beats the larger EEA
    assert region_default_for(purpose, "NO") is Choice.ALLOW  # only EEA covers Norway
    assert region_default_for(purpose, "gb") is Choice.ALLOW  # exact GB beats group UK
    assert region_default_for(purpose, "US") is None
    assert purpose.default_for("US") is Choice.ALLOW
    assert purpose.default_for(None) is Choice.ALLOW
    resolved = purpose.resolved_region_defaults()
    assert len(resolved) == 31
    assert resolved["FR"] is Choice.DENY
    assert resolved["DE"] is Choice.ALLOW


@given(st.sampled_from(sorted(REGION_GROUPS["EEA"] | {"GB", "US", "BR"})), st.booleans())
def test_exact_code_always_wins(code: str, allow: bool) -> None:
    exact = "allow" if allow else "deny"
    other = "deny" if allow else "allow"
    purpose = _purpose(**{"EU": other, "EEA": other, "UK": other, code: exact})
    assert region_default_for(purpose, code) is Choice(exact)
    assert purpose.resolved_region_defaults()[code] is Choice(exact)


def _versions() -> tuple[PolicyFile, PolicyVersion, PolicyVersion]:
    policy = load_policy(default_policy_path())
    old, new = policy.versions
    return policy, old, new


def test_version_at_boundaries() -> None:
    policy, old, new = _versions()
    start = datetime(2024, 11, 15, tzinfo=UTC)
    assert policy.version_at(start) is new
    assert policy.version_at(start - timedelta(microseconds=1)) is old
    assert policy.version_at(datetime(2023, 9, 29, tzinfo=UTC)) is old
    assert policy.version_at(datetime(2023, 9, 28, 23, 59, 59, tzinfo=UTC)) is None
    assert policy.version_at(datetime(2030, 1, 1, tzinfo=UTC)) is new
    with pytest.raises(ValueError, match="aware"):
        policy.version_at(datetime(2024, 11, 15))


def test_get_unknown_version_is_a_key_error_and_bad_input() -> None:
    policy, _, new = _versions()
    assert policy.get("2024-11-15") is new
    with pytest.raises(PolicyVersionNotFoundError) as info:
        policy.get("2025-01-01")
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, BadInput)
    assert "the file has 2023-09-29, 2024-11-15" in str(info.value)


def test_shipped_file_models_x() -> None:
    assert default_policy_path() == DEFAULT_POLICY_FILE == Settings().policy_file
    policy, old, new = _versions()
    assert policy.platform == "X"
    assert [p.key for p in old.purposes] == ["ai_training_first_party", "business_partners"]
    assert old.retention["profile"].max_age == Duration(months=18)
    assert old.scraping is None
    assert old.retention_gaps() == [
        "posts",
        "consent_evidence",
        "access_events",
        "deliveries",
        "audit",
    ]
    assert [p.key for p in new.purposes] == [
        "ai_training_third_party",
        "ai_training_first_party",
        "business_partners",
    ]
    assert new.retention_gaps() == []
    third = new.purpose("ai_training_third_party")
    assert third is not None
    assert new.purpose("nope") is None
    assert third.default_for("US") is Choice.ALLOW
    for code in ("DE", "IE", "NO", "IS", "LI", "GB"):
        assert third.default_for(code) is Choice.DENY
    assert third.minors is Choice.DENY
    assert third.aipref == ["train-ai"]
    assert new.retention["profile"].while_account_active is True
    assert new.retention["profile"].max_age is None
    terms = new.scraping
    assert terms is not None
    assert (terms.threshold_posts, terms.window, str(terms.amount_per_million)) == (
        1_000_000,
        Duration(seconds=86_400),
        "15000",
    )
    assert (terms.currency, terms.rounding, terms.count) == ("USD", "pro_rata", "accesses")
    assert terms.note is not None
    assert "EUR" in terms.note
    assert new.revocation_sla == Duration(days=30)


def test_policy_fields_enumerate_the_schema() -> None:
    for name in (
        "versions",
        "effective_from",
        "region_defaults",
        "unknown_age",
        "aipref",
        "after_post_deleted",
        "fields",
        "threshold_posts",
        "amount_per_million",
        "rounding",
        "revocation_sla",
    ):
        assert name in POLICY_FIELDS
    assert "years" not in POLICY_FIELDS  # Duration is a value, not a section
    assert len(POLICY_FIELDS) == len(set(POLICY_FIELDS))


_HISTORY = """
versions:
  - version: "v1"
    effective_from: 2020-01-01T00:00:00Z
    purposes:
      - {key: p, title: P, description: d, default: allow, minors: deny, unknown_age: allow,
         gpc: true}
  - version: "v2"
    effective_from: 2021-01-01T00:00:00Z
    purposes:
      - key: p
        title: P
        description: d
        default: allow
        region_defaults: {EU: deny}
        minors: deny
        unknown_age: allow
        gpc: true
  - version: "v3"
    effective_from: 2022-01-01T00:00:00Z
    purposes:
      - {key: q, title: Q, description: d, default: allow, minors: deny, unknown_age: allow,
         gpc: true}
  - version: "v4"
    effective_from: 2023-01-01T00:00:00Z
    purposes:
      - {key: p, title: P, description: d, default: allow, minors: deny, unknown_age: allow,
         gpc: true}
"""


@pytest.mark.parametrize(
    ("at", "region", "since"),
    [
        ("2021-06-01", "US", "v1"),  # allowed for the US since v1: v2 changed only the EU
        ("2021-06-01", "DE", "v2"),  # denied for Germany only since v2
        ("2021-06-01", None, "v1"),
        ("2020-06-01", "US", "v1"),
        ("2023-06-01", "US", "v4"),  # v3 dropped the purpose: the run starts again at v4
        ("2022-06-01", "US", None),  # not in the version in force
        ("2019-06-01", "US", None),  # no version in force
    ],
)
def test_default_since_names_the_first_version_of_the_unbroken_run(
    at: str, region: str | None, since: str | None
) -> None:
    policy = parse_policy(_HISTORY, source="history.yaml")
    found = policy.default_since("p", region, datetime.fromisoformat(at).replace(tzinfo=UTC))
    assert (found.version if found else None) == since


def test_default_since_in_the_shipped_policy() -> None:
    """X's own AI training and business partners were already on by default outside Europe
    under 2023-09-29; third-party training arrived with 2024-11-15."""
    policy, old, new = _versions()
    now = datetime(2025, 7, 1, tzinfo=UTC)
    assert policy.default_since("ai_training_first_party", "US", now) is old
    assert policy.default_since("business_partners", "US", now) is old
    assert policy.default_since("ai_training_third_party", "US", now) is new
    # In the EU, X's own training went from on (2023-09-29) to off by default (2024-11-15).
    assert policy.default_since("ai_training_first_party", "FR", now) is new
    # Business partners were already off by default in the EU under 2023-09-29.
    assert policy.default_since("business_partners", "FR", now) is old
