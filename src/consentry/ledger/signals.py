"""Machine-readable preference signals derived from resolved consent.

Pinned to these texts (see docs/consent.md, "Public signals", and docs/formats.md):
- IETF AIPREF vocabulary, draft-ietf-aipref-vocab-07 (19 August 2026): categories `train-ai`
  and `search` ("Usage Category Labels"); values `y`/`n` as tokens of an RFC 9651 dictionary
  ("Exemplary Serialization Format"); per category any disallow wins, else any allow, else
  unknown, which is not written ("Combining Preferences").
- IETF AIPREF attachment, draft-ietf-aipref-attach-05 (19 August 2026): the `Content-Usage`
  HTTP response field (that dictionary) and the robots.txt rule `Content-Usage: [path] prefs`,
  matched by longest path prefix like Allow/Disallow, applying only to paths that may be
  crawled.
- W3C TDMRep community-group report (final, 2024; spec/index.html of the group's repository as
  of December 2025): `tdm-reservation` 1 reserves text-and-data-mining rights, `tdm-policy` is
  the URL of a TDM Policy, an ODRL 2.2 `Offer` in JSON-LD with the `http://www.w3.org/ns/tdmrep`
  profile; both are published in `/.well-known/tdmrep.json` and as response header fields.
- Bluesky proposal 0008 "User Intents for Data Reuse": tri-state intents, each
  `{"allow": bool, "updatedAt": RFC 3339}`; an intent with no basis is left out (unknown).
- RSL 1.0 (`application/rsl+xml`): `<content url server?>`, `server` naming the licence
  server (Open License Protocol) only where there is one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from xml.sax.saxutils import escape, quoteattr

from consentry.ledger.rules import ConsentDecision
from consentry.policy import AIPREF_CATEGORIES, Choice, Duration, PolicyVersion

__all__ = [
    "AI_REFUSED_ROBOTS",
    "SITE_DEFAULT_PREFERENCES",
    "TDM_POLICY_PATH",
    "AiprefValue",
    "AuthorSignals",
    "PurposeState",
    "aipref_header",
    "aipref_preferences",
    "answer_lifetimes",
    "author_header_fields",
    "author_signals",
    "bluesky_intents",
    "cache_max_age",
    "gpc_document",
    "meta_tags",
    "reuse_seconds",
    "robots_txt",
    "rsl_license",
    "signals_etag",
    "site_default_signals",
    "tdm_policy",
    "tdmrep_document",
    "tdmrep_reservation",
]

TDM_POLICY_PATH = "/policies/tdm.json"
"""Where the TDMRep policy (`tdm_policy`) is served; `tdm-policy` values point here."""

AiprefValue = Literal["y", "n"]

SITE_DEFAULT_PREFERENCES: dict[str, AiprefValue] = {"train-ai": "n", "search": "y"}
"""What the site as a whole states for every crawlable path (the robots.txt rule): crawlers
are not licensees, so no AI training; search is welcome. Also what an author the ledger
does not know gets (`site_default_signals`)."""

AI_REFUSED_ROBOTS = "noai, noimageai"
"""The `X-Robots-Tag` value (and robots meta content) where AI training is refused: the
directives crawler tools such as Spawning's `datadiligence` honour (they ignore
`Content-Usage`)."""


@dataclass(frozen=True, slots=True)
class PurposeState:
    """One purpose's resolved decision for an author, with the AIPREF categories it maps to."""

    purpose: str
    decision: Choice
    aipref: tuple[str, ...]
    since: datetime | None


def aipref_preferences(states: Iterable[PurposeState]) -> dict[str, AiprefValue]:
    """Category -> `y`/`n` for every category some purpose maps to.

    1. Each purpose contributes its decision to each AIPREF category it lists.
    2. Per category: any deny gives `n`; else any allow gives `y`.
    3. A category no purpose maps to is unknown and left out (AIPREF has no default).
    """
    votes: dict[str, set[Choice]] = {}
    for state in states:
        for category in state.aipref:
            votes.setdefault(category, set()).add(state.decision)
    return {
        category: ("n" if Choice.DENY in votes[category] else "y")
        for category in AIPREF_CATEGORIES
        if category in votes
    }


def aipref_header(preferences: dict[str, AiprefValue]) -> str:
    """The RFC 9651 dictionary for `Content-Usage`, e.g. `train-ai=n, search=y`."""
    return ", ".join(f"{category}={value}" for category, value in preferences.items())


