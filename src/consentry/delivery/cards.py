"""What a delivery says about itself to ML tooling: a Hugging Face dataset card and Croissant.

Pinned to these texts (docs/formats.md):
- Hugging Face dataset cards: `README.md` with YAML front matter (`license`, `license_name`,
  `license_link`, `pretty_name`, `language`, `size_categories`, `configs` with `data_files`),
  read by `datasets.load_dataset(<directory>)` and the Hub.
- MLCommons Croissant 1.1 (`conformsTo` http://mlcommons.org/croissant/1.1) with the
  Croissant RAI vocabulary (`rai:` namespace, http://mlcommons.org/croissant/RAI/).

Both are pure functions of `DeliveryFacts`; the build writes them before the manifest, which
lists them with their sha256, so the signature covers them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import yaml

__all__ = [
    "CARD_FILE",
    "CROISSANT_CONTEXT",
    "CROISSANT_FILE",
    "RECORD_SET",
    "DeliveryFacts",
    "croissant",
    "croissant_bytes",
    "dataset_card",
    "size_category",
]

CARD_FILE: Final = "README.md"
CROISSANT_FILE: Final = "croissant.json"
RECORD_SET: Final = "records"
"""The Croissant RecordSet holding the delivered rows."""

CROISSANT_CONTEXT: Final[dict[str, Any]] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "arrayShape": "cr:arrayShape",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "containedIn": "cr:containedIn",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "description": {"@container": "@language"},
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isArray": "cr:isArray",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "name": {"@container": "@language"},
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
"""The Croissant 1.1 JSON-LD context, as the reference implementation writes it."""

_SIZES: Final = (
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
)
_LANGUAGE: Final = re.compile(r"[a-z]{2,3}")
_PARQUET: Final = "application/x-parquet"

_COLUMNS: Final[tuple[tuple[str, str, str], ...]] = (
    ("record_id", "sc:Text", "HMAC-SHA256 of the post id under the licensee's secret (hex)."),
    (
        "author_ref",
        "sc:Text",
        "HMAC-SHA256 of the author id under the same secret: stable within this licensee's "
        "deliveries, unlinkable across licensees.",
    ),
    ("created_at", "sc:DateTime", "When the post was made, truncated to the hour (UTC)."),
    ("lang", "sc:Text", "The post's language code."),
    ("text", "sc:Text", "The post's text with personal identifiers replaced by placeholders."),
)
_INTENTS: Final = (
    "author_intents",
    "The author's public AIPREF preferences at the cut-off (true: allowed, false: "
    "disallowed, null: unknown), one boolean per category.",
)


@dataclass(frozen=True, slots=True)
class DeliveryFacts:
    """What the card and the Croissant record say, all known when the parts are written."""

    delivery_id: str
    licensee: str
    purpose: str
    as_of: str
    created_at: str
    policy_version: str | None
    considered: int
    delivered: int
    excluded: dict[str, int]
    files: Sequence[dict[str, Any]]
    """The part files: name, rows, sha256."""
    languages: Sequence[str]
    minimised: Sequence[str]
    """The kinds of identifier replaced in texts (`url`, `email`, …)."""
    intent_categories: Sequence[str]
    """The AIPREF categories of `author_intents`, in column order."""
    revocation_sla: str
    """ISO 8601 duration a revocation must be confirmed within."""
    revocation_sla_words: str
    feed_url: str
    licence_url: str


def size_category(rows: int) -> str:
    """The Hub's `size_categories` bucket for `rows` records."""
    for limit, name in _SIZES:
        if rows < limit:
            return name
    return "n>1B"


def _languages(facts: DeliveryFacts) -> list[str]:
    return sorted({code for code in facts.languages if _LANGUAGE.fullmatch(code)})


def _exclusions(facts: DeliveryFacts) -> list[str]:
    return [f"- `{reason}`: {count:,}" for reason, count in facts.excluded.items() if count]


