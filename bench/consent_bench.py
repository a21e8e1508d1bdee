"""Benchmark: bulk consent resolution of every user for one purpose at one instant.

Not a test: nothing is asserted. Run (issue size: 10,000,000 users, 2,000,000 events):

    .venv/bin/python bench/consent_bench.py [--users 10000000] [--events 2000000]
        [--sample 20000] [--purpose ai_training_third_party] [--at 2025-06-01T00:00:00Z]

1. Generate, vectorised with NumPy and Arrow, `users` (string ids, ~25 region codes
   including EU countries, GB and US, birth dates with ~4% minors and ~5% unknown) and
   `consent_events` (on 20% of the users, three purposes, ~12% GPC signals, a third of
   them after the instant asked about) into a temporary lake (`Lake.write_arrow`, zstd
   Parquet parts of 1,000,000 rows).
2. Consentry: `resolve_consent_bulk` on embedded DuckDB, end to end from the lake's
   Parquet files to a materialised Arrow table of one decision per user (the shipped policy).
3. Peer (a): per-user lookups with SQLAlchemy on the real control-plane tables. A sample of
   users goes into `subjects` and their state as of the instant into `consent_state` (SQLite
   in a temporary home, after `Store.migrate()`); one SQL query per user plus the scalar
   `resolve_consent`; the time is extrapolated linearly to all users.
4. Peer (b): the same rules written with pandas (`read_parquet`, sort + `drop_duplicates`
   for the latest event, a left `merge`, `np.select`) on all users.
5. The three answers are compared on the sample (decision, rule, since); each side runs in
   its own process so each peak RSS is its own.
"""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from _common import load_note, print_table, rate, ratio, run_isolated, stopwatch

Answer = tuple[str, str, int | None]
"""(decision, rule, since as microseconds since the epoch) of one user."""

REGIONS: dict[str, float] = {
    # Weights: roughly a global platform's audience; EU/EEA and GB users are opted out
    # by the region defaults of the shipped policy.
    "US": 0.28, "IN": 0.08, "BR": 0.06, "JP": 0.06, "GB": 0.06, "DE": 0.05, "FR": 0.04,
    "ES": 0.04, "IT": 0.03, "MX": 0.03, "CA": 0.03, "TR": 0.03, "ID": 0.03, "KR": 0.02,
    "NL": 0.02, "PL": 0.02, "AU": 0.02, "NG": 0.02, "SE": 0.01, "IE": 0.01, "AT": 0.01,
    "BE": 0.01, "PT": 0.01, "NO": 0.01, "CH": 0.02,
}  # fmt: skip
PURPOSES = ("ai_training_third_party", "ai_training_first_party", "business_partners")
SOURCES = ("settings", "gpc", "api", "support")
_EPOCH_DAY = date(1970, 1, 1)


def _days(d: date) -> int:
    return (d - _EPOCH_DAY).days


def _micros(when: datetime) -> int:
    return int(when.timestamp()) * 1_000_000 + when.microsecond


