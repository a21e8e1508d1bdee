"""diff_versions: plain-English sentences for every kind of change."""

from __future__ import annotations

from decimal import Decimal

from consentry.policy import (
    Choice,
    Duration,
    PolicyVersion,
    RetentionRule,
    diff_versions,
    load_policy,
)
from consentry.policy.loader import default_policy_path


def _shipped() -> tuple[PolicyVersion, PolicyVersion]:
    old, new = load_policy(default_policy_path()).versions
    return old, new


def test_shipped_file_sentences() -> None:
    old, new = _shipped()
    changes = diff_versions(old, new)
    assert [(c.kind, c.subject, c.sentence) for c in changes] == [
        (
            "purpose_added",
            "ai_training_third_party",
            "New purpose: Third-party AI training — on by default; off by default for people "
            "in the EU, EEA and UK; always off for minors; a Global Privacy Control signal "
            "turns it off.",
        ),
        (
            "purpose_changed",
            "ai_training_first_party",
            "Grok and X's own AI training is now off by default for people in the EU, EEA and UK.",
        ),
        (
            "retention_added",
            "posts",
            "Posts are now kept while the account is active or until the post is deleted.",
        ),
        (
            "retention_changed",
            "profile",
            "Profile data is no longer limited to 18 months; it is now kept while the account "
            "is active.",
        ),
        (
            "retention_added",
            "consent_evidence",
            "Consent records are now kept while the account is active and for 6 years after "
            "it is deleted.",
        ),
        (
            "retention_added",
            "access_events",
            "Access logs are now kept at most 2 years, then anonymised (credential).",
        ),
        ("retention_added", "deliveries", "Delivery records are now kept at most 6 years."),
        ("retention_added", "audit", "The audit log is now kept at most 10 years."),
        (
            "scraping_added",
            "scraping",
            "Scraping more than 1,000,000 posts in any 24 hours now costs USD 15,000 per "
            "1,000,000 posts.",
        ),
    ]


def test_backwards_diff_and_identity() -> None:
    old, new = _shipped()
    assert diff_versions(new, new) == []
    back = {c.sentence for c in diff_versions(new, old)}
    assert (
        "Purpose removed: Third-party AI training — your posts are no longer used for it." in back
    )
    assert "Scraping is no longer charged under a liquidated-damages clause." in back
    assert (
        "Profile data is no longer kept while the account is active; it is now kept at most "
        "18 months." in back
    )
    assert (
        "The policy no longer says how long delivery records are kept (before: kept at most "
        "6 years)." in back
    )


def test_purpose_field_changes() -> None:
    _, new = _shipped()
    purpose = new.purposes[0]
    changed = purpose.model_copy(
        update={
            "title": "Training by other companies",
            "default": Choice.DENY,
            "region_defaults": {"EU": Choice.DENY, "EEA": Choice.DENY, "US": Choice.ALLOW},
            "minors": Choice.ALLOW,
            "unknown_age": Choice.DENY,
            "gpc": False,
            "aipref": ["train-ai", "search"],
        }
    )
    later = new.model_copy(update={"purposes": [changed, *new.purposes[1:]]})
    sentences = [c.sentence for c in diff_versions(new, later)]
    title = "Training by other companies"
    assert sentences == [
        "“Third-party AI training” is now called “Training by other companies”.",
        f"{title} is now off by default (it was on).",
        f"{title} no longer has its own default for people in the UK.",
        f"{title} is now on by default for people in the United States.",
        f"{title} is no longer always off for minors: their choice and the defaults apply.",
        f"{title} is now always off for people whose age is unknown.",
        f"A Global Privacy Control signal no longer turns {title} off.",
        f"{title} now maps to AIPREF train-ai, search (it was train-ai).",
    ]
    assert all(c.kind == "purpose_changed" for c in diff_versions(new, later))


def test_scraping_sla_and_age_changes() -> None:
    _, new = _shipped()
    assert new.scraping is not None
    later = new.model_copy(
        update={
            "scraping": new.scraping.model_copy(
                update={
                    "threshold_posts": 500_000,
                    "amount_per_million": Decimal("20000.50"),
                    "rounding": "per_started_million",
                    "note": None,
                }
            ),
            "revocation_sla": Duration(days=14),
            "age_of_majority": 16,
            "retention": {
                **new.retention,
                "audit": RetentionRule(max_age=Duration(years=7)),
            },
        }
    )
    assert [c.sentence for c in diff_versions(new, later)] == [
        "The audit log is no longer limited to 10 years; it is now kept at most 7 years.",
        "Scraping more than 500,000 posts in any 24 hours now costs USD 20,000.50 per "
        "1,000,000 posts or part of it (before: more than 1,000,000 posts in any 24 hours "
        "cost USD 15,000 per 1,000,000 posts).",
        "The note on the scraping clause was removed.",
        "Licensees must now delete revoked posts within 14 days (it was 30 days).",
        "People under 16 now count as minors (it was under 18).",
    ]


def test_equal_durations_spelled_differently_are_no_change() -> None:
    _, new = _shipped()
    assert new.scraping is not None
    same = new.model_copy(
        update={
            "scraping": new.scraping.model_copy(update={"window": Duration(days=1)}),
            "revocation_sla": Duration(seconds=30 * 86_400),
        }
    )
    assert diff_versions(new, same) == []
