"""The demo generator: schemas, shapes, timelines, consent, texts, determinism, atomicity."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from consentry.demo import (
    ACCESS_FROM,
    ACCESS_TO,
    ACCOUNTS_FROM,
    ACCOUNTS_TO,
    DEMO_NOW,
    EU_REGIONS,
    FACTS_FILE,
    POLICY_EFFECTIVE,
    POSTS_FROM,
    POSTS_TO,
    PURPOSES,
    REGIONS,
    TABLE_ORDER,
    DemoFacts,
    generate,
    read_facts,
)
from consentry.demo import generator as generator_module
from consentry.errors import BadInput
from consentry.schema import CONSENT_SOURCES, VISIBILITIES, arrow_schema
from tests.demo.conftest import SMALL, Demo, Sizes

I64 = npt.NDArray[np.int64]
NULL = np.iinfo(np.int64).max
DAY = 86_400_000_000


def us(column: pa.ChunkedArray | pa.Array) -> I64:
    """Instants as int64 microseconds; null becomes NULL (int64 max)."""
    ints = pc.fill_null(column.cast(pa.int64()), NULL)
    out: I64 = np.asarray(ints.to_numpy(), dtype=np.int64)
    return out


def at(value: datetime) -> int:
    return int(value.timestamp()) * 1_000_000


def strings(column: pa.ChunkedArray) -> npt.NDArray[np.object_]:
    out: npt.NDArray[np.object_] = np.asarray(column.to_numpy(zero_copy_only=False), dtype=object)
    return out


def share(mask: npt.NDArray[np.bool_]) -> float:
    return float(mask.mean())


def test_every_table_has_exactly_the_canonical_schema(small_demo: Demo) -> None:
    for table in TABLE_ORDER:
        on_disk = pq.read_schema(small_demo.out / f"{table}.parquet").remove_metadata()
        assert on_disk.equals(arrow_schema(table)), table
        assert small_demo.tables[table].schema.remove_metadata().equals(arrow_schema(table))


def test_files_are_zstd_and_row_counts_match_the_parameters(small_demo: Demo) -> None:
    for table in TABLE_ORDER:
        meta = pq.ParquetFile(small_demo.out / f"{table}.parquet").metadata
        assert meta.row_group(0).column(0).compression == "ZSTD"
        assert small_demo.facts.rows[table] == small_demo.tables[table].num_rows
    assert small_demo.tables["users"].num_rows == SMALL["users"]
    assert small_demo.tables["posts"].num_rows == SMALL["posts"]
    assert small_demo.tables["access_events"].num_rows == SMALL["access_events"]


def test_keys_are_unique(small_demo: Demo) -> None:
    t = small_demo.tables
    for table, key in (
        ("users", "user_id"),
        ("posts", "post_id"),
        ("consent_events", "event_id"),
        ("access_events", "request_id"),
    ):
        assert pc.count_distinct(t[table][key]).as_py() == t[table].num_rows, table
    pairs = {(r["credential"], r["valid_from"]) for r in t["entities"].to_pylist()}
    assert len(pairs) == t["entities"].num_rows


def test_users_regions_and_account_states(small_demo: Demo) -> None:
    users = small_demo.tables["users"]
    regions = set(users["region"].to_pylist())
    assert regions == set(REGIONS)
    assert len(REGIONS) == 25
    assert {"GB", "US", "IN", "BR", "JP"} <= regions
    assert len(EU_REGIONS & regions) >= 10
    created = us(users["created_at"])
    assert created.min() >= at(ACCOUNTS_FROM)
    assert created.max() < at(ACCOUNTS_TO)
    protected = np.asarray(users["protected"].to_numpy(zero_copy_only=False), dtype=bool)
    assert 0.065 < share(protected) < 0.095
    deleted = us(users["deleted_at"])
    deactivated = us(users["deactivated_at"])
    assert 0.013 < share(deleted != NULL) < 0.027
    assert 0.02 < share(deactivated != NULL) < 0.04
    for gone in (deleted, deactivated):
        some = gone != NULL
        assert (gone[some] >= created[some]).all()
        assert (gone[some] < at(DEMO_NOW)).all()


def _ages(births: list[date | None], on: date) -> npt.NDArray[np.float64]:
    """Exact age in whole years on `on` (NaN when unknown); a test-only per-row loop."""
    return np.array(
        [
            np.nan if b is None else on.year - b.year - ((on.month, on.day) < (b.month, b.day))
            for b in births
        ]
    )


def test_minors_and_unknown_birth_dates(small_demo: Demo) -> None:
    births = small_demo.tables["users"]["birth_date"].to_pylist()
    at_policy = _ages(births, date(2024, 11, 15))
    at_now = _ages(births, DEMO_NOW.date())
    assert 0.04 < share(np.isnan(at_policy)) < 0.08
    minors_policy = at_policy < 18
    minors_now = at_now < 18
    assert 0.03 < share(minors_policy) < 0.05
    # The same accounts are minors on the policy date and at the demo's "now".
    assert (minors_policy == minors_now).all()
    assert np.nanmin(at_policy) >= 13
    created = us(small_demo.tables["users"]["created_at"])
    known = ~np.isnan(at_policy)
    birth_days = np.array([(b - date(1970, 1, 1)).days if b else 0 for b in births])
    # Nobody signed up before turning 13 (13 years ~ 4748 days).
    assert (created[known] // DAY - birth_days[known] >= 4748).all()


def test_posts_timeline_authors_and_states(small_demo: Demo) -> None:
    users = small_demo.tables["users"]
    posts = small_demo.tables["posts"]
    created = us(posts["created_at"])
    assert created.min() >= at(POSTS_FROM)
    assert created.max() < at(POSTS_TO)
    index = {u: i for i, u in enumerate(users["user_id"].to_pylist())}
    author = np.array([index[a] for a in posts["author_id"].to_pylist()])
    u_created = us(users["created_at"])[author]
    gone = np.minimum(us(users["deleted_at"]), us(users["deactivated_at"]))[author]
    assert (created >= u_created).all()
    assert (created < gone).all()
    deleted = us(posts["deleted_at"])
    assert 0.023 < share(deleted != NULL) < 0.037
    some = deleted != NULL
    assert (deleted[some] >= created[some]).all()
    assert (deleted[some] < at(DEMO_NOW)).all()
    visibility = strings(posts["visibility"])
    assert set(visibility) == set(VISIBILITIES)
    assert share(visibility == "public") > 0.75
    protected_author = np.asarray(users["protected"].to_numpy(zero_copy_only=False))[author]
    assert (visibility[protected_author] != "public").all()


def test_posts_per_author_is_heavy_tailed(small_demo: Demo) -> None:
    counts = np.sort(
        pc.value_counts(small_demo.tables["posts"]["author_id"]).field("counts").to_numpy()
    )[::-1]
    top_one_percent = counts[: max(1, SMALL["users"] // 100)].sum() / counts.sum()
    assert top_one_percent > 0.25
    assert np.median(counts) < 10
    assert counts[0] > 50 * np.median(counts)


def test_languages_are_mixed(small_demo: Demo) -> None:
    posts = small_demo.tables["posts"]
    langs = pc.value_counts(posts["lang"]).to_pylist()
    seen = {v["values"] for v in langs if v["values"] is not None}
    assert {"en", "es", "de", "fr", "pt", "ja", "hi", "ar"} <= seen
    assert 0.01 < posts["lang"].null_count / posts.num_rows < 0.03
    texts = "\n".join(posts["text"].to_pylist()[:20_000])
    for script in (r"[\u3040-\u30ff]", r"[\u0900-\u097f]", r"[\u0600-\u06ff]", r"[\uac00-\ud7af]"):
        assert re.search(script, texts), script


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


PII_PATTERNS = {
    "email": r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
    "phone": r"\+\d{1,3} \d{3} \d{3} \d{4}",
    "url": r"https?://[^\s?]+(?:\s|$)",
    "url_query": r"https?://\S+\?\S+=\S+",
    "url_user": r"https?://\S+/(?:@|users/)\w+",
    "handle": r"(?<![\w.@/])@[A-Za-z_]\w+",
    "ip": r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])",
    "card": r"(?<!\d)(?:\d{4} ?){3}\d{4}(?!\d)",
}


def test_texts_contain_every_kind_of_personal_data(small_demo: Demo) -> None:
    texts: list[str] = small_demo.tables["posts"]["text"].to_pylist()
    for kind, pattern in PII_PATTERNS.items():
        rx = re.compile(pattern)
        hits = sum(1 for t in texts if rx.search(t))
        assert hits > 100, kind
    cards = re.findall(PII_PATTERNS["card"], "\n".join(texts))
    assert len(cards) > 100
    assert all(_luhn(c.replace(" ", "")) for c in cards)
    # Not everything is personal data.
    rx = re.compile(r"https?://|@|\+\d|\d{4}")
    assert sum(1 for t in texts if not rx.search(t)) > 0.5 * len(texts)


def test_consent_opt_outs_burst_and_sources(small_demo: Demo) -> None:
    users = small_demo.tables["users"]
    events = small_demo.tables["consent_events"]
    assert set(events["purpose"].to_pylist()) == set(PURPOSES)
    assert set(events["source"].to_pylist()) == set(CONSENT_SOURCES)
    source = strings(events["source"])
    choice = strings(events["choice"])
    user = strings(events["user_id"])
    when = us(events["at"])
    assert (choice[source == "gpc"] == "deny").all()
    opted_out = set(user[(choice == "deny") & (source != "gpc")])
    assert 0.17 < len(opted_out) / users.num_rows < 0.23
    # Every event lies in its user's life.
    index = {u: i for i, u in enumerate(users["user_id"].to_pylist())}
    rows = np.array([index[u] for u in user])
    assert (when >= us(users["created_at"])[rows]).all()
    assert (when < np.minimum(us(users["deleted_at"])[rows], at(DEMO_NOW))).all()
    # The burst after the 2024-11-15 policy: its first week beats the usual day tenfold.
    denies = when[(choice == "deny") & (source != "gpc")]
    day = (denies - at(POLICY_EFFECTIVE)) // DAY
    burst_per_day = ((day >= 0) & (day < 7)).sum() / 7
    before = day[(day < -14) & (day >= -500)]
    usual_per_day = len(before) / 486
    assert burst_per_day > 10 * usual_per_day
    assert ((day >= -500) & (day < -14)).sum() > 0  # spread over time too


def test_consent_re_enables_and_eu_opt_ins(small_demo: Demo) -> None:
    users = small_demo.tables["users"]
    events = small_demo.tables["consent_events"].to_pylist()
    region = dict(zip(users["user_id"].to_pylist(), users["region"].to_pylist(), strict=True))
    denied: dict[tuple[str, str], datetime] = {}
    re_enabled = 0
    eu_allows = 0
    for e in events:  # sorted by instant
        key = (e["user_id"], e["purpose"])
        if e["choice"] == "deny":
            denied.setdefault(key, e["at"])
        elif key in denied:
            re_enabled += 1
        elif region[e["user_id"]] in EU_REGIONS | {"GB"}:
            eu_allows += 1
    assert re_enabled > 20
    assert eu_allows > 50
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)


def test_access_events_period_and_ordinary_clients(small_demo: Demo) -> None:
    access = small_demo.tables["access_events"]
    ts = us(access["ts"])
    assert ts.min() >= at(ACCESS_FROM)
    assert ts.max() < at(ACCESS_TO)
    assert (np.diff(ts) >= 0).all()
    posts = access["posts"].to_numpy()
    assert posts.min() >= 0
    assert 0 < access["endpoint"].null_count < 0.05 * access.num_rows
    scraper_creds = {c for s in small_demo.facts.scrapers for b in s.blocks for c in b.credentials}
    creds = strings(access["credential"])
    ordinary = ~np.isin(creds, list(scraper_creds))
    counts = np.sort(pc.value_counts(pa.array(creds[ordinary])).field("counts").to_numpy())[::-1]
    assert len(counts) > 200
    assert counts[0] > 20 * np.median(counts)
    assert posts[ordinary].max() <= 100
    kinds = {
        "key": sum(c.startswith("ak_") for c in set(creds[ordinary])),
        "ip": sum(c.count(".") == 3 for c in set(creds[ordinary])),
        "account": sum(c.isdigit() for c in set(creds[ordinary])),
    }
    assert all(v > 20 for v in kinds.values()), kinds
    user_ids = set(small_demo.tables["users"]["user_id"].to_pylist())
    assert {c for c in set(creds[ordinary]) if c.isdigit()} <= user_ids


def test_entities_cover_keys_accounts_ips_and_cidr_with_intervals(small_demo: Demo) -> None:
    rows = small_demo.tables["entities"].to_pylist()
    entities = {r["entity"] for r in rows}
    assert {"scraper-alpha", "scraper-bravo", "scraper-charlie"} <= entities
    creds = [r["credential"] for r in rows]
    assert "203.0.113.0/24" in creds
    assert any(c.startswith("ak_") for c in creds)
    assert any(c.isdigit() for c in creds)
    assert any(re.fullmatch(r"(\d+\.){3}\d+", c) for c in creds)
    assert any(r["valid_to"] is None for r in rows)
    assert any(r["valid_to"] is not None for r in rows)
    assert any(r["valid_from"] is None for r in rows)


def test_facts_file_round_trips(small_demo: Demo) -> None:
    facts = small_demo.facts
    assert DemoFacts.from_json(facts.to_json()) == facts
    assert facts.users == SMALL["users"]
    assert facts.seed == SMALL["seed"]
    assert [s.entity for s in facts.scrapers] == [
        "scraper-alpha",
        "scraper-bravo",
        "scraper-charlie",
    ]
    assert (small_demo.out / FACTS_FILE).read_text(encoding="utf-8").endswith("\n")


TINY = Sizes(users=400, posts=3_000, access_events=1_500)


def _bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    generate(tmp_path / "a", **TINY, seed=11)
    generate(tmp_path / "b", **TINY, seed=11)
    generate(tmp_path / "c", **TINY, seed=12)
    a, b, c = _bytes(tmp_path / "a"), _bytes(tmp_path / "b"), _bytes(tmp_path / "c")
    assert set(a) == {*(f"{t}.parquet" for t in TABLE_ORDER), FACTS_FILE}
    assert a == b
    for name in ("users.parquet", "posts.parquet", "consent_events.parquet", FACTS_FILE):
        assert a[name] != c[name], name


def test_posts_span_several_chunks_deterministically(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generator_module, "POSTS_CHUNK", 1_000)
    generate(tmp_path / "a", **TINY, seed=3)
    generate(tmp_path / "b", **TINY, seed=3)
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")
    posts = pq.read_table(tmp_path / "a" / "posts.parquet")
    assert posts.num_rows == TINY["posts"]
    assert pq.ParquetFile(tmp_path / "a" / "posts.parquet").metadata.num_row_groups == 3
    assert pc.count_distinct(posts["post_id"]).as_py() == TINY["posts"]


def test_refuses_a_non_empty_directory_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(BadInput, match="already exists"):
        generate(out, **TINY, seed=1)
    assert (out / "keep.txt").read_text() == "mine"
    files = generate(out, **TINY, seed=1, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert all(p.is_file() for p in files.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_empty_directory_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    generate(out, **TINY, seed=1)
    assert read_facts(out).seed == 1


def test_a_failure_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "old.txt").write_text("old")

    def broken(target: Path, **_: object) -> DemoFacts:
        (target / "users.parquet").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(generator_module, "generate_tables", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(out, **TINY, seed=1, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"users": 10}, "users"),
        ({"posts": 0}, "posts"),
        ({"access_events": 999}, "access_events"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_sizes_are_bad_input(tmp_path: Path, kwargs: dict[str, int], field: str) -> None:
    args: dict[str, int] = {"users": 400, "posts": 3_000, "access_events": 1_500, "seed": 1}
    args.update(kwargs)
    with pytest.raises(BadInput) as info:
        generate(
            tmp_path / "demo",
            users=args["users"],
            posts=args["posts"],
            access_events=args["access_events"],
            seed=args["seed"],
        )
    assert [p.field for p in info.value.problems] == [field]
    assert not (tmp_path / "demo").exists()


def test_progress_reports_every_step(tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    generate(
        tmp_path / "demo",
        **TINY,
        seed=1,
        on_progress=lambda step, done, total: seen.append((step, done, total)),
    )
    assert [s[1] for s in seen] == list(range(1, len(seen) + 1))
    assert all(s[2] == len(seen) for s in seen)
    assert seen[-1][0] == "entities"


def test_timeline_constants_are_utc() -> None:
    for instant in (ACCESS_FROM, ACCESS_TO, DEMO_NOW, POLICY_EFFECTIVE, POSTS_FROM):
        assert instant.tzinfo is UTC
