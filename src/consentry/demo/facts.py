"""Constants of the demo platform and the facts a generated demo records in `demo.json`.

Other capabilities' tests use these to know what the demo data was designed to contain
(the policy date, the access-log period, the three scrapers and their dense windows)
without re-deriving it from the data.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = [
    "ACCESS_FROM",
    "ACCESS_TO",
    "ACCOUNTS_FROM",
    "ACCOUNTS_TO",
    "DEMO_NOW",
    "EU_REGIONS",
    "FACTS_FILE",
    "GENERATOR_VERSION",
    "MIN_ACCESS_EVENTS",
    "MIN_USERS",
    "POLICY_EFFECTIVE",
    "POSTS_FROM",
    "POSTS_TO",
    "PURPOSES",
    "REGIONS",
    "SCRAPING_THRESHOLD",
    "SCRAPING_WINDOW",
    "TABLE_ORDER",
    "BlockFacts",
    "DemoFacts",
    "EntityFacts",
    "ScraperFacts",
    "read_facts",
]

GENERATOR_VERSION = 1
"""Bumped whenever the same arguments would produce different data."""

FACTS_FILE = "demo.json"
"""Name of the facts file written next to the five Parquet files."""

TABLE_ORDER: tuple[str, ...] = ("users", "posts", "consent_events", "entities", "access_events")
"""The order `consentry demo load` imports the tables in (owners before what refers to them)."""

POLICY_EFFECTIVE = datetime(2024, 11, 15, tzinfo=UTC)
"""The 2024-11-15 policy version: the opt-out burst starts here; minors are < 18 at this instant."""

DEMO_NOW = datetime(2025, 7, 1, tzinfo=UTC)
"""The demo's "now": nothing in the data happens at or after it; minors are still < 18 here."""

ACCOUNTS_FROM = datetime(2019, 1, 1, tzinfo=UTC)
ACCOUNTS_TO = datetime(2025, 1, 1, tzinfo=UTC)
"""Accounts are created in [ACCOUNTS_FROM, ACCOUNTS_TO), i.e. during 2019-2024."""

POSTS_FROM = datetime(2022, 1, 1, tzinfo=UTC)
POSTS_TO = DEMO_NOW
"""Posts are written in [POSTS_FROM, POSTS_TO), i.e. 2022-01-01 .. 2025-06-30."""

ACCESS_FROM = datetime(2025, 3, 3, tzinfo=UTC)
ACCESS_TO = datetime(2025, 3, 10, tzinfo=UTC)
"""The access log covers [ACCESS_FROM, ACCESS_TO): seven whole UTC days."""

SCRAPING_THRESHOLD = 1_000_000
"""Posts in one 24 h window above which an entity owes liquidated damages (X, 2024-11-15)."""

SCRAPING_WINDOW = timedelta(hours=24)
"""Length of the half-open window [s, s + 24 h)."""

PURPOSES: tuple[str, ...] = (
    "ai_training_third_party",
    "ai_training_first_party",
    "business_partners",
)
"""Purpose keys of the 2024-11-15 policy version that consent events refer to."""

EU_REGIONS: frozenset[str] = frozenset(
    {"DE", "FR", "ES", "IT", "NL", "PL", "SE", "IE", "PT", "AT", "BE"}
)
"""EU member states among the demo's regions (GB is separate: not EU, same AI default)."""

REGIONS: tuple[str, ...] = (
    *sorted(EU_REGIONS),
    "GB",
    "US",
    "IN",
    "BR",
    "JP",
    "CA",
    "MX",
    "AU",
    "NG",
    "ID",
    "TR",
    "KR",
    "SA",
    "EG",
)
"""The 25 ISO 3166-1 alpha-2 region codes users are spread over."""

MIN_USERS = 100
"""Fewest users `generate` accepts (scraper accounts and ordinary clients need a pool)."""

MIN_ACCESS_EVENTS = 1_000
"""Fewest access events `generate` accepts (every scraper block needs requests)."""


