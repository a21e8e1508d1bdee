"""The three designed scrapers: when they request, how many posts, with which credentials.

The volumes are fixed (independent of the seed and of the number of access events); only
how the posts are split into requests, and the request instants inside each block, vary.

- scraper-alpha: 2025-03-05 02-20h 3,500,000 posts; densest 24 h 3,500,000 (over).
- scraper-bravo: 03-03 06-12h 200k; 03-06 00-20h 990k; 03-08 12-18h 250k; densest 990,000
  (under).
- scraper-charlie: 03-04 10-16h 150k; 03-07 18-24h 600k; 03-08 00-06h 600k; densest
  1,200,000, over only in windows across midnight (each calendar day <= 600k).

Blocks of one scraper are at least 24 h apart except charlie's evening/morning pair, so the
densest window is known exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from consentry.demo.facts import SCRAPING_THRESHOLD, EntityFacts

__all__ = [
    "ACCOUNT_SLOT",
    "ACCOUNT_SLOTS",
    "MEAN_POSTS_PER_REQUEST",
    "PREVIOUS_OWNERS",
    "SCRAPERS",
    "SCRAPER_ENDPOINTS",
    "ScraperBlock",
    "ScraperDesign",
    "ScraperRequests",
    "request_plan",
    "resolve_blocks",
    "resolve_entities",
    "scraper_requests",
    "split_exact",
]

IntArray = npt.NDArray[np.int64]

ACCOUNT_SLOT = "account:"
"""Prefix of a placeholder credential that the generator replaces with a real user_id."""

MEAN_POSTS_PER_REQUEST = 550
"""Requests serve 100-1000 posts (mean 550) when the access-event budget allows."""

SCRAPER_SHARE_NUM, SCRAPER_SHARE_DEN = 3, 5
"""Scrapers' requests take at most this fraction (3/5) of the access events."""

_LO_FACTOR = 100 / MEAN_POSTS_PER_REQUEST
_HI_FACTOR = 1000 / MEAN_POSTS_PER_REQUEST

SCRAPER_ENDPOINTS: tuple[str, ...] = (
    "/2/tweets/search/all",
    "/2/users/:id/tweets",
    "/graphql/SearchTimeline",
    "/graphql/UserTweets",
)
"""Endpoints scrapers hit (bulk search and timelines)."""