def bluesky_intents(states: Sequence[PurposeState]) -> dict[str, Any]:
    """A Bluesky-style intents declaration (proposal 0008) derived from `train-ai` consent.

    1. `syntheticContentGeneration` and `bulkDataset` follow the `train-ai` preference:
       licensed datasets are exactly how third parties train generative models.
    2. `publicAccessArchive` and `protocolBridging` concern no purpose of the policy and are
       left out (unknown), as the proposal allows.
    3. `updatedAt` is the latest `since` among the purposes that decided `train-ai`.
    """
    preferences = aipref_preferences(states)
    intents: dict[str, Any] = {}
    value = preferences.get("train-ai")
    if value is not None:
        relevant = [s.since for s in states if "train-ai" in s.aipref and s.since is not None]
        updated = max(relevant) if relevant else None
        entry: dict[str, Any] = {"allow": value == "y"}
        if updated is not None:
            entry["updatedAt"] = updated.astimezone(UTC).isoformat().replace("+00:00", "Z")
        intents["syntheticContentGeneration"] = dict(entry)
        intents["bulkDataset"] = dict(entry)
    return intents


def tdmrep_reservation(preferences: dict[str, AiprefValue]) -> int:
    """1 (rights reserved) unless `train-ai` is explicitly allowed."""
    return 0 if preferences.get("train-ai") == "y" else 1


def robots_txt(base_url: str, version: PolicyVersion | None) -> str:
    """robots.txt with AIPREF `Content-Usage` rules and the RSL licence pointer.

    1. Crawlers are not licensees: posts may be used for AI training only through a licensed
       delivery that honours each author's choice, so the rule for every crawlable path
       (`/`) disallows `train-ai` and allows `search`.
    2. Every `Content-Usage` rule names its path (draft-ietf-aipref-attach-05 lets it be
       absent; written out, the longest-prefix match reads the same to every parser).
       `/settings/` is disallowed and carries no rule: preferences apply only to paths that
       may be crawled.
    3. `License:` points at /license.xml (RSL discovery); the policy version is noted.
    4. `Disallow` comes before `Allow`, so first-match parsers read it as RFC 9309 does.
    """
    lines = [
        "# Consentry: AI training on this platform's posts happens only through licensed,",
        "# consent-filtered deliveries. See /license.xml and /.well-known/tdmrep.json.",
    ]
    if version is not None:
        lines.append(f"# Policy version in force: {version.version}")
    lines += [
        "User-Agent: *",
        # Disallow first: RFC 9309 parsers pick the longest match whatever the order, but
        # first-match parsers (Python's urllib.robotparser) would let `Allow: /` win.
        "Disallow: /settings/",
        "Allow: /",
        f"Content-Usage: / {aipref_header(SITE_DEFAULT_PREFERENCES)}",
        "",
        f"License: {base_url.rstrip('/')}/license.xml",
        "",
    ]
    return "\n".join(lines)


def tdmrep_document(base_url: str) -> list[dict[str, Any]]:
    """`/.well-known/tdmrep.json`: every path (`/`) reserved, the TDM Policy at
    `TDM_POLICY_PATH` (an ODRL policy, not the RSL document: TDMRep reads only those)."""
    return [
        {
            "location": "/",
            "tdm-reservation": 1,
            "tdm-policy": f"{base_url.rstrip('/')}{TDM_POLICY_PATH}",
        }
    ]


def tdm_policy(base_url: str) -> dict[str, Any]:
    """The TDMRep TDM Policy: an ODRL 2.2 `Offer` in JSON-LD with the TDMRep profile.

    1. `@context` is the ODRL and TDMRep contexts, `@type` `Offer`, `profile`
       `http://www.w3.org/ns/tdmrep`, `uid` the URL it is served at.
    2. The assigner is the platform (`uid` its base URL, `vcard:hasURL` the human-readable
       policy page that says how to become a licensee).
    3. One permission: `tdm:mine` on the whole site, with the duties to obtain consent (a
       licence) and to compensate (its fee): mining happens only through licensed,
       consent-filtered deliveries.
    """
    base = base_url.rstrip("/")
    return {
        "@context": ["http://www.w3.org/ns/odrl.jsonld", "http://www.w3.org/ns/tdmrep.jsonld"],
        "@type": "Offer",
        "profile": "http://www.w3.org/ns/tdmrep",
        "uid": f"{base}{TDM_POLICY_PATH}",
        "assigner": {"uid": base, "vcard:hasURL": f"{base}/policy"},
        "permission": [
            {
                "target": f"{base}/",
                "action": "tdm:mine",
                "duty": [{"action": "obtainConsent"}, {"action": "compensate"}],
            }
        ],
    }


def gpc_document(last_update: datetime) -> dict[str, Any]:
    """`/.well-known/gpc.json`: this site honours Global Privacy Control."""
    return {"gpc": True, "lastUpdate": last_update.date().isoformat()}