def dataset_card(facts: DeliveryFacts) -> str:
    """`README.md`: YAML front matter the Hub reads, then the delivery in plain words.

    1. Front matter: `license: other` with `license_name` (the licence of this licensee)
       and `license_link`; `pretty_name`; `language` (the ISO 639 codes among the rows);
       `size_categories`; one `default` config whose `train` split is `part-*.parquet`.
    2. Body: what was delivered, what was excluded and why (count per reason), the policy
       version, the minimisation and pseudonyms, and the licensee's duty to honour
       revocations (feed URL and deadline).
    """
    front: dict[str, Any] = {
        "license": "other",
        "license_name": f"consentry-licence-{facts.licensee}",
        "license_link": facts.licence_url,
        "pretty_name": f"Consentry delivery {facts.delivery_id}",
        "language": _languages(facts),
        "size_categories": [size_category(facts.delivered)],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": "train", "path": "part-*.parquet"}],
            }
        ],
        "tags": ["consentry", "consent-filtered", "pseudonymised"],
    }
    if not front["language"]:
        del front["language"]
    excluded = _exclusions(facts) or ["- none"]
    minimised = ", ".join(facts.minimised) if facts.minimised else "nothing (texts unchanged)"
    body = [
        f"# Consentry delivery {facts.delivery_id}",
        "",
        f"Posts licensed to **{facts.licensee}** for the purpose `{facts.purpose}`, as they "
        f"stood at {facts.as_of} (the cut-off), under policy version "
        f"`{facts.policy_version or 'none'}`. Built {facts.created_at}.",
        "",
        "## What was delivered",
        "",
        f"{facts.delivered:,} of the {facts.considered:,} posts considered: only public posts "
        "whose authors' consent for this purpose was `allow` at the cut-off and that fall "
        "inside the licence's scope. Columns: `record_id`, `author_ref`, `created_at`, `lang`, "
        "`text`, `author_intents` (see `croissant.json` for their types).",
        "",
        "## What was excluded, and why",
        "",
        "Each excluded post is counted under the first reason it fails:",
        "",
        *excluded,
        "",
        "## Personal data",
        "",
        "Post and author ids are replaced by keyed pseudonyms (HMAC-SHA256 under a secret of "
        "this licensee only, so they do not link across licensees). Creation times are "
        f"truncated to the hour. In texts these identifiers were replaced: {minimised}.",
        "",
        "## Your duty to honour revocations",
        "",
        "When an author later opts out or deletes a post, the record is revoked. Read the "
        f"signed revocation feed at {facts.feed_url}, delete every revoked record from all "
        "copies and models in training, and confirm with a receipt within "
        f"{facts.revocation_sla_words} ({facts.revocation_sla}) of the revocation.",
        "",
        "## Checking this delivery",
        "",
        "`manifest.json` lists every file with its SHA-256; `manifest.sig` is its Ed25519 "
        "signature and `manifest.intoto.json` a DSSE envelope of an in-toto Statement over "
        "the same files, both under keys published at `/.well-known/consentry-keys.json`.",
        "",
    ]
    header = yaml.safe_dump(front, sort_keys=False, allow_unicode=True)
    return f"---\n{header}---\n\n" + "\n".join(body)


def _field(name: str, data_type: str, description: str, source: dict[str, Any]) -> dict[str, Any]:
    return {
        "@type": "cr:Field",
        "@id": f"{RECORD_SET}/{name}",
        "name": name,
        "description": description,
        "dataType": data_type,
        "source": {**source, "extract": {"column": name}},
    }


