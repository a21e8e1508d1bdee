"""Records of processing activities (GDPR Art. 30), generated from the policy and licensees.

Art. 30(1) asks for: the purposes, the categories of data subjects and of personal data,
the recipients, transfers, the envisaged time limits for erasure, and a description of the
security measures. Everything here is derived from the policy version in force and the
licensee registry, so the record cannot drift from what Consentry enforces.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from consentry.delivery.licensees import LicenseeRecord
from consentry.instants import rfc3339
from consentry.policy import PolicyFile, PolicyVersion, describe_purpose, describe_retention
from consentry.policy.model import RETENTION_CATEGORIES
from consentry.policy.regions import expand_region

__all__ = [
    "CATEGORY_DESCRIPTIONS",
    "records_of_processing",
    "render_markdown",
]

CATEGORY_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "posts": (
        "Posts users wrote: text, language, visibility and when they were published or deleted.",
        "platform users (authors)",
    ),
    "profile": (
        "Account data: region, birth date, when the account was made, deactivated or deleted.",
        "platform users",
    ),
    "consent_evidence": (
        "Every consent choice with its evidence: purpose, choice, instant, how it was made and "
        "the policy version shown.",
        "platform users",
    ),
    "access_events": (
        "Requests that served posts: the credential (API key, account id or IP address), the "
        "endpoint, the instant and the number of posts.",
        "API clients, scrapers and the people behind their credentials",
    ),
    "deliveries": (
        "Delivered copies of posts (pseudonymised authors, minimised texts) and the private "
        "lineage of which post went to which licensee.",
        "platform users (authors)",
    ),
    "audit": (
        "The audit log: pseudonymous references, counts, hashes and instants of every change.",
        "platform users (pseudonymous), licensees",
    ),
}
"""Category -> (what data it is, whose data it is)."""

_SECURITY = [
    "Deliveries carry no user ids: authors and posts are replaced by keyed pseudonyms "
    "(HMAC-SHA256) under a secret per licensee, sealed with AES-256-GCM under the master key.",
    "Identifiers in delivered texts are minimised (URLs, handles, e-mail addresses, card "
    "numbers, IP addresses, phone numbers) as each licence states.",
    "Delivery manifests are signed with Ed25519; every file is listed with its SHA-256.",
    "Every change is recorded in an append-only audit log that holds no personal data.",
    "Legal holds keep data needed for legal claims; retention purges are planned, applied and "
    "verified by re-querying every store.",
]


def _regions(codes: Sequence[str]) -> list[str]:
    return sorted({c for code in codes for c in expand_region(code)})


def records_of_processing(
    policy: PolicyFile,
    version: PolicyVersion,
    licensees: Sequence[LicenseeRecord],
    *,
    at: datetime,
) -> dict[str, Any]:
    """The Art. 30 record at `at` as plain data (JSON-ready).

    1. Purposes are the version's purposes, each with its default in words and the
       licensees (recipients) that receive data for it.
    2. Data categories are the retention categories, with whose data they are and the time
       limit for erasure from the version's rule — a category without a rule is a stated gap.
    3. Recipients are the licensees active at `at`; transfers list the regions whose users'
       data each may receive (Consentry does not record where a licensee is established).
    """
    active = [
        r for r in licensees if r.created_at <= at and (r.disabled_at is None or r.disabled_at > at)
    ]
    purposes = [
        {
            "key": p.key,
            "title": p.title,
            "description": p.description,
            "default": describe_purpose(p),
            "recipients": [r.name for r in active if r.purpose == p.key],
        }
        for p in version.purposes
    ]
    categories = []
    for category in RETENTION_CATEGORIES:
        rule = version.retention.get(category)
        what, whose = CATEGORY_DESCRIPTIONS[category]
        categories.append(
            {
                "category": category,
                "data": what,
                "subjects": whose,
                "time_limit": describe_retention(rule) if rule else None,
                "gap": rule is None,
            }
        )
    recipients = [
        {
            "name": r.name,
            "purpose": r.purpose,
            "regions": list(r.regions) or ["everywhere"],
            "exclude_regions": list(r.exclude_regions),
            "languages": list(r.languages) or ["all"],
            "since": rfc3339(r.created_at),
        }
        for r in active
    ]
    transfers = [
        {
            "recipient": r.name,
            "users_in": _regions(r.regions) if r.regions else ["every region"],
            "excluding": _regions(r.exclude_regions),
            "note": "the licensee's own establishment is not recorded by Consentry",
        }
        for r in active
    ]
    return {
        "title": "Records of processing activities (GDPR Art. 30)",
        "controller": policy.platform or "the platform",
        "at": rfc3339(at),
        "policy": {
            "file": policy.source,
            "version": version.version,
            "effective_from": rfc3339(version.effective_from),
            "content_sha256": policy.content_sha256,
        },
        "purposes": purposes,
        "data_subjects": sorted({c["subjects"] for c in categories}),
        "data_categories": categories,
        "recipients": recipients,
        "transfers": transfers,
        "time_limits": {
            c["category"]: c["time_limit"] or "no time limit stated (gap)" for c in categories
        },
        "security_measures": _SECURITY,
    }


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(record: dict[str, Any]) -> str:
    """The record as Markdown (one section per Art. 30(1) item)."""
    policy = record["policy"]
    lines = [
        f"# {record['title']}",
        "",
        f"Controller: {record['controller']}. Generated for {record['at']} from policy version "
        f"`{policy['version']}` (in force from {policy['effective_from']}, file sha256 "
        f"`{policy['content_sha256'][:16]}…`).",
        "",
        "## Purposes",
        "",
        "| purpose | what it means | default | recipients |",
        "|---|---|---|---|",
    ]
    for p in record["purposes"]:
        lines.append(
            f"| {_md_cell(p['title'])} (`{p['key']}`) | {_md_cell(p['description'])} | "
            f"{_md_cell(p['default'])} | {', '.join(p['recipients']) or 'none'} |"
        )
    lines += ["", "## Categories of data subjects", ""]
    lines += [f"- {s}" for s in record["data_subjects"]]
    lines += [
        "",
        "## Categories of personal data and time limits for erasure",
        "",
        "| category | data | subjects | time limit |",
        "|---|---|---|---|",
    ]
    for c in record["data_categories"]:
        limit = c["time_limit"] or "**gap: no time limit stated**"
        lines.append(f"| `{c['category']}` | {_md_cell(c['data'])} | {c['subjects']} | {limit} |")
    lines += ["", "## Recipients", ""]
    if record["recipients"]:
        lines += ["| licensee | purpose | regions | languages | since |", "|---|---|---|---|---|"]
        for r in record["recipients"]:
            regions = ", ".join(r["regions"]) + (
                f" except {', '.join(r['exclude_regions'])}" if r["exclude_regions"] else ""
            )
            lines.append(
                f"| {r['name']} | `{r['purpose']}` | {regions} | {', '.join(r['languages'])} | "
                f"{r['since']} |"
            )
    else:
        lines.append("No licensee receives data.")
    lines += ["", "## Transfers", ""]
    if record["transfers"]:
        for t in record["transfers"]:
            excluding = f" (excluding {', '.join(t['excluding'])})" if t["excluding"] else ""
            lines.append(
                f"- {t['recipient']}: data of users in {', '.join(t['users_in'])}{excluding}; "
                f"{t['note']}."
            )
    else:
        lines.append("None.")
    lines += ["", "## Security measures", ""]
    lines += [f"- {m}" for m in record["security_measures"]]
    return "\n".join(lines) + "\n"
