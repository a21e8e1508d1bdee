"""What changed between two policy versions, as sentences a user understands."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from consentry.policy.model import (
    RETENTION_CATEGORIES,
    Choice,
    PolicyVersion,
    Purpose,
    RetentionRule,
    ScrapingTerms,
)
from consentry.policy.wording import (
    CATEGORY_NOUNS,
    describe_choice,
    describe_purpose,
    describe_retention,
    join_regions,
    retention_limit,
    scraping_terms,
)

__all__ = ["ChangeKind", "PolicyChange", "diff_versions"]

ChangeKind = Literal[
    "purpose_added",
    "purpose_removed",
    "purpose_changed",
    "retention_added",
    "retention_removed",
    "retention_changed",
    "scraping_added",
    "scraping_removed",
    "scraping_changed",
    "revocation_sla_changed",
    "age_of_majority_changed",
]


class PolicyChange(BaseModel):
    """One difference between two versions."""

    model_config = ConfigDict(frozen=True)

    kind: ChangeKind
    subject: str
    """The purpose key, retention category, `scraping`, `revocation_sla` or `age_of_majority`."""
    sentence: str
    """The change in plain English, for people who are not lawyers."""


def diff_versions(old: PolicyVersion, new: PolicyVersion) -> list[PolicyChange]:
    """Every user-visible difference from `old` to `new`, in a stable order.

    1. Purposes, matched by key: added and changed in `new`'s order, then removed ones.
    2. Retention rules per category, in category order.
    3. The scraping clause, then the revocation SLA, then the age of majority.
    Identical versions give an empty list; the function reads nothing else.
    """
    changes: list[PolicyChange] = []
    for purpose in new.purposes:
        before = old.purpose(purpose.key)
        if before is None:
            changes.append(
                PolicyChange(
                    kind="purpose_added",
                    subject=purpose.key,
                    sentence=f"New purpose: {purpose.title} — {describe_purpose(purpose)}.",
                )
            )
        else:
            changes.extend(_purpose_changes(before, purpose))
    changes.extend(
        PolicyChange(
            kind="purpose_removed",
            subject=p.key,
            sentence=f"Purpose removed: {p.title} — your posts are no longer used for it.",
        )
        for p in old.purposes
        if new.purpose(p.key) is None
    )
    for category in RETENTION_CATEGORIES:
        change = _retention_change(
            category, old.retention.get(category), new.retention.get(category)
        )
        if change is not None:
            changes.append(change)
    changes.extend(_scraping_changes(old.scraping, new.scraping))
    if old.revocation_sla != new.revocation_sla:
        changes.append(
            PolicyChange(
                kind="revocation_sla_changed",
                subject="revocation_sla",
                sentence=f"Licensees must now delete revoked posts within "
                f"{new.revocation_sla.describe()} (it was {old.revocation_sla.describe()}).",
            )
        )
    if old.age_of_majority != new.age_of_majority:
        changes.append(
            PolicyChange(
                kind="age_of_majority_changed",
                subject="age_of_majority",
                sentence=f"People under {new.age_of_majority} now count as minors "
                f"(it was under {old.age_of_majority}).",
            )
        )
    return changes


def _on_off(choice: Choice) -> str:
    return f"{describe_choice(choice)} by default"


def _purpose_changes(old: Purpose, new: Purpose) -> list[PolicyChange]:
    title = new.title
    sentences: list[str] = []
    if old.title != new.title:
        sentences.append(f"“{old.title}” is now called “{new.title}”.")
    if old.description != new.description:
        sentences.append(f"{title}: the description now reads “{new.description}”")
    if old.default is not new.default:
        sentences.append(
            f"{title} is now {_on_off(new.default)} (it was {describe_choice(old.default)})."
        )
    sentences.extend(_region_sentences(title, old.region_defaults, new.region_defaults))
    for field, who in (("minors", "minors"), ("unknown_age", "people whose age is unknown")):
        was_choice, now_choice = getattr(old, field), getattr(new, field)
        if was_choice is now_choice:
            continue
        if now_choice is Choice.DENY:
            sentences.append(f"{title} is now always off for {who}.")
        else:
            sentences.append(
                f"{title} is no longer always off for {who}: their choice and the defaults apply."
            )
    if old.gpc != new.gpc:
        sentences.append(
            f"A Global Privacy Control signal {'now' if new.gpc else 'no longer'} "
            f"turns {title} off."
        )
    if old.aipref != new.aipref:
        now_cats = ", ".join(new.aipref) or "no categories"
        was_cats = ", ".join(old.aipref) or "none"
        sentences.append(f"{title} now maps to AIPREF {now_cats} (it was {was_cats}).")
    return [PolicyChange(kind="purpose_changed", subject=new.key, sentence=s) for s in sentences]


def _region_sentences(title: str, old: dict[str, Choice], new: dict[str, Choice]) -> list[str]:
    """Region entries added, changed or dropped; codes with the same change share a sentence."""
    groups: dict[tuple[Choice | None, Choice | None], list[str]] = {}
    for code in dict.fromkeys([*old, *new]):
        was, now = old.get(code), new.get(code)
        if was is not now:
            groups.setdefault((was, now), []).append(code)
    sentences = []
    for (was, now), codes in groups.items():
        where = f"for people in {join_regions(codes)}"
        if now is None:
            sentences.append(f"{title} no longer has its own default {where}.")
        elif was is None:
            sentences.append(f"{title} is now {_on_off(now)} {where}.")
        else:
            sentences.append(
                f"{title} is now {_on_off(now)} {where} (it was {describe_choice(was)})."
            )
    return sentences


def _retention_change(
    category: str, old: RetentionRule | None, new: RetentionRule | None
) -> PolicyChange | None:
    noun, plural = CATEGORY_NOUNS[category]
    verb = "are" if plural else "is"
    if old == new:
        return None
    if old is None and new is not None:
        return PolicyChange(
            kind="retention_added",
            subject=category,
            sentence=f"{noun} {verb} now {describe_retention(new)}.",
        )
    if new is None and old is not None:
        return PolicyChange(
            kind="retention_removed",
            subject=category,
            sentence=f"The policy no longer says how long {noun.lower()} {verb} kept "
            f"(before: {describe_retention(old)}).",
        )
    assert old is not None
    assert new is not None
    pronoun = "they are" if plural else "it is"
    return PolicyChange(
        kind="retention_changed",
        subject=category,
        sentence=f"{noun} {verb} no longer {retention_limit(old)}; "
        f"{pronoun} now {describe_retention(new)}.",
    )


def _scraping_changes(old: ScrapingTerms | None, new: ScrapingTerms | None) -> list[PolicyChange]:
    if old == new:
        return []
    if new is None:
        return [
            PolicyChange(
                kind="scraping_removed",
                subject="scraping",
                sentence="Scraping is no longer charged under a liquidated-damages clause.",
            )
        ]
    over, price = scraping_terms(new)
    if old is None:
        return [
            PolicyChange(
                kind="scraping_added",
                subject="scraping",
                sentence=f"Scraping {over} now costs {price}.",
            )
        ]
    changes = []
    if scraping_terms(old) != (over, price):
        old_over, old_price = scraping_terms(old)
        changes.append(
            PolicyChange(
                kind="scraping_changed",
                subject="scraping",
                sentence=f"Scraping {over} now costs {price} "
                f"(before: {old_over} cost {old_price}).",
            )
        )
    if old.note != new.note:
        changes.append(
            PolicyChange(
                kind="scraping_changed",
                subject="scraping",
                sentence=f"The note on the scraping clause now reads: {new.note}"
                if new.note
                else "The note on the scraping clause was removed.",
            )
        )
    return changes
