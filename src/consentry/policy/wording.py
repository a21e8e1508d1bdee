"""Plain-English wording of policy parts, shared by `diff_versions`, the CLI and the web pages."""

from __future__ import annotations

from decimal import Decimal

from consentry.policy.model import Choice, Purpose, RetentionRule, ScrapingTerms
from consentry.policy.regions import expand_region, region_name

__all__ = [
    "CATEGORY_NOUNS",
    "describe_amount",
    "describe_choice",
    "describe_purpose",
    "describe_retention",
    "describe_scraping",
    "format_money",
    "join_regions",
    "join_words",
    "retention_limit",
    "scraping_terms",
]

CATEGORY_NOUNS: dict[str, tuple[str, bool]] = {
    "posts": ("Posts", True),
    "profile": ("Profile data", False),
    "consent_evidence": ("Consent records", True),
    "access_events": ("Access logs", True),
    "deliveries": ("Delivery records", True),
    "audit": ("The audit log", False),
}
"""Retention category -> (noun for a sentence, whether it is plural)."""

_MILLION_UNITS = {
    "pro_rata": "1,000,000 posts",
    "per_full_million": "complete 1,000,000 posts",
    "per_started_million": "1,000,000 posts or part of it",
}


def describe_choice(choice: Choice) -> str:
    """`on` for allow, `off` for deny (how a settings page says it)."""
    return "on" if choice is Choice.ALLOW else "off"


def join_words(words: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def join_regions(codes: list[str]) -> str:
    """Region names joined: `the EU, EEA and UK`, `Germany and France`."""
    names = [region_name(c) for c in codes]
    if len(names) > 1 and all(n.startswith("the ") for n in names):
        return "the " + join_words([n.removeprefix("the ") for n in names])
    return join_words(names)


def _age_exclusions(purpose: Purpose) -> str | None:
    who = [
        label
        for label, choice in (
            ("minors", purpose.minors),
            ("people whose age is unknown", purpose.unknown_age),
        )
        if choice is Choice.DENY
    ]
    return f"always off for {join_words(who)}" if who else None


def describe_purpose(purpose: Purpose) -> str:
    """How a purpose applies, e.g. `on by default; off by default for people in the EU; …`.

    1. The default, as on/off.
    2. Region entries grouped by choice; an entry equal to the default and covered by no
       other entry is left out (it changes nothing).
    3. Age rules (`minors`, `unknown_age` deny), then whether a GPC signal turns it off.
    """
    parts = [f"{describe_choice(purpose.default)} by default"]
    keys = list(purpose.region_defaults)
    for choice in (Choice.ALLOW, Choice.DENY):
        shown = [
            k
            for k in keys
            if purpose.region_defaults[k] is choice
            and (
                choice is not purpose.default
                or any(o != k and expand_region(k) <= expand_region(o) for o in keys)
            )
        ]
        if shown:
            parts.append(
                f"{describe_choice(choice)} by default for people in {join_regions(shown)}"
            )
    ages = _age_exclusions(purpose)
    if ages:
        parts.append(ages)
    if purpose.gpc:
        parts.append("a Global Privacy Control signal turns it off")
    return "; ".join(parts)


def _conditions(rule: RetentionRule) -> list[str]:
    conditions = []
    if rule.max_age is not None:
        conditions.append(f"at most {rule.max_age.describe()}")
    grace = rule.account_grace
    if grace is not None:
        conditions.append(
            "while the account is active"
            + ("" if grace.is_zero else f" and for {grace.describe()} after it is deleted")
        )
    if rule.after_post_deleted is not None:
        post = rule.after_post_deleted
        conditions.append(
            "until the post is deleted"
            if post.is_zero
            else f"until {post.describe()} after the post is deleted"
        )
    return conditions


def describe_retention(rule: RetentionRule) -> str:
    """`kept at most 18 months`, `kept while the account is active, then anonymised (…)`."""
    text = "kept " + " or ".join(_conditions(rule))
    if rule.action == "anonymise":
        text += f", then anonymised ({', '.join(rule.fields)})"
    return text


def retention_limit(rule: RetentionRule) -> str:
    """The rule as a limit that can end: `limited to 18 months`, else as `describe_retention`."""
    if rule.triggers == ("max_age",) and rule.max_age is not None and rule.action == "delete":
        return f"limited to {rule.max_age.describe()}"
    return describe_retention(rule)


def describe_amount(amount: Decimal) -> str:
    """`15,000` for whole amounts, `15,000.50` otherwise."""
    return f"{amount:,.0f}" if amount == amount.to_integral_value() else f"{amount:,.2f}"


def format_money(amount: Decimal | int | str, currency: str) -> str:
    """Money as the policy writes prices: the ISO 4217 code, then the amount with thousands
    separators and cents (`USD 70,500.00`). The one money format of pages, reports, the CLI
    and evidence packs."""
    return f"{currency} {Decimal(str(amount)):,.2f}"


def scraping_terms(terms: ScrapingTerms) -> tuple[str, str]:
    """(`more than 1,000,000 posts in any 24 hours`, `USD 15,000 per 1,000,000 posts`)."""
    return (
        f"more than {terms.threshold_posts:,} posts in any {terms.window.describe()}",
        f"{terms.currency} {describe_amount(terms.amount_per_million)} per "
        f"{_MILLION_UNITS[terms.rounding]}",
    )


def describe_scraping(terms: ScrapingTerms) -> str:
    """The clause in one sentence: `Scraping more than … in any 24 hours costs USD 15,000 per …`."""
    over, price = scraping_terms(terms)
    return f"Scraping {over} costs {price}."