def generate(lake_dir: str, users: int, events: int, sample: int, at_iso: str, seed: int) -> Any:
    """Write `users` and `consent_events` into a lake at `lake_dir`; return sample ids.

    1. Everything is built with NumPy/Arrow kernels: no Python loop over rows.
    2. Minors are born within 18 years before the instant; ~5% of birth dates are null.
    3. GPC events are always denials (what a GPC signal records).
    """
    from consentry.engine import Lake

    at = datetime.fromisoformat(at_iso)
    rng = np.random.default_rng(seed)
    ids = pc.binary_join_element_wise(
        "u", pc.cast(pa.array(np.arange(users, dtype=np.int64) + 10**11), pa.string()), ""
    )
    codes = np.array(list(REGIONS))
    weights = np.array(list(REGIONS.values()))
    region = codes[rng.choice(len(codes), size=users, p=weights / weights.sum())]
    at_day = _days(at.date())
    minor = rng.random(users) < 0.04
    # Adults: born 1950 .. 18 years before the instant; minors: 13 to 17 years old.
    adult_days = rng.integers(_days(date(1950, 1, 1)), at_day - 18 * 366, users)
    minor_days = rng.integers(at_day - 18 * 365 + 2, at_day - 13 * 365, users)
    birth = np.where(minor, minor_days, adult_days).astype(np.int32)
    created = rng.integers(
        _micros(datetime(2010, 1, 1, tzinfo=UTC)), _micros(at), users, dtype=np.int64
    )
    user_table = pa.table(
        {
            "user_id": ids,
            "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
            "region": pa.array(region, pa.string()),
            "birth_date": pa.array(birth, pa.date32(), mask=rng.random(users) < 0.05),
            "protected": pa.array(rng.random(users) < 0.08),
            "deactivated_at": pa.nulls(users, pa.timestamp("us", tz="UTC")),
            "deleted_at": pa.nulls(users, pa.timestamp("us", tz="UTC")),
        }
    )
    # Events: 20% of users chose at least once; purposes and sources weighted.
    choosers = rng.choice(users, size=max(1, users // 5), replace=False)
    who = np.concatenate([choosers, choosers[rng.integers(0, len(choosers), events)]])[:events]
    source = rng.choice(len(SOURCES), size=events, p=[0.70, 0.12, 0.13, 0.05])
    choice = np.where(
        (source == SOURCES.index("gpc")) | (rng.random(events) < 0.55), "deny", "allow"
    )
    start = _micros(datetime(2024, 11, 15, tzinfo=UTC))
    span = _micros(at) - start
    event_table = pa.table(
        {
            "event_id": pc.binary_join_element_wise(
                "c-", pc.cast(pa.array(np.arange(events, dtype=np.int64)), pa.string()), ""
            ),
            "user_id": ids.take(pa.array(who)),
            "purpose": pa.array(
                np.array(PURPOSES)[rng.choice(3, size=events, p=[0.6, 0.25, 0.15])]
            ),
            "choice": pa.array(choice),
            # A third of the events lie after the instant asked about and must be ignored.
            "at": pa.array(
                (start + rng.integers(0, span * 3 // 2, events)) // 1_000_000 * 1_000_000,
                pa.timestamp("us", tz="UTC"),
            ),
            "source": pa.array(np.array(SOURCES)[source]),
        }
    )
    lake = Lake(Path(lake_dir))
    lake.write_arrow("users", user_table)
    lake.write_arrow("consent_events", event_table)
    picked = ids.take(pa.array(np.sort(rng.choice(users, size=min(sample, users), replace=False))))
    return picked.to_pylist()


def _policy_and_at(at_iso: str) -> tuple[Any, datetime]:
    from consentry.policy import load_policy
    from consentry.settings import DEFAULT_POLICY_FILE

    return load_policy(DEFAULT_POLICY_FILE), datetime.fromisoformat(at_iso)


def _answers(ids: list[str], decisions: list[str], rules: list[str], since: Any) -> dict[str, Any]:
    return dict(zip(ids, zip(decisions, rules, since, strict=True), strict=True))


def run_bulk(lake_dir: str, purpose: str, at_iso: str, sample: list[str]) -> dict[str, Any]:
    """Consentry: Parquet -> DuckDB -> one Arrow table of decisions (timed end to end)."""
    from consentry.engine import Lake, connect
    from consentry.ledger.bulk import resolve_consent_bulk

    policy, at = _policy_and_at(at_iso)
    lake = Lake(Path(lake_dir))
    with stopwatch() as sw:
        con = connect("duckdb")
        expr = resolve_consent_bulk(
            policy, lake.table(con, "users"), lake.table(con, "consent_events"), purpose, at
        )
        result: pa.Table = con.to_pyarrow(expr)
    threads = con.raw_sql("SELECT current_setting('threads')").fetchone()[0]
    rules = result.group_by("rule").aggregate([("rule", "count")]).to_pylist()
    picked = result.filter(pc.is_in(result["user_id"], value_set=pa.array(sample)))
    since = pc.cast(picked["since"], pa.int64()).to_pylist()
    return {
        "seconds": sw.seconds,
        "rows": result.num_rows,
        "threads": int(threads),
        "rules": {r["rule"]: r["rule_count"] for r in rules},
        "answers": _answers(
            picked["user_id"].to_pylist(),
            picked["decision"].to_pylist(),
            picked["rule"].to_pylist(),
            since,
        ),
    }


def run_pandas(lake_dir: str, purpose_key: str, at_iso: str, sample: list[str]) -> dict[str, Any]:
    """Peer (b): the same rules as a pandas pipeline over all users (timed end to end)."""
    import pandas as pd

    from consentry.engine import Lake
    from consentry.ledger.rules import ConsentRule, minor_birth_cutoff
    from consentry.policy import Choice

    policy, at = _policy_and_at(at_iso)
    lake = Lake(Path(lake_dir))
    with stopwatch() as sw:
        version = policy.version_at(at)
        purpose = version.purpose(purpose_key)
        # The peer reads the Delta tables' current files (listed by delta-rs) with pandas.
        users = pq.read_table(
            [str(f) for f in lake.files("users")], columns=["user_id", "region", "birth_date"]
        ).to_pandas()
        events = pq.read_table(
            [str(f) for f in lake.files("consent_events")],
            columns=["user_id", "purpose", "choice", "at", "source", "event_id"],
        ).to_pandas()
        events = events[(events["purpose"] == purpose_key) & (events["at"] <= pd.Timestamp(at))]
        latest = events.sort_values(["user_id", "at", "event_id"]).drop_duplicates(
            "user_id", keep="last"
        )
        merged = users.merge(
            latest[["user_id", "choice", "at", "source"]], on="user_id", how="left"
        )
        birth = pd.to_datetime(merged["birth_date"])
        cutoff = pd.Timestamp(minor_birth_cutoff(at, version.age_of_majority))
        unknown = birth.isna().to_numpy()
        minor = (birth > cutoff).to_numpy()
        has_event = merged["choice"].notna().to_numpy()
        gpc = (merged["source"] == "gpc").fillna(False).to_numpy(dtype=bool)
        regional = purpose.resolved_region_defaults()
        region = merged["region"].str.upper()
        covered = region.isin(list(regional)).to_numpy()
        region_choice = region.map({k: v.value for k, v in regional.items()}).to_numpy(dtype=object)
        blocked_unknown = unknown & (purpose.unknown_age is Choice.DENY)
        blocked_minor = minor & (purpose.minors is Choice.DENY)
        conditions = [blocked_unknown, blocked_minor, has_event & gpc, has_event, covered]
        decision = np.select(
            conditions,
            ["deny", "deny", merged["choice"].to_numpy(dtype=object),
             merged["choice"].to_numpy(dtype=object), region_choice],
            default=purpose.default.value,
        )  # fmt: skip
        rule = np.select(
            conditions,
            [ConsentRule.UNKNOWN_AGE.value, ConsentRule.MINOR.value, ConsentRule.GPC.value,
             ConsentRule.EXPLICIT.value, ConsentRule.REGION_DEFAULT.value],
            default=ConsentRule.DEFAULT.value,
        )  # fmt: skip
        effective = pd.Timestamp(version.effective_from)
        since = merged["at"].where(has_event & ~blocked_unknown & ~blocked_minor, effective)
        result = pd.DataFrame(
            {
                "user_id": merged["user_id"],
                "decision": decision,
                "rule": rule,
                "policy_version": version.version,
                "since": since,
            }
        )
    picked = result[result["user_id"].isin(sample)]
    micros = picked["since"].dt.as_unit("us").astype("int64").tolist()
    return {
        "seconds": sw.seconds,
        "rows": len(result),
        "answers": _answers(
            picked["user_id"].tolist(), picked["decision"].tolist(), picked["rule"].tolist(), micros
        ),
    }


def run_sqlalchemy(
    lake_dir: str, home: str, purpose: str, at_iso: str, sample: list[str]
) -> dict[str, Any]:
    """Peer (a): per-user lookups on `subjects` + `consent_state`, then `resolve_consent`.

    1. Setup (not timed): migrate a SQLite store; load the sample's subjects and their
       latest event per purpose at or before the instant (the state as of that instant).
    2. Timed: for each sample user, one SELECT joining the subject to its state row for the
       purpose, then the scalar rule.
    """
    import sqlalchemy as sa

    from consentry.engine import Lake, connect
    from consentry.ledger.rules import LatestChoice, SubjectFacts, resolve_consent
    from consentry.policy import Choice
    from consentry.settings import Settings
    from consentry.store import open_store
    from consentry.store.models import ConsentStateRow, Subject

    policy, at = _policy_and_at(at_iso)
    lake = Lake(Path(lake_dir))
    con = connect("duckdb")
    wanted = pa.table({"user_id": pa.array(sample, pa.string())})
    con.create_table("wanted", wanted)
    users = lake.table(con, "users")
    events = lake.table(con, "consent_events")
    picked = users.semi_join(con.table("wanted"), "user_id")
    relevant = events.filter(events.at <= at).semi_join(con.table("wanted"), "user_id")
    state = (
        relevant.mutate(_best=relevant.at.max().over(group_by=["user_id", "purpose"]))
        .filter(lambda t: t.at == t._best)
        .order_by(["user_id", "purpose", "event_id"])
    )
    subjects = con.to_pyarrow(picked).to_pylist()
    state_rows: dict[tuple[str, str], dict[str, Any]] = {}
    for row in con.to_pyarrow(state.drop("_best")).to_pylist():  # setup only: the sample
        state_rows[(row["user_id"], row["purpose"])] = row  # ordered: largest event_id wins
    store = open_store(Settings(home=Path(home)).resolved_database_url)
    store.migrate()
    with store.session() as session:
        session.execute(sa.insert(Subject), subjects)
        session.execute(
            sa.insert(ConsentStateRow),
            [{k: r[k] for k in ("user_id", "purpose", "choice", "at", "source", "event_id")}
             for r in state_rows.values()],
        )  # fmt: skip

    query = (
        sa.select(
            Subject.region,
            Subject.birth_date,
            ConsentStateRow.choice,
            ConsentStateRow.at,
            ConsentStateRow.source,
            ConsentStateRow.event_id,
        )
        .select_from(Subject)
        .outerjoin(
            ConsentStateRow,
            sa.and_(ConsentStateRow.user_id == Subject.user_id, ConsentStateRow.purpose == purpose),
        )
        .where(Subject.user_id == sa.bindparam("uid"))
    )
    answers: dict[str, Answer] = {}
    with stopwatch() as sw, store.session() as session:
        for uid in sample:  # the peer's way: one lookup per user
            row = session.execute(query, {"uid": uid}).one_or_none()
            facts = SubjectFacts(uid, row.region, row.birth_date) if row else SubjectFacts(uid)
            latest = (
                LatestChoice(Choice(row.choice), row.at, row.source, row.event_id)
                if row is not None and row.choice is not None
                else None
            )
            decision = resolve_consent(policy, facts, purpose, at, latest)
            answers[uid] = (
                decision.decision.value,
                decision.rule.value,
                _micros(decision.since) if decision.since else None,
            )
    store.close()
    return {"seconds": sw.seconds, "rows": len(sample), "answers": answers}


def _agreement(ours: dict[str, Any], theirs: dict[str, Any]) -> float:
    same = sum(1 for uid, answer in ours.items() if theirs.get(uid) == tuple(answer))
    return 100.0 * same / max(1, len(ours))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000_000, help="users to resolve")
    parser.add_argument("--events", type=int, default=2_000_000, help="consent events")
    parser.add_argument(
        "--sample", type=int, default=20_000, help="users for the per-user peer and agreement"
    )
    parser.add_argument("--purpose", default="ai_training_third_party")
    parser.add_argument("--at", default="2025-06-01T00:00:00+00:00", help="RFC 3339 instant")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-pandas", action="store_true", help="omit peer (b)")
    args = parser.parse_args(argv)
    at_iso = datetime.fromisoformat(args.at.replace("Z", "+00:00")).astimezone(UTC).isoformat()

    with tempfile.TemporaryDirectory(prefix="consentry-bench-") as tmp:
        lake_dir = str(Path(tmp) / "lake")
        with stopwatch() as gen:
            made = run_isolated(
                generate, lake_dir, args.users, args.events, args.sample, at_iso, args.seed
            )
        sample: list[str] = made.value
        print(
            f"input: {args.users:,} users, {args.events:,} consent events, purpose "
            f"{args.purpose}, at {at_iso} (generated in {gen.seconds:.1f} s, "
            f"peak RSS {made.peak_rss_mib:,.0f} MiB); {load_note()}"
        )
        bulk = run_isolated(run_bulk, lake_dir, args.purpose, at_iso, sample)
        per_user = run_isolated(
            run_sqlalchemy, lake_dir, str(Path(tmp) / "home"), args.purpose, at_iso, sample
        )
        pandas = (
            None
            if args.skip_pandas
            else run_isolated(run_pandas, lake_dir, args.purpose, at_iso, sample)
        )

    ours = rate(bulk.value["rows"], bulk.value["seconds"])
    per_user_rate = rate(per_user.value["rows"], per_user.value["seconds"])
    rows: list[list[Any]] = [
        [
            "consentry bulk (DuckDB -> Arrow)",
            bulk.value["rows"],
            bulk.value["seconds"],
            round(ours),
            "1.0x",
            bulk.peak_rss_mib,
            "-",
        ],
        [
            "per-user SQLAlchemy (extrapolated)",
            per_user.value["rows"],
            args.users / per_user_rate if per_user_rate else 0.0,
            round(per_user_rate),
            ratio(ours, per_user_rate),
            per_user.peak_rss_mib,
            f"{_agreement(bulk.value['answers'], per_user.value['answers']):.2f}%",
        ],
    ]
    if pandas is not None:
        pandas_rate = rate(pandas.value["rows"], pandas.value["seconds"])
        rows.append(
            [
                "pandas merge",
                pandas.value["rows"],
                pandas.value["seconds"],
                round(pandas_rate),
                ratio(ours, pandas_rate),
                pandas.peak_rss_mib,
                f"{_agreement(bulk.value['answers'], pandas.value['answers']):.2f}%",
            ]
        )
    print_table(
        f"bulk consent resolution ({args.users:,} users; agreement on {len(sample):,} sampled)",
        ["side", "rows", "seconds", "decisions/s", "consentry is", "peak RSS MiB", "agreement"],
        rows,
    )
    print(
        f"\nper-user peer measured on {per_user.value['rows']:,} users; its seconds are "
        f"extrapolated to {args.users:,}."
    )
    counts = ", ".join(f"{k} {v:,}" for k, v in sorted(bulk.value["rules"].items()))
    print(f"decisions by rule: {counts}")
    print(f"DuckDB threads: {bulk.value['threads']}; result materialised as an Arrow table")
    print(f"target: >= 2,000,000 decisions/s; measured {ours:,.0f} decisions/s; {load_note()}")


if __name__ == "__main__":
    main()