def rsl_license(base_url: str, version: PolicyVersion | None, *, server: str | None = None) -> str:
    """RSL 1.0 document describing the AI-training licence terms.

    1. Content: every post on the platform (`<content url="/">`); `server="…"` names the
       RSL licence server only when the platform runs one (`server`, from
       `CONSENTRY_LICENSE_SERVER`): without one there is nothing to obtain a token from.
    2. AI training (`ai-train`) is permitted only to licensees, under a `training` payment
       with terms negotiated per licence; authors' opt-outs are honoured before delivery.
    3. With the policy's scraping clause, a second licence states the liquidated damages for
       unlicensed bulk access (`crawl` payment: amount per 1,000,000 posts).
    """
    base = base_url.rstrip("/")
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<rsl xmlns="https://rslstandard.org/rsl">',
        f"  <content url={quoteattr(base + '/')}"
        + (f" server={quoteattr(server)}" if server else "")
        + ">",
        "    <license>",
        '      <permits type="usage">ai-train</permits>',
        '      <prohibits type="usage">ai-input</prohibits>',
        '      <payment type="training">',
        f"        <standard>{escape(base)}/policy</standard>",
        "      </payment>",
        "    </license>",
    ]
    if version is not None and version.scraping is not None:
        terms = version.scraping
        parts += [
            f"    <!-- Liquidated damages: {escape(terms.currency)} {terms.amount_per_million} per "
            f"1,000,000 posts for accessing more than {terms.threshold_posts:,} posts in any "
            f"{escape(terms.window.describe())}. -->",
            "    <license>",
            '      <prohibits type="usage">ai-all</prohibits>',
            '      <payment type="crawl">',
            f"        <amount currency={quoteattr(terms.currency)}>"
            f"{terms.amount_per_million}</amount>",
            f"        <custom>{escape(base)}/policy</custom>",
            "      </payment>",
            "    </license>",
        ]
    parts += ["  </content>", "</rsl>", ""]
    return "\n".join(parts)


@dataclass(frozen=True, slots=True)
class AuthorSignals:
    """Everything an author's resolved consent says to machines."""

    content_usage: str
    aipref: dict[str, AiprefValue]
    intents: dict[str, Any]
    tdm_reservation: int


def author_signals(
    version: PolicyVersion | None, decisions: Sequence[ConsentDecision]
) -> AuthorSignals:
    """Derive the AIPREF, intents and TDMRep signals from one author's decisions.

    1. Each decision is paired with the AIPREF categories its purpose maps to in `version`
       (the version in force at the instant the decisions were made for).
    2. The signals follow from those pairs (see the functions above).
    """
    states = []
    for d in decisions:
        purpose = version.purpose(d.purpose) if version else None
        states.append(
            PurposeState(
                purpose=d.purpose,
                decision=d.decision,
                aipref=tuple(purpose.aipref) if purpose else (),
                since=d.since,
            )
        )
    preferences = aipref_preferences(states)
    return AuthorSignals(
        content_usage=aipref_header(preferences),
        aipref=preferences,
        intents=bluesky_intents(states),
        tdm_reservation=tdmrep_reservation(preferences),
    )


def author_header_fields(signals: AuthorSignals, base_url: str) -> list[tuple[str, str]]:
    """The response header fields for content by one author.

    1. `Content-Usage`: the author's AIPREF dictionary (draft-ietf-aipref-attach-05), when
       any category is known.
    2. Where the author's rights are reserved (`tdm_reservation` 1): `tdm-reservation: 1`
       and `tdm-policy: <the TDM Policy's URL>` (TDMRep "TDM Header Field"); a header
       overrides `/.well-known/tdmrep.json`, so none is sent for an author who allowed
       training: the site-wide reservation stands for them (crawlers are not licensees).
    3. Where rights are reserved, also `X-Robots-Tag: noai, noimageai` (`AI_REFUSED_ROBOTS`):
       crawler tools that read neither AIPREF nor TDMRep read this one.
    """
    fields = [("content-usage", signals.content_usage)] if signals.content_usage else []
    if signals.tdm_reservation == 1:
        fields += [
            ("tdm-reservation", "1"),
            ("tdm-policy", f"{base_url.rstrip('/')}{TDM_POLICY_PATH}"),
            ("x-robots-tag", AI_REFUSED_ROBOTS),
        ]
    return fields