def _instant(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class EntityFacts:
    """One row of the entities table: a credential (or CIDR range) owned for an interval."""

    credential: str
    entity: str
    valid_from: datetime | None
    valid_to: datetime | None


@dataclass(frozen=True, slots=True)
class BlockFacts:
    """A burst of one scraper's requests: `posts` posts over `requests` requests in [start, end)."""

    start: datetime
    end: datetime
    posts: int
    requests: int
    credentials: tuple[str, ...]
    """The credentials the block's requests are made with (IPs may be covered by a CIDR row)."""


@dataclass(frozen=True, slots=True)
class ScraperFacts:
    """What a scraper was designed to do, for scraping enforcement to find."""

    entity: str
    blocks: tuple[BlockFacts, ...]
    max_24h_posts: int
    """Most posts in any half-open 24 h window [s, s + 24 h)."""
    window_start: datetime
    """Start of the earliest window holding `max_24h_posts` (the first request of its block)."""
    over_threshold: bool
    """True when `max_24h_posts` exceeds SCRAPING_THRESHOLD (strictly)."""
    straddles_midnight: bool
    """True when no calendar day alone exceeds the threshold but a window across midnight does."""
    max_calendar_day_posts: int

    @property
    def window_end(self) -> datetime:
        return self.window_start + SCRAPING_WINDOW

    @property
    def total_posts(self) -> int:
        return sum(b.posts for b in self.blocks)


@dataclass(frozen=True, slots=True)
class DemoFacts:
    """The parameters of one generated demo and what it was designed to contain."""

    users: int
    posts: int
    access_events: int
    seed: int
    rows: dict[str, int]
    scrapers: tuple[ScraperFacts, ...]
    entities: tuple[EntityFacts, ...]
    version: int = GENERATOR_VERSION
    now: datetime = DEMO_NOW
    policy_effective: datetime = POLICY_EFFECTIVE
    access_from: datetime = ACCESS_FROM
    access_to: datetime = ACCESS_TO
    threshold: int = SCRAPING_THRESHOLD
    purposes: tuple[str, ...] = field(default=PURPOSES)

    def scraper(self, entity: str) -> ScraperFacts:
        """The facts of one scraper; KeyError when the demo has no such scraper."""
        for s in self.scrapers:
            if s.entity == entity:
                return s
        raise KeyError(entity)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (instants as RFC 3339 with `Z`); stable key order."""

        def convert(value: Any) -> Any:
            if isinstance(value, datetime):
                return _instant(value)
            if isinstance(value, dict):
                return {k: convert(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [convert(v) for v in value]
            return value

        out: dict[str, Any] = convert(asdict(self))
        for s, raw in zip(self.scrapers, out["scrapers"], strict=True):
            raw["window_end"] = _instant(s.window_end)
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DemoFacts:
        """Rebuild facts from `to_json` output."""
        scrapers = tuple(
            ScraperFacts(
                entity=s["entity"],
                blocks=tuple(
                    BlockFacts(
                        start=_required(b["start"]),
                        end=_required(b["end"]),
                        posts=int(b["posts"]),
                        requests=int(b["requests"]),
                        credentials=tuple(b["credentials"]),
                    )
                    for b in s["blocks"]
                ),
                max_24h_posts=int(s["max_24h_posts"]),
                window_start=_required(s["window_start"]),
                over_threshold=bool(s["over_threshold"]),
                straddles_midnight=bool(s["straddles_midnight"]),
                max_calendar_day_posts=int(s["max_calendar_day_posts"]),
            )
            for s in raw["scrapers"]
        )
        entities = tuple(
            EntityFacts(
                credential=e["credential"],
                entity=e["entity"],
                valid_from=_parse(e["valid_from"]),
                valid_to=_parse(e["valid_to"]),
            )
            for e in raw["entities"]
        )
        return cls(
            users=int(raw["users"]),
            posts=int(raw["posts"]),
            access_events=int(raw["access_events"]),
            seed=int(raw["seed"]),
            rows={str(k): int(v) for k, v in raw["rows"].items()},
            scrapers=scrapers,
            entities=entities,
            version=int(raw["version"]),
            now=_required(raw["now"]),
            policy_effective=_required(raw["policy_effective"]),
            access_from=_required(raw["access_from"]),
            access_to=_required(raw["access_to"]),
            threshold=int(raw["threshold"]),
            purposes=tuple(raw["purposes"]),
        )


def _required(value: str) -> datetime:
    parsed = _parse(value)
    assert parsed is not None
    return parsed


def read_facts(out_dir: Path) -> DemoFacts:
    """Read `out_dir/demo.json` written by `generate`."""
    raw = json.loads((out_dir / FACTS_FILE).read_text(encoding="utf-8"))
    return DemoFacts.from_json(raw)