def _t(month: int, day: int, hour: int = 0) -> datetime:
    return datetime(2025, month, day, hour, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ScraperBlock:
    """`posts` posts served in [start, end) to requests made with `credentials`."""

    start: datetime
    end: datetime
    posts: int
    credentials: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ScraperDesign:
    """One scraper entity: the credentials it owns (entities rows) and its request blocks."""

    entity: str
    owns: tuple[EntityFacts, ...]
    blocks: tuple[ScraperBlock, ...]
    max_24h_posts: int
    window_start: datetime
    max_calendar_day_posts: int

    @property
    def over_threshold(self) -> bool:
        return self.max_24h_posts > SCRAPING_THRESHOLD

    @property
    def straddles_midnight(self) -> bool:
        return self.over_threshold and self.max_calendar_day_posts <= SCRAPING_THRESHOLD


_ALPHA_IPS = tuple(f"203.0.113.{i}" for i in (5, 17, 29, 42, 58, 73, 88, 101, 130, 166, 201, 244))
_CHARLIE_IPS = tuple(f"192.0.2.{i}" for i in (66, 70, 81, 99, 120, 126))
_A1, _A2, _A3 = "ak_3f9c1e7a5b2d4c68e0f1", "ak_b81d0c4e9a7f3562d1aa", "ak_5e2a90c7d13b4f8e6c02"
_B1, _B2 = "ak_c4d7e1f09b3a5826e7d4", "ak_07af9e3c2d5b1f48a9c6"
_C1, _C2 = "ak_e9b2c5d8a1f7403e6b9d", "ak_2d6f8a0c4e1b7359c3e8"

SCRAPERS: tuple[ScraperDesign, ...] = (
    ScraperDesign(
        entity="scraper-alpha",
        owns=(
            EntityFacts(_A1, "scraper-alpha", _t(1, 10), None),
            EntityFacts(_A2, "scraper-alpha", _t(1, 10), None),
            EntityFacts(_A3, "scraper-alpha", _t(2, 1), None),
            EntityFacts("203.0.113.0/24", "scraper-alpha", _t(2, 1), None),
            EntityFacts(f"{ACCOUNT_SLOT}0", "scraper-alpha", None, None),
            EntityFacts(f"{ACCOUNT_SLOT}1", "scraper-alpha", None, None),
        ),
        blocks=(
            ScraperBlock(
                _t(3, 5, 2),
                _t(3, 5, 20),
                3_500_000,
                (_A1, _A2, _A3, *_ALPHA_IPS, f"{ACCOUNT_SLOT}0", f"{ACCOUNT_SLOT}1"),
            ),
        ),
        max_24h_posts=3_500_000,
        window_start=_t(3, 5, 2),
        max_calendar_day_posts=3_500_000,
    ),
    ScraperDesign(
        entity="scraper-bravo",
        owns=(
            # Key rotation on 2025-03-07: B1 closes, B2 opens.
            EntityFacts(_B1, "scraper-bravo", datetime(2024, 6, 1, tzinfo=UTC), _t(3, 7)),
            EntityFacts(_B2, "scraper-bravo", _t(3, 7), None),
            EntityFacts("198.51.100.17", "scraper-bravo", None, None),
            EntityFacts("198.51.100.23", "scraper-bravo", _t(3, 1), _t(4, 1)),
            EntityFacts(f"{ACCOUNT_SLOT}2", "scraper-bravo", None, None),
        ),
        blocks=(
            ScraperBlock(
                _t(3, 3, 6), _t(3, 3, 12), 200_000, (_B1, "198.51.100.17", "198.51.100.23")
            ),
            ScraperBlock(
                _t(3, 6, 0),
                _t(3, 6, 20),
                990_000,
                (_B1, "198.51.100.17", "198.51.100.23", f"{ACCOUNT_SLOT}2"),
            ),
            ScraperBlock(
                _t(3, 8, 12), _t(3, 8, 18), 250_000, (_B2, "198.51.100.23", f"{ACCOUNT_SLOT}2")
            ),
        ),
        max_24h_posts=990_000,
        window_start=_t(3, 6, 0),
        max_calendar_day_posts=990_000,
    ),
    ScraperDesign(
        entity="scraper-charlie",
        owns=(
            EntityFacts(_C1, "scraper-charlie", datetime(2024, 9, 1, tzinfo=UTC), None),
            EntityFacts(_C2, "scraper-charlie", _t(3, 1), None),
            EntityFacts(
                "192.0.2.64/26", "scraper-charlie", _t(1, 1), datetime(2026, 1, 1, tzinfo=UTC)
            ),
            EntityFacts(f"{ACCOUNT_SLOT}3", "scraper-charlie", None, None),
        ),
        blocks=(
            ScraperBlock(_t(3, 4, 10), _t(3, 4, 16), 150_000, (_C1, *_CHARLIE_IPS)),
            ScraperBlock(
                _t(3, 7, 18), _t(3, 8, 0), 600_000, (_C1, _C2, *_CHARLIE_IPS, f"{ACCOUNT_SLOT}3")
            ),
            ScraperBlock(
                _t(3, 8, 0), _t(3, 8, 6), 600_000, (_C1, _C2, *_CHARLIE_IPS, f"{ACCOUNT_SLOT}3")
            ),
        ),
        max_24h_posts=1_200_000,
        window_start=_t(3, 7, 18),
        max_calendar_day_posts=600_000,
    ),
)
"""The designed scrapers, in the order they appear in demo.json."""

PREVIOUS_OWNERS: tuple[EntityFacts, ...] = (
    # The alpha range belonged to a hosting co-operative until alpha leased it.
    EntityFacts("203.0.113.0/24", "hosting-coop", None, _t(2, 1)),
)
"""Earlier owners of scraper credentials (closed intervals before the access log)."""

ACCOUNT_SLOTS = 4
"""How many user accounts the scrapers use (placeholders account:0 .. account:3)."""


@dataclass(frozen=True, slots=True)
class ScraperRequests:
    """Column arrays of every scraper request, and the request count of each block."""

    ts_us: IntArray
    credential_index: IntArray
    """Index into `credentials`."""
    credentials: tuple[str, ...]
    posts: IntArray
    endpoint_index: IntArray
    """Index into SCRAPER_ENDPOINTS."""
    block_requests: tuple[tuple[int, ...], ...]
    """Per scraper (SCRAPERS order), the number of requests of each block."""


def request_plan(access_events: int) -> tuple[tuple[int, ...], ...]:
    """How many requests each scraper block gets out of an access-event budget.

    1. Naturally a block gets round(posts / 550) requests (mean 550 posts each).
    2. Scrapers may use at most 3/5 of the access events; when the natural total exceeds
       that, every block is scaled down proportionally (each keeps >= 1 request) and its
       requests serve proportionally more posts.
    """
    natural = [
        [max(1, round(b.posts / MEAN_POSTS_PER_REQUEST)) for b in d.blocks] for d in SCRAPERS
    ]
    total = sum(sum(n) for n in natural)
    budget = access_events * SCRAPER_SHARE_NUM // SCRAPER_SHARE_DEN
    if total <= budget:
        return tuple(tuple(n) for n in natural)
    return tuple(tuple(max(1, n * budget // total) for n in ns) for ns in natural)


def split_exact(rng: np.random.Generator, total: int, n: int, lo: int, hi: int) -> IntArray:
    """`n` integers in [lo, hi] summing exactly to `total` (requires n*lo <= total <= n*hi).

    1. Draw uniformly in [lo, hi].
    2. Spread the difference to `total` over the rows in order, each taking at most its room
       to the bound (a cumulative sum gives every row its share without a loop).
    3. Shuffle, so the adjusted rows are not the first ones.
    """
    if not n * lo <= total <= n * hi:
        raise ValueError(f"cannot split {total} into {n} parts within [{lo}, {hi}]")
    counts = rng.integers(lo, hi + 1, n).astype(np.int64)
    diff = total - int(counts.sum())
    if diff != 0:
        room = (hi - counts) if diff > 0 else (counts - lo)
        before = np.cumsum(room) - room
        share = np.clip(abs(diff) - before, 0, room)
        counts = counts + np.sign(diff) * share
    return rng.permutation(counts)


def scraper_requests(
    rng: np.random.Generator, access_events: int, accounts: Sequence[str]
) -> ScraperRequests:
    """Every scraper request: instants, credentials, posts served and endpoints.

    1. Split each block's posts exactly over its planned requests (`request_plan`), each
       request serving between 2/11 and 20/11 of the block's mean (100-1000 at mean 550).
    2. The first request of a block is at its start; the others at uniformly random
       microseconds in [start, end).
    3. Each request uses one of the block's credentials, uniformly; `account:k`
       placeholders become `accounts[k]`.
    """
    plan = request_plan(access_events)
    creds: list[str] = []
    for d in SCRAPERS:
        for b in d.blocks:
            for c in b.credentials:
                resolved = _resolve(c, accounts)
                if resolved not in creds:
                    creds.append(resolved)
    ts_parts: list[IntArray] = []
    cred_parts: list[IntArray] = []
    post_parts: list[IntArray] = []
    # A loop over the seven designed blocks, not over rows.
    for design, counts in zip(SCRAPERS, plan, strict=True):
        for block, n in zip(design.blocks, counts, strict=True):
            mean = block.posts / n
            # Rounding keeps lo <= mean <= hi (so the split exists) and gives 100-1000 at ~550.
            lo = max(1, round(mean * _LO_FACTOR))
            hi = max(lo, round(mean * _HI_FACTOR))
            post_parts.append(split_exact(rng, block.posts, n, lo, hi))
            start = _us(block.start)
            offsets = np.sort(rng.integers(0, _us(block.end) - start, n))
            offsets[0] = 0
            ts_parts.append(start + offsets)
            own = np.array(
                [creds.index(_resolve(c, accounts)) for c in block.credentials], dtype=np.int64
            )
            cred_parts.append(own[rng.integers(0, len(own), n)])
    ts = np.concatenate(ts_parts)
    return ScraperRequests(
        ts_us=ts,
        credential_index=np.concatenate(cred_parts),
        credentials=tuple(creds),
        posts=np.concatenate(post_parts),
        endpoint_index=rng.integers(0, len(SCRAPER_ENDPOINTS), len(ts)).astype(np.int64),
        block_requests=plan,
    )


def _resolve(credential: str, accounts: Sequence[str]) -> str:
    if credential.startswith(ACCOUNT_SLOT):
        return accounts[int(credential.removeprefix(ACCOUNT_SLOT))]
    return credential


def resolve_entities(accounts: Sequence[str]) -> tuple[EntityFacts, ...]:
    """The entities rows of the scrapers (and earlier owners) with placeholders resolved."""
    rows = [*PREVIOUS_OWNERS, *(e for d in SCRAPERS for e in d.owns)]
    return tuple(
        EntityFacts(_resolve(e.credential, accounts), e.entity, e.valid_from, e.valid_to)
        for e in rows
    )


def resolve_blocks(design: ScraperDesign, accounts: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    """Each block's credentials with placeholders resolved."""
    return tuple(tuple(_resolve(c, accounts) for c in b.credentials) for b in design.blocks)


def _us(value: datetime) -> int:
    return int(value.timestamp()) * 1_000_000