def croissant(facts: DeliveryFacts) -> dict[str, Any]:
    """The delivery as Croissant 1.1 JSON-LD with the RAI fields Consentry can fill.

    1. One FileObject per part file (`contentUrl` its name, beside this file; sha256).
    2. One RecordSet `records` whose fields are the Parquet columns; `author_intents` has
       one boolean subfield per AIPREF category. With one part the fields read it as a
       FileObject (its sha256 is checked by every Croissant loader); with several, a
       FileSet `part-*.parquet` (the manifest's digests cover each part).
    3. RAI: data collection, personal and sensitive information (the minimisation and the
       keyed pseudonyms), the release maintenance plan (the revocation feed and its
       deadline), limitations, use cases; licence and citation.
    """
    distribution: list[dict[str, Any]] = [
        {
            "@type": "cr:FileObject",
            "@id": f["name"],
            "name": f["name"],
            "contentUrl": f["name"],
            "encodingFormat": _PARQUET,
            "sha256": f["sha256"],
        }
        for f in facts.files
    ]
    if len(facts.files) == 1:
        source: dict[str, Any] = {"fileObject": {"@id": facts.files[0]["name"]}}
    else:
        distribution.append(
            {
                "@type": "cr:FileSet",
                "@id": "parts",
                "name": "parts",
                "encodingFormat": _PARQUET,
                "includes": "part-*.parquet",
            }
        )
        source = {"fileSet": {"@id": "parts"}}
    fields = [_field(name, kind, text, source) for name, kind, text in _COLUMNS]
    intents = _field("author_intents", "sc:Boolean", _INTENTS[1], source)
    del intents["dataType"], intents["source"]
    intents["subField"] = [
        {
            "@type": "cr:Field",
            "@id": f"{RECORD_SET}/author_intents/{category}",
            "name": category,
            "dataType": "sc:Boolean",
            "source": {
                **source,
                "extract": {"column": "author_intents"},
                "transform": {"jsonPath": category},
            },
        }
        for category in facts.intent_categories
    ]
    fields.append(intents)
    minimised = ", ".join(facts.minimised) if facts.minimised else "none"
    excluded = "; ".join(f"{r}: {n}" for r, n in facts.excluded.items() if n) or "none"
    return {
        "@context": CROISSANT_CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.1",
        "name": f"consentry-{facts.delivery_id}",
        "description": (
            f"Consent-filtered, minimised, pseudonymised posts licensed to {facts.licensee} "
            f"for {facts.purpose}, as of {facts.as_of} (policy version "
            f"{facts.policy_version or 'none'}): {facts.delivered} of {facts.considered} posts "
            f"considered; excluded by first reason: {excluded}."
        ),
        "url": facts.feed_url.rsplit("/v1/", 1)[0] or facts.feed_url,
        "license": facts.licence_url,
        "version": "1.0.0",
        "datePublished": facts.created_at,
        "creator": {"@type": "sc:Organization", "name": "Consentry"},
        "citeAs": (
            f"Consentry delivery {facts.delivery_id} to {facts.licensee}, as of {facts.as_of}, "
            f"policy {facts.policy_version or 'none'}."
        ),
        "keywords": ["consent-filtered", "pseudonymised", "AIPREF"],
        "inLanguage": _languages(facts),
        "rai:dataCollection": (
            "Public posts of a social platform's users, selected at the cut-off by each "
            "author's recorded consent for the licensed purpose (consent ledger, "
            f"policy version {facts.policy_version or 'none'}), the licence's scope, and the "
            "post's and account's state (deleted, deactivated, protected posts excluded)."
        ),
        "rai:dataCollectionType": ["Secondary Data Analysis"],
        "rai:personalSensitiveInformation": (
            "Post and author ids are replaced by keyed HMAC-SHA256 pseudonyms under a secret "
            "of this licensee only (unlinkable across licensees); creation times truncated "
            f"to the hour; identifiers replaced in texts: {minimised}. Texts are "
            "user-written and may still mention people."
        ),
        "rai:dataReleaseMaintenancePlan": (
            "Records are revoked when their author opts out or deletes them. The licensee "
            f"must read the signed revocation feed at {facts.feed_url}, delete revoked "
            "records and confirm with a receipt within "
            f"{facts.revocation_sla_words} ({facts.revocation_sla}) of the revocation."
        ),
        "rai:dataLimitations": (
            "Only authors who allowed this purpose are present, so the data over-represents "
            "them; a snapshot at the cut-off that shrinks as revocations are honoured; not "
            "for re-identifying authors."
        ),
        "rai:dataUseCases": f"The licensed purpose only: {facts.purpose}.",
        "distribution": distribution,
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": RECORD_SET,
                "name": RECORD_SET,
                "description": "One record per delivered post.",
                "key": {"@id": f"{RECORD_SET}/record_id"},
                "field": fields,
            }
        ],
    }


def croissant_bytes(facts: DeliveryFacts) -> bytes:
    """`croissant.json` as written: indented, keys in the order above, UTF-8."""
    return json.dumps(croissant(facts), indent=2, ensure_ascii=False).encode("utf-8") + b"\n"
