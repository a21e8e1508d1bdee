"""Generate the demo platform: the five canonical tables as Parquet, plus `demo.json`.

Everything is drawn with `numpy.random.Generator`s seeded from (seed, table), built column
by column with NumPy and Arrow compute, and written with zstd. The same arguments give
byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from consentry.demo.facts import (
    ACCESS_FROM,
    ACCESS_TO,
    ACCOUNTS_FROM,
    ACCOUNTS_TO,
    DEMO_NOW,
    EU_REGIONS,
    FACTS_FILE,
    MIN_ACCESS_EVENTS,
    MIN_USERS,
    POLICY_EFFECTIVE,
    POSTS_FROM,
    PURPOSES,
    REGIONS,
    TABLE_ORDER,
    BlockFacts,
    DemoFacts,
    EntityFacts,
    ScraperFacts,
)
from consentry.demo.scrapers import (
    ACCOUNT_SLOTS,
    SCRAPER_ENDPOINTS,
    SCRAPERS,
    resolve_blocks,
    resolve_entities,
    scraper_requests,
)
from consentry.demo.texts import LANGS, hex_strings, ipv4_strings, post_texts
from consentry.errors import BadInput, Problem
from consentry.schema import CONSENT_SOURCES, VISIBILITIES, arrow_schema

__all__ = ["ProgressCallback", "generate", "generate_tables"]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

ProgressCallback = Callable[[str, int, int], None]
"""Called as (step description, steps done, total steps) while generating."""

US_PER_SECOND = 1_000_000
US_PER_DAY = 86_400 * US_PER_SECOND
_NONE = np.iinfo(np.int64).max
"""Stand-in for a null instant in the NumPy arrays (masked when converted to Arrow)."""

POSTS_CHUNK = 1_000_000
"""Posts get their texts and are written in chunks of this many rows (bounded memory)."""

_TWEPOCH_MS = 1_288_834_974_657
"""Snowflake epoch: ids are ((ms - epoch) << 22) | sequence, so they sort by creation time."""

# Shares (see docs/demo.md).
UNKNOWN_BIRTH_SHARE = 0.06
MINOR_SHARE = 0.04
PROTECTED_SHARE = 0.08
DELETED_USER_SHARE = 0.02
DEACTIVATED_USER_SHARE = 0.03
DELETED_POST_SHARE = 0.03
NULL_LANG_SHARE = 0.02
OPT_OUT_SHARE = 0.20
OPT_OUT_BURST_SHARE = 0.40
OPT_OUT_BURST_SCALE_DAYS = 4.0
RE_ENABLE_SHARE = 0.08
EU_OPT_IN_SHARE = 0.15
GPC_SHARE_US = 0.06
GPC_SHARE_OTHER = 0.01

_REGION_WEIGHTS: dict[str, float] = {
    "DE": 4, "FR": 4, "ES": 3.5, "IT": 3, "NL": 1.5, "PL": 1.5, "SE": 1, "IE": 0.8, "PT": 1,
    "AT": 0.7, "BE": 0.8, "GB": 5, "US": 20, "IN": 10, "BR": 7, "JP": 7, "CA": 3, "MX": 3.5,
    "AU": 2, "NG": 2.5, "ID": 4, "TR": 3, "KR": 2, "SA": 1.5, "EG": 1.5,
}  # fmt: skip
# Main languages per region; the rest of the mass goes to English.
_REGION_LANGS: dict[str, dict[str, float]] = {
    "DE": {"de": 0.85}, "FR": {"fr": 0.85}, "ES": {"es": 0.88}, "IT": {"it": 0.85},
    "NL": {"nl": 0.7}, "PL": {"pl": 0.85}, "SE": {"sv": 0.7}, "IE": {}, "PT": {"pt": 0.88},
    "AT": {"de": 0.85}, "BE": {"fr": 0.5, "nl": 0.35}, "GB": {}, "US": {"es": 0.12},
    "IN": {"hi": 0.45}, "BR": {"pt": 0.92}, "JP": {"ja": 0.93}, "CA": {"fr": 0.22},
    "MX": {"es": 0.93}, "AU": {}, "NG": {}, "ID": {"id": 0.85}, "TR": {"tr": 0.88},
    "KR": {"ko": 0.9}, "SA": {"ar": 0.85}, "EG": {"ar": 0.85},
}  # fmt: skip

_ORDINARY_ENDPOINTS = (
    "/2/timeline/home", "/2/tweets/search/recent", "/2/users/:id/tweets", "/2/tweets/:id",
    "/web/home", "/web/profile",
)  # fmt: skip
_ORDINARY_ENDPOINT_P = np.array([0.35, 0.15, 0.15, 0.1, 0.15, 0.1])
_NULL_ENDPOINT_SHARE = 0.03
_PAGE_SIZES = np.array([0, 1, 3, 5, 10, 20, 50, 100], dtype=np.int64)
_PAGE_P = np.array([0.05, 0.1, 0.1, 0.15, 0.2, 0.25, 0.1, 0.05])
_MAX_ORDINARY_REQUESTS = 9_000
"""Cap per ordinary credential: 9,000 requests x at most 100 posts < 1,000,000 in the log."""
# Requests per UTC hour of day (a daily rhythm peaking in the evening).
_DIURNAL = np.array(
    [3, 2, 2, 2, 2, 3, 4, 5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 8, 9, 9, 8, 6, 4], dtype=np.float64
)


def _us(value: datetime) -> int:
    return int(value.timestamp()) * US_PER_SECOND


def _days(value: datetime) -> int:
    return _us(value) // US_PER_DAY


def _uniform(rng: np.random.Generator, lo: IntArray, hi: IntArray) -> IntArray:
    """Uniform instants in [lo, hi) per row (hi > lo)."""
    return lo + (rng.random(len(lo)) * (hi - lo)).astype(np.int64)


def _ts(values: IntArray) -> pa.Array:
    """Microsecond instants as timestamp[us, UTC]; _NONE becomes null."""
    mask = values == _NONE
    return pa.array(np.where(mask, 0, values), type=pa.timestamp("us", tz="UTC"), mask=mask)


def _snowflakes(ms: IntArray) -> pa.Array:
    """Snowflake-style decimal ids for rows sorted by time (unique per row)."""
    seq = np.arange(len(ms), dtype=np.int64) & 0x3FFFFF
    return pc.cast(pa.array(((ms - _TWEPOCH_MS) << 22) | seq), pa.string())


def _scrambled_ids(prefix: str, n: int, salt: int) -> pa.Array:
    """`prefix` + 16 hex digits, unique per row: an odd multiplier is a bijection mod 2**64."""
    with np.errstate(over="ignore"):
        values = (np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64(
            salt
        )
    return pc.binary_join_element_wise(prefix, hex_strings(values), "")


@dataclass(frozen=True, slots=True)
class _Users:
    """The user columns later tables depend on (NumPy, sorted like the users table)."""

    ids: pa.Array
    created: IntArray
    region: IntArray
    protected: BoolArray
    gone: IntArray
    """Deletion or deactivation instant, else _NONE."""
    deleted: IntArray


def _users(rng: np.random.Generator, n: int) -> tuple[pa.Table, _Users]:
    """The users table.

    1. Region by weight over the 25 regions.
    2. Birth date: 6 % unknown, 4 % minors (born 2007-07-02 .. 2011-06-30, so under 18 on
       2024-11-15 and on DEMO_NOW), the rest adults (18+ on 2024-11-15, skewed young).
    3. Created in 2019-2024, growth-skewed, never before the 13th birthday.
    4. 8 % protected; 2 % deleted; 3 % of the others deactivated (after creation, before now).
    5. Rows sorted by creation; ids are snowflakes of the creation instant.
    """
    weights = np.array([_REGION_WEIGHTS[r] for r in REGIONS])
    region = rng.choice(len(REGIONS), size=n, p=weights / weights.sum()).astype(np.int64)
    kind = rng.random(n)
    unknown = kind < UNKNOWN_BIRTH_SHARE
    minor = (kind >= UNKNOWN_BIRTH_SHARE) & (kind < UNKNOWN_BIRTH_SHARE + MINOR_SHARE)
    minor_lo = _days(datetime(2007, 7, 2, tzinfo=UTC))
    minor_hi = _days(datetime(2011, 7, 1, tzinfo=UTC))
    adult_last = _days(datetime(2006, 11, 14, tzinfo=UTC))
    extra_years = np.minimum(rng.gamma(2.0, 8.0, n), 57.0)
    adult = adult_last - np.floor(extra_years * 365.25).astype(np.int64)
    birth = np.where(minor, rng.integers(minor_lo, minor_hi, n), adult)
    thirteen = birth * US_PER_DAY + int(13 * 365.25 * US_PER_DAY)
    lo = np.where(unknown, _us(ACCOUNTS_FROM), np.maximum(_us(ACCOUNTS_FROM), thirteen))
    hi = _us(ACCOUNTS_TO)
    created = lo + (rng.random(n) ** 0.8 * (hi - lo)).astype(np.int64)
    protected = rng.random(n) < PROTECTED_SHARE
    fate = rng.random(n)
    now = _us(DEMO_NOW)
    later = _uniform(rng, created, np.full(n, now))
    deleted = np.where(fate < DELETED_USER_SHARE, later, _NONE)
    deactivated = np.where(
        (fate >= DELETED_USER_SHARE) & (fate < DELETED_USER_SHARE + DEACTIVATED_USER_SHARE),
        later,
        _NONE,
    )
    order = np.argsort(created, kind="stable")
    created, region, birth = created[order], region[order], birth[order]
    unknown, protected = unknown[order], protected[order]
    deleted, deactivated = deleted[order], deactivated[order]
    ids = _snowflakes(created // 1000)
    table = pa.Table.from_arrays(
        [
            ids,
            _ts(created),
            pa.array(REGIONS, type=pa.string()).take(pa.array(region)),
            pa.array(birth.astype(np.int32), type=pa.date32(), mask=unknown),
            pa.array(protected),
            _ts(deactivated),
            _ts(deleted),
        ],
        schema=arrow_schema("users"),
    )
    gone = np.minimum(deleted, deactivated)
    return table, _Users(ids, created, region, protected, gone, deleted)


def _lang_cdf() -> npt.NDArray[np.float64]:
    """Cumulative language probabilities per region (rows: REGIONS, columns: LANGS)."""
    probs = np.zeros((len(REGIONS), len(LANGS)))
    for r, region in enumerate(REGIONS):
        for lang, p in _REGION_LANGS[region].items():
            probs[r, LANGS.index(lang)] = p
        probs[r, LANGS.index("en")] += 1.0 - probs[r].sum()
    return np.cumsum(probs, axis=1)


@dataclass(frozen=True, slots=True)
class _PostPlan:
    """Post columns that need no text, sorted by creation."""

    author: IntArray
    created: IntArray
    lang: IntArray
    lang_known: BoolArray
    visibility: IntArray
    deleted: IntArray


def _post_plan(rng: np.random.Generator, users: _Users, m: int) -> _PostPlan:
    """Authors, instants, languages, visibilities and deletions of `m` posts.

    1. Authors by Zipf-Mandelbrot weight (rank + 5)^-1.1 over a random ranking of the users
       who could post at all (account alive some time in 2022-01-01 .. now).
    2. Each post at a uniform instant of its author's posting span
       [max(2022-01-01, created), min(now, deleted, deactivated)).
    3. Language from the author's region (2 % unknown); visibility public / unlisted / direct
       (90/6/4 %), protected accounts' posts protected (90 %) or direct.
    4. 3 % deleted later (before now).
    """
    n = len(users.created)
    now = _us(DEMO_NOW)
    start = np.maximum(users.created, _us(POSTS_FROM))
    end = np.minimum(users.gone, now)
    can_post = end - start > 3600 * US_PER_SECOND
    if not can_post.any():
        raise BadInput("no user can post: every account was gone before 2022")
    rank = rng.permutation(n)
    weights = np.where(can_post, (rank + 5.0) ** -1.1, 0.0)
    author = rng.choice(n, size=m, p=weights / weights.sum()).astype(np.int64)
    created = _uniform(rng, start[author], end[author])
    order = np.argsort(created, kind="stable")
    author, created = author[order], created[order]
    cdf = _lang_cdf()[users.region[author]]
    lang = (rng.random(m)[:, None] >= cdf[:, :-1]).sum(axis=1).astype(np.int64)
    lang_known = rng.random(m) >= NULL_LANG_SHARE
    u = rng.random(m)
    public_like = np.select([u < 0.90, u < 0.96], [0, 1], 3).astype(np.int64)
    protected_like = np.where(u < 0.90, 2, 3).astype(np.int64)
    visibility = np.where(users.protected[author], protected_like, public_like)
    deleted = np.where(
        rng.random(m) < DELETED_POST_SHARE, _uniform(rng, created, np.full(m, now)), _NONE
    )
    return _PostPlan(author, created, lang, lang_known, visibility, deleted)


def _post_chunk(
    plan: _PostPlan, users: _Users, lo: int, hi: int, rng: np.random.Generator
) -> pa.Table:
    sl = slice(lo, hi)
    texts, _ = post_texts(rng, plan.lang[sl])
    seq = np.arange(lo, hi, dtype=np.int64) & 0x3FFFFF
    ms = plan.created[sl] // 1000
    ids = pc.cast(pa.array(((ms - _TWEPOCH_MS) << 22) | seq), pa.string())
    langs = pa.array(LANGS, type=pa.string()).take(pa.array(plan.lang[sl]))
    langs = pc.if_else(pa.array(plan.lang_known[sl]), langs, pa.scalar(None, pa.string()))
    return pa.Table.from_arrays(
        [
            ids,
            users.ids.take(pa.array(plan.author[sl])),
            _ts(plan.created[sl]),
            texts,
            pa.array(VISIBILITIES, type=pa.string()).take(pa.array(plan.visibility[sl])),
            langs,
            _ts(plan.deleted[sl]),
        ],
        schema=arrow_schema("posts"),
    )


def _consent_events(rng: np.random.Generator, users: _Users, salt: int) -> pa.Table:
    """Consent events: opt-outs with a burst after 2024-11-15, re-enables, EU opt-ins, GPC.

    1. ~20 % of users opt out (deny) of a subset of the three purposes in one sitting
       (seconds apart), source settings/api/support/import (72/10/6/12 %). 40 % of them do so
       in a burst right after 2024-11-15 (exponential, mean 4 days), the rest uniformly from
       max(created, 2023-01-01) until they are deleted or now.
    2. 8 % of those denies are later re-enabled (allow, settings or api).
    3. 15 % of EU and UK users opt in (allow) to AI training from 2024-09-01 on.
    4. Global Privacy Control: 6 % of US users and 1 % of others send a `gpc` deny for
       third-party AI training and business partners from 2024-01-01 on.
    5. Sorted by instant; ids `ce_` + 16 hex digits.
    """
    n = len(users.created)
    now = _us(DEMO_NOW)
    end = np.minimum(users.deleted, now)
    user_parts: list[IntArray] = []
    purpose_parts: list[IntArray] = []
    choice_parts: list[IntArray] = []
    at_parts: list[IntArray] = []
    source_parts: list[IntArray] = []
    source = {s: i for i, s in enumerate(CONSENT_SOURCES)}

    def add(user: IntArray, purpose: IntArray, choice: int, at: IntArray, src: IntArray) -> None:
        user_parts.append(user)
        purpose_parts.append(purpose)
        choice_parts.append(np.full(len(user), choice, dtype=np.int64))
        at_parts.append(at)
        source_parts.append(src)

    def sitting(
        members: IntArray, shares: tuple[float, ...], lo: IntArray, at: IntArray
    ) -> tuple[IntArray, IntArray, IntArray]:
        """Each member toggles a non-empty subset of purposes, a few seconds apart."""
        chosen = rng.random((len(members), len(PURPOSES))) < np.array(shares)
        chosen[~chosen.any(axis=1), 0] = True
        row, purpose = np.nonzero(chosen)
        times = at[row] + rng.integers(0, 30, len(row)) * US_PER_SECOND
        times = np.clip(times, lo[row], end[members[row]] - 1)
        return members[row].astype(np.int64), purpose.astype(np.int64), times

    # 1. Opt-outs.
    lo_all = np.maximum(users.created, _us(datetime(2023, 1, 1, tzinfo=UTC)))
    optout = (rng.random(n) < OPT_OUT_SHARE) & (end - lo_all > US_PER_DAY)
    members = np.flatnonzero(optout).astype(np.int64)
    lo, hi = lo_all[members], end[members]
    burst = _us(POLICY_EFFECTIVE) + (
        rng.exponential(OPT_OUT_BURST_SCALE_DAYS, len(members)) * US_PER_DAY
    ).astype(np.int64)
    in_burst = (rng.random(len(members)) < OPT_OUT_BURST_SHARE) & (burst >= lo) & (burst < hi)
    at = np.where(in_burst, burst, _uniform(rng, lo, hi))
    deny_user, deny_purpose, deny_at = sitting(members, (0.8, 0.6, 0.45), lo, at)
    src_of_member = rng.choice(
        np.array([source["settings"], source["api"], source["support"], source["import"]]),
        size=len(members),
        p=[0.72, 0.10, 0.06, 0.12],
    )
    member_pos = np.searchsorted(members, deny_user)
    add(deny_user, deny_purpose, 1, deny_at, src_of_member[member_pos].astype(np.int64))

    # 2. Re-enables.
    room = end[deny_user] - deny_at
    again = (rng.random(len(deny_user)) < RE_ENABLE_SHARE) & (room > 2 * 3600 * US_PER_SECOND)
    re_at = (
        deny_at[again]
        + 3600 * US_PER_SECOND
        + (rng.random(int(again.sum())) * (room[again] - 2 * 3600 * US_PER_SECOND)).astype(np.int64)
    )
    re_src = np.where(rng.random(len(re_at)) < 0.85, source["settings"], source["api"])
    add(deny_user[again], deny_purpose[again], 0, re_at, re_src.astype(np.int64))

    # 3. EU and UK opt-ins.
    eu = np.isin(users.region, [REGIONS.index(r) for r in (*EU_REGIONS, "GB")])
    lo_eu = np.maximum(users.created, _us(datetime(2024, 9, 1, tzinfo=UTC)))
    opt_in = eu & (rng.random(n) < EU_OPT_IN_SHARE) & (end - lo_eu > US_PER_DAY)
    members = np.flatnonzero(opt_in).astype(np.int64)
    at = _uniform(rng, lo_eu[members], end[members])
    in_user, in_purpose, in_at = sitting(members, (0.5, 0.7, 0.2), lo_eu[members], at)
    in_src = np.where(rng.random(len(in_user)) < 0.9, source["settings"], source["api"])
    add(in_user, in_purpose, 0, in_at, in_src.astype(np.int64))

    # 4. Global Privacy Control.
    us = users.region == REGIONS.index("US")
    lo_gpc = np.maximum(users.created, _us(datetime(2024, 1, 1, tzinfo=UTC)))
    gpc = (rng.random(n) < np.where(us, GPC_SHARE_US, GPC_SHARE_OTHER)) & (
        end - lo_gpc > US_PER_DAY
    )
    members = np.flatnonzero(gpc).astype(np.int64)
    at = _uniform(rng, lo_gpc[members], end[members])
    third, partners = PURPOSES.index("ai_training_third_party"), PURPOSES.index("business_partners")
    add(
        np.repeat(members, 2),
        np.tile(np.array([third, partners], dtype=np.int64), len(members)),
        1,
        np.repeat(at, 2),
        np.full(2 * len(members), source["gpc"], dtype=np.int64),
    )

    user = np.concatenate(user_parts)
    at = np.concatenate(at_parts)
    order = np.lexsort((user, at))
    user, at = user[order], at[order]
    purpose = np.concatenate(purpose_parts)[order]
    choice = np.concatenate(choice_parts)[order]
    src = np.concatenate(source_parts)[order]
    return pa.Table.from_arrays(
        [
            _scrambled_ids("ce_", len(user), salt),
            users.ids.take(pa.array(user)),
            pa.array(PURPOSES, type=pa.string()).take(pa.array(purpose)),
            pa.array(["allow", "deny"], type=pa.string()).take(pa.array(choice)),
            _ts(at),
            pa.array(CONSENT_SOURCES, type=pa.string()).take(pa.array(src)),
        ],
        schema=arrow_schema("consent_events"),
    )


def _capped_counts(weights: npt.NDArray[np.float64], total: int, cap: int) -> IntArray:
    """Integer counts proportional to `weights`, summing to `total`, none above `cap`.

    1. Water-fill: clamp shares above `cap`, hand the excess to the unclamped in proportion
       (a loop over rounds, each vectorised; it ends because clamped rows stay clamped).
    2. Round down, then give the remaining units to the largest fractional parts below cap.
    """
    alloc = weights / weights.sum() * total
    while (alloc > cap + 1e-9).any():
        over = alloc > cap
        excess = float((alloc[over] - cap).sum())
        alloc[over] = cap
        free = alloc < cap
        alloc[free] += excess * weights[free] / weights[free].sum()
    counts = np.floor(alloc).astype(np.int64)
    short = total - int(counts.sum())
    frac = np.where(counts < cap, alloc - counts, -1.0)
    counts[np.argsort(-frac, kind="stable")[:short]] += 1
    result: IntArray = counts
    return result


@dataclass(frozen=True, slots=True)
class _Ordinary:
    ts: IntArray
    credential_index: IntArray
    credentials: pa.Array
    posts: IntArray
    endpoint_index: IntArray
    """Index into _ORDINARY_ENDPOINTS; -1 for null."""
    entities: tuple[EntityFacts, ...]


def _ordinary_access(
    rng: np.random.Generator, users: _Users, k: int, taken_accounts: IntArray
) -> _Ordinary:
    """Ordinary clients' requests: Zipf over many credentials, small pages, a daily rhythm.

    1. max(200, k/20, k/4500) credentials: 45 % API keys, 35 % user accounts (alive during
       the log, not a scraper's), 20 % IPv4 addresses (first octet 11-99, so never in the
       scrapers' documentation ranges).
    2. Requests per credential ∝ (rank + 2)^-1.1, capped at 9,000 so no ordinary credential
       gets near 1,000,000 posts (pages hold at most 100 posts).
    3. Each request on a uniform day of the log, hour by a diurnal curve, uniform inside it;
       0-100 posts; one of six endpoints (3 % unknown).
    4. Benign entities: the top two API keys belong to `acme-research`, the top account to
       `newsdesk-bot`, the top IP to `uni-lab` (for March-May 2025 only).
    """
    n_cred = max(200, k // 20, math.ceil(k / (_MAX_ORDINARY_REQUESTS / 2)))
    n_key, n_acct, n_ip = (int(c) for c in rng.multinomial(n_cred, [0.45, 0.35, 0.20]))
    alive = (users.created < _us(ACCESS_FROM)) & (users.gone >= _us(ACCESS_TO))
    alive[taken_accounts] = False
    pool = np.flatnonzero(alive)
    n_acct = min(n_acct, len(pool))
    n_key = n_cred - n_acct - n_ip
    raw_keys = np.unique(rng.integers(0, 2**63, n_key * 2 + 16, dtype=np.int64))
    keys = rng.permutation(raw_keys)[:n_key].astype(np.uint64)
    key_tail = rng.integers(0, 2**16, n_key, dtype=np.int64).astype(np.uint64)
    key_strings = pc.binary_join_element_wise(
        "ak_", hex_strings(keys), hex_strings(key_tail, 4), ""
    )
    accounts = users.ids.take(pa.array(rng.choice(pool, size=n_acct, replace=False)))
    packed = np.unique(
        rng.integers(11, 100, n_ip * 2 + 16) * 2**24 + rng.integers(0, 2**24, n_ip * 2 + 16)
    )
    ips = rng.permutation(packed)[:n_ip]
    octets = np.column_stack([(ips >> s) & 255 for s in (24, 16, 8, 0)])
    kind = np.concatenate(
        [np.zeros(n_key, np.int64), np.ones(n_acct, np.int64), np.full(n_ip, 2, np.int64)]
    )
    creds = pa.concat_arrays([key_strings, accounts, ipv4_strings(octets)])
    order = rng.permutation(n_cred)
    creds, kind = creds.take(pa.array(order)), kind[order]

    weights = (np.arange(n_cred, dtype=np.float64) + 2.0) ** -1.1
    counts = _capped_counts(weights, k, _MAX_ORDINARY_REQUESTS)
    cred_index = np.repeat(np.arange(n_cred, dtype=np.int64), counts)
    day = rng.integers(0, 7, k)
    hour = rng.choice(24, size=k, p=_DIURNAL / _DIURNAL.sum())
    ts = (
        _us(ACCESS_FROM)
        + day * US_PER_DAY
        + hour * 3600 * US_PER_SECOND
        + rng.integers(0, 3600 * US_PER_SECOND, k)
    )
    posts = rng.choice(_PAGE_SIZES, size=k, p=_PAGE_P)
    endpoint = rng.choice(len(_ORDINARY_ENDPOINTS), size=k, p=_ORDINARY_ENDPOINT_P)
    endpoint = np.where(rng.random(k) < _NULL_ENDPOINT_SHARE, -1, endpoint).astype(np.int64)

    def top(kind_code: int, count: int) -> list[str]:
        where = np.flatnonzero(kind == kind_code)[:count]
        return [str(creds[int(i)].as_py()) for i in where]

    since = datetime(2024, 1, 1, tzinfo=UTC)
    benign = [EntityFacts(c, "acme-research", since, None) for c in top(0, 2)]
    benign += [EntityFacts(c, "newsdesk-bot", None, None) for c in top(1, 1)]
    benign += [
        EntityFacts(c, "uni-lab", datetime(2025, 3, 1, tzinfo=UTC), DEMO_NOW) for c in top(2, 1)
    ]
    return _Ordinary(ts, cred_index, creds, posts, endpoint, tuple(benign))


@dataclass(frozen=True, slots=True)
class _Access:
    table: pa.Table
    entities: tuple[EntityFacts, ...]
    scrapers: tuple[ScraperFacts, ...]


def _access(rng: np.random.Generator, users: _Users, k: int, salt: int) -> _Access:
    """Access events (scrapers' and ordinary clients'), entities rows and scraper facts."""
    alive = np.flatnonzero((users.created < _us(ACCESS_FROM)) & (users.gone == _NONE))
    if len(alive) < ACCOUNT_SLOTS:
        raise BadInput(
            Problem(
                location="--users",
                row=None,
                field="users",
                message="too few active accounts for the scrapers; use more users",
            )
        )
    taken = rng.choice(alive, size=ACCOUNT_SLOTS, replace=False).astype(np.int64)
    accounts = [str(users.ids[int(i)].as_py()) for i in taken]
    scr = scraper_requests(rng, k, accounts)
    ordinary = _ordinary_access(rng, users, k - len(scr.ts_us), taken)

    scraper_creds = pa.array(scr.credentials, type=pa.string())
    creds = pa.concat_arrays([scraper_creds, ordinary.credentials])
    cred_index = np.concatenate(
        [scr.credential_index, ordinary.credential_index + len(scraper_creds)]
    )
    endpoints = pa.array((*SCRAPER_ENDPOINTS, *_ORDINARY_ENDPOINTS), type=pa.string())
    endpoint = np.concatenate(
        [
            scr.endpoint_index,
            np.where(
                ordinary.endpoint_index < 0, -1, ordinary.endpoint_index + len(SCRAPER_ENDPOINTS)
            ),
        ]
    )
    ts = np.concatenate([scr.ts_us, ordinary.ts])
    posts = np.concatenate([scr.posts, ordinary.posts])
    order = np.argsort(ts, kind="stable")
    ts, cred_index, endpoint, posts = ts[order], cred_index[order], endpoint[order], posts[order]
    null_endpoint = endpoint < 0
    table = pa.Table.from_arrays(
        [
            _scrambled_ids("req_", len(ts), salt),
            _ts(ts),
            creds.take(pa.array(cred_index)),
            pa.array(posts, type=pa.int64()),
            endpoints.take(pa.array(np.where(null_endpoint, 0, endpoint), mask=null_endpoint)),
        ],
        schema=arrow_schema("access_events"),
    )
    scrapers = tuple(
        ScraperFacts(
            entity=design.entity,
            blocks=tuple(
                BlockFacts(b.start, b.end, b.posts, n, cs)
                for b, n, cs in zip(
                    design.blocks,
                    scr.block_requests[i],
                    resolve_blocks(design, accounts),
                    strict=True,
                )
            ),
            max_24h_posts=design.max_24h_posts,
            window_start=design.window_start,
            over_threshold=design.over_threshold,
            straddles_midnight=design.straddles_midnight,
            max_calendar_day_posts=design.max_calendar_day_posts,
        )
        for i, design in enumerate(SCRAPERS)
    )
    return _Access(table, (*resolve_entities(accounts), *ordinary.entities), scrapers)


def _entities_table(rows: tuple[EntityFacts, ...]) -> pa.Table:
    def instants(values: list[datetime | None]) -> pa.Array:
        return _ts(np.array([_NONE if v is None else _us(v) for v in values], dtype=np.int64))

    return pa.Table.from_arrays(
        [
            pa.array([r.credential for r in rows], type=pa.string()),
            pa.array([r.entity for r in rows], type=pa.string()),
            instants([r.valid_from for r in rows]),
            instants([r.valid_to for r in rows]),
        ],
        schema=arrow_schema("entities"),
    )


def _check(users: int, posts: int, access_events: int, seed: int) -> None:
    problems = []
    for name, value, least in (
        ("users", users, MIN_USERS),
        ("posts", posts, 1),
        ("access-events", access_events, MIN_ACCESS_EVENTS),
        ("seed", seed, 0),
    ):
        if value < least:
            problems.append(
                Problem(
                    location=f"--{name}",
                    row=None,
                    field=name.replace("-", "_"),
                    message=f"must be at least {least:,} (got {value:,})",
                )
            )
    if problems:
        raise BadInput(problems)


def _salt(seed: int, table: int) -> int:
    return int(np.random.default_rng([seed, table, 99]).integers(0, 2**63))


def generate_tables(
    out_dir: Path,
    *,
    users: int,
    posts: int,
    access_events: int,
    seed: int,
    on_progress: ProgressCallback | None = None,
) -> DemoFacts:
    """Write the five tables and demo.json into an existing, empty `out_dir` (not atomic).

    1. Users, then posts (in chunks of POSTS_CHUNK), consent events, access events and
       entities, each from its own generator seeded with (seed, table number), so changing
       one size does not reshuffle the other tables.
    2. Parquet with zstd; demo.json holds the parameters, row counts and scraper facts.
    """
    _check(users, posts, access_events, seed)
    chunks = math.ceil(posts / POSTS_CHUNK)
    total = 4 + chunks
    step = 0

    def report(what: str) -> None:
        nonlocal step
        step += 1
        if on_progress is not None:
            on_progress(what, step, total)

    users_table, user_cols = _users(np.random.default_rng([seed, 1]), users)
    pq.write_table(users_table, out_dir / "users.parquet", compression="zstd")
    report("users")

    plan = _post_plan(np.random.default_rng([seed, 2]), user_cols, posts)
    with pq.ParquetWriter(
        out_dir / "posts.parquet", arrow_schema("posts"), compression="zstd"
    ) as writer:
        for c in range(chunks):
            lo, hi = c * POSTS_CHUNK, min(posts, (c + 1) * POSTS_CHUNK)
            writer.write_table(
                _post_chunk(plan, user_cols, lo, hi, np.random.default_rng([seed, 3, c]))
            )
            report(f"posts {hi:,}/{posts:,}")

    consent = _consent_events(np.random.default_rng([seed, 4]), user_cols, _salt(seed, 4))
    pq.write_table(consent, out_dir / "consent_events.parquet", compression="zstd")
    report("consent_events")

    access = _access(np.random.default_rng([seed, 5]), user_cols, access_events, _salt(seed, 5))
    pq.write_table(access.table, out_dir / "access_events.parquet", compression="zstd")
    report("access_events")

    entities = _entities_table(access.entities)
    pq.write_table(entities, out_dir / "entities.parquet", compression="zstd")
    facts = DemoFacts(
        users=users,
        posts=posts,
        access_events=access_events,
        seed=seed,
        rows={
            "users": users_table.num_rows,
            "posts": posts,
            "consent_events": consent.num_rows,
            "entities": entities.num_rows,
            "access_events": access.table.num_rows,
        },
        scrapers=access.scrapers,
        entities=access.entities,
    )
    (out_dir / FACTS_FILE).write_text(
        json.dumps(facts.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    report("entities")
    return facts


def generate(
    out_dir: Path,
    *,
    users: int,
    posts: int,
    access_events: int,
    seed: int,
    overwrite: bool = False,
    on_progress: ProgressCallback | None = None,
) -> dict[str, Path]:
    """Generate the demo platform into `out_dir`; return each table's Parquet path.

    1. Refuse (BadInput) a non-empty `out_dir` unless `overwrite`.
    2. Write everything into a fresh temporary directory next to `out_dir`
       (`generate_tables`).
    3. Move it into place with one rename; an existing directory is first renamed aside and
       removed only after the new one is in place. On any error the temporary directory is
       removed and `out_dir` is untouched.
    """
    _check(users, posts, access_events, seed)
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInput(Problem(str(out_dir), None, "out", "exists and is not a directory"))
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise BadInput(
            Problem(str(out_dir), None, "out", "already exists; pass --force to replace it")
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        generate_tables(
            tmp,
            users=users,
            posts=posts,
            access_events=access_events,
            seed=seed,
            on_progress=on_progress,
        )
        if out_dir.exists() and any(out_dir.iterdir()):
            aside = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out_dir, aside)
            os.replace(tmp, out_dir)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {table: out_dir / f"{table}.parquet" for table in TABLE_ORDER}