def site_default_signals() -> AuthorSignals:
    """The signals of an author the ledger does not know: the site's own statement.

    1. AIPREF: `SITE_DEFAULT_PREFERENCES`, the robots.txt rule for every crawlable path.
    2. TDMRep: rights reserved, as `/.well-known/tdmrep.json` says for every path.
    3. No intents: there is no author's choice to describe.
    Restating the site-wide default is no guess about the stranger: it is what a crawler
    already reads in robots.txt and tdmrep.json, now on the page itself.
    """
    preferences = dict(SITE_DEFAULT_PREFERENCES)
    return AuthorSignals(
        content_usage=aipref_header(preferences),
        aipref=preferences,
        intents={},
        tdm_reservation=tdmrep_reservation(preferences),
    )


_META_NAMES = {
    "x-robots-tag": "robots",
    "tdm-reservation": "tdm-reservation",
    "tdm-policy": "tdm-policy",
}
"""Header field -> the HTML meta name that carries the same statement (`Content-Usage` has
no HTML form in draft-ietf-aipref-attach-05)."""


def meta_tags(fields: Sequence[tuple[str, str]]) -> str:
    """The HTML `<meta>` elements stating the same as the header `fields`, one per line.

    1. `x-robots-tag` becomes `<meta name="robots" content="noai, noimageai">`.
    2. `tdm-reservation` and `tdm-policy` keep their names (TDMRep "HTML meta").
    3. `content-usage` has no meta form and is left out; no field, no element ("").
    """
    lines = []
    for name, value in fields:
        meta = _META_NAMES.get(name)
        if meta is not None:
            lines.append(f"<meta name={quoteattr(meta)} content={quoteattr(value)}>")
    return "".join(f"{line}\n" for line in lines)


def signals_etag(fields: Sequence[tuple[str, str]], representation: str) -> str:
    """A strong entity tag for a representation of the header `fields`.

    1. The representation (`json`, `html`) and each field's name and value, separated by
       bytes no field holds (0x00, 0x01), are hashed with SHA-256.
    2. The first 16 bytes, hex, in double quotes: equal fields give equal tags, and a body
       that is a function of the fields (every public signals body is) changes only with them.
    """
    digest = hashlib.sha256(representation.encode("ascii"))
    for name, value in fields:
        digest.update(b"\x00" + name.encode("ascii") + b"\x01" + value.encode("utf-8"))
    return f'"{digest.hexdigest()[:32]}"'


def cache_max_age(configured_seconds: int, revocation_sla: Duration, now: datetime) -> int:
    """How long a cache may keep an answer about an author's preferences, in seconds.

    1. The revocation SLA in force now, as seconds from `now` (calendar months counted on
       the calendar): an opt-out must reach everyone within it, so a cached "allowed" may
       not live longer.
    2. The smaller of that and `configured_seconds` (`CONSENTRY_SIGNALS_MAX_AGE`), never
       below 0.
    """
    return _max_age(configured_seconds, _sla_seconds(revocation_sla, now))


def _sla_seconds(revocation_sla: Duration, now: datetime) -> float:
    """The revocation SLA from `now`, in seconds (calendar months counted on the calendar)."""
    return (revocation_sla.add_to(now) - now.astimezone(UTC)).total_seconds()


def _max_age(configured_seconds: int, sla_seconds: float) -> int:
    return max(0, min(configured_seconds, int(sla_seconds)))


def _reuse(bound_ms: int, max_age: int, sla_seconds: float) -> float:
    return max(0.0, min(bound_ms / 1000, float(max_age), sla_seconds - max_age))


def reuse_seconds(bound_ms: int, max_age: int, revocation_sla: Duration, now: datetime) -> float:
    """How long the serving process may reuse an answer about an author's preferences, in
    seconds (its in-process cache: it answers again without reading the ledger).

    1. At most `bound_ms` milliseconds (`CONSENTRY_SIGNALS_CACHE_MS`).
    2. At most `max_age`, the answer's own `Cache-Control: max-age` (`cache_max_age`): the
       process keeps an answer no longer than it already lets any cache in front keep it.
    3. At most the revocation SLA from `now` minus `max_age`: a cache in front may keep
       for `max_age` more what the process reused, and the two together must still end
       by the SLA, so a cached "allowed" never outlives an opt-out's deadline.
    4. Never below 0 (0: no reuse, every answer is read from the ledger).
    """
    return _reuse(bound_ms, max_age, _sla_seconds(revocation_sla, now))


def answer_lifetimes(
    configured_seconds: int, bound_ms: int, revocation_sla: Duration, now: datetime
) -> tuple[int, float]:
    """`cache_max_age` and then `reuse_seconds` with it, for the same instant: the answer's
    max-age and how long the process may reuse it (the SLA counted from `now` once)."""
    sla_seconds = _sla_seconds(revocation_sla, now)
    max_age = _max_age(configured_seconds, sla_seconds)
    return max_age, _reuse(bound_ms, max_age, sla_seconds)
