"""Benchmark: build one licensed delivery end to end, against a pandas pipeline and Presidio.

Not a test: nothing is asserted. Run (defaults: the issue's size, 10,000,000 posts by
1,000,000 users, ~3-4 minutes on 2 cores); a quick run and the 20M-post memory check:

    .venv/bin/python bench/delivery.py
    .venv/bin/python bench/delivery.py --users 100000 --posts 1000000 --pandas-posts 100000
    .venv/bin/python bench/delivery.py --users 2000000 --posts 20000000 --skip-pandas \
        --skip-presidio [--duckdb-memory-limit 2GB]

1. Generate the demo platform with `consentry.demo.generate_tables` (vectorised) and put
   users, consent events and posts into a temporary lake (`Lake.write_arrow`; posts are
   copied row group by row group, so generation memory stays bounded).
2. Consentry: `build_delivery` on embedded DuckDB for a licensee of `--purpose` with every
   region and language, at `--as-of`, timed end to end: eligibility, minimisation,
   pseudonyms, zstd Parquet parts, lineage, manifest and signature. The ledger events are
   the lake's consent events up to the cut-off (what `Ledger.events_arrow` returns after
   `sync_ledger`), fed to the build as Arrow.
3. Peer 1: the same rules as a pandas pipeline (merge posts, users and each author's latest
   consent; the same checks in order; minimisation with `str.replace` regexes; HMAC with
   hashlib per row; `to_parquet`) on the first `--pandas-posts` posts, its time extrapolated
   linearly to all posts. The delivered post sets of both are compared on that sample.
4. Peer 2: Presidio's pattern recognisers (e-mail, phone, URL, IP, credit card; no NLP
   engine, no NER model) plus `AnonymizerEngine` replace, per post on `--presidio-posts`
   texts, compared per post with Consentry's build time / posts considered. Skipped with an
   install hint when presidio is not installed.
5. Every side runs in its own (spawned) process, so each peak RSS (`ru_maxrss`) is its own.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import print_table, rate, ratio, run_isolated, stopwatch
from consentry.settings import Settings

KEY = b"bench-licensee-secret-32-bytes!!"
"""The licensee's pseudonymisation secret (both sides use it, so record ids compare)."""


def _as_of(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


# ---------------------------------------------------------------------------------------
# Data


def generate(root: str, users: int, posts: int, seed: int) -> dict[str, int]:
    """Generate the demo into `root/demo` and load users, consent events and posts into the
    lake at `root/lake`; return row counts."""
    import pyarrow.parquet as pq

    from consentry.demo.generator import generate_tables
    from consentry.engine import Lake
    from consentry.engine.lake import PARQUET_COMPRESSION

    demo = Path(root) / "demo"
    demo.mkdir(parents=True)
    generate_tables(demo, users=users, posts=posts, access_events=60_000, seed=seed)
    lake = Lake(Path(root) / "lake")
    for name in ("users", "consent_events"):
        lake.write_arrow(name, pq.read_table(demo / f"{name}.parquet"))
    source = pq.ParquetFile(demo / "posts.parquet")
    with lake.writing("posts") as staging:
        for group in range(source.metadata.num_row_groups):
            pq.write_table(
                source.read_row_group(group),
                staging / f"part-{group:06d}.parquet",
                compression=PARQUET_COMPRESSION,
            )
    for path in demo.glob("*.parquet"):
        path.unlink()
    return lake.row_counts()


def _ledger_events(lake_dir: str, as_of: datetime) -> Any:
    """The consent events at or before `as_of`, as the ledger hands them to the build."""
    import pyarrow.compute as pc

    from consentry.engine import Lake

    events = Lake(Path(lake_dir)).read_arrow("consent_events")
    events = events.filter(pc.less_equal(events["at"], as_of))
    return events.select(["user_id", "purpose", "choice", "at", "source", "event_id"])


# ---------------------------------------------------------------------------------------
# Consentry


def run_consentry(
    root: str, purpose: str, as_of_text: str, memory_limit: str | None
) -> dict[str, Any]:
    """`build_delivery` on DuckDB, timed end to end (connect to signed manifest)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from consentry.delivery.build import (
        LINEAGE_FILE,
        LINEAGE_TABLE,
        DeliveryTarget,
        build_delivery,
        new_delivery_id,
        stage_lineage,
    )
    from consentry.delivery.eligibility import LicenceScope
    from consentry.engine import Lake, connect
    from consentry.policy import load_policy
    from consentry.settings import DEFAULT_POLICY_FILE
    from consentry.signing import Signer

    as_of = _as_of(as_of_text)
    lake_dir = str(Path(root) / "lake")
    policy = load_policy(DEFAULT_POLICY_FILE)
    events = _ledger_events(lake_dir, as_of)
    target = DeliveryTarget("bench-licensee", LicenceScope.build(purpose), KEY)
    lake = Lake(Path(lake_dir))
    delivery_id = new_delivery_id(as_of)
    staging = Path(root) / "deliveries" / f".staging-{delivery_id}"
    phases: list[tuple[str, float]] = []
    cpu_before = _cpu_seconds()
    with stopwatch() as sw:
        started = time.perf_counter()
        backend = connect("duckdb")
        if memory_limit:
            backend.raw_sql(f"SET memory_limit = '{memory_limit}'")
            backend.raw_sql(f"SET temp_directory = '{Path(root) / 'duckdb-spill'}'")
        staging.mkdir(parents=True)
        manifest = build_delivery(
            backend=backend,
            lake=lake,
            policy=policy,
            events=events,
            target=target,
            as_of=as_of,
            delivery_id=delivery_id,
            staging=staging,
            signer=Signer(Ed25519PrivateKey.generate()),
            engine="duckdb",
            on_progress=lambda step: phases.append((step, time.perf_counter() - started)),
        )
        # The service does this as a job with its store transaction; the bench has no store.
        token = secrets.token_hex(8)
        stage_lineage(lake, staging / LINEAGE_FILE, token)
        lake.publish(LINEAGE_TABLE, token)
        os.replace(staging, Path(root) / "deliveries" / delivery_id)
    return {
        "seconds": sw.seconds,
        "cpu_seconds": _cpu_seconds() - cpu_before,
        "counts": manifest["counts"],
        "delivery_id": manifest["delivery_id"],
        "phases": phases,
        "files": len(manifest["files"]),
        "bytes": sum(
            (Path(root) / "deliveries" / manifest["delivery_id"] / f["name"]).stat().st_size
            for f in manifest["files"]
        ),
    }


def delivered_sample(root: str, delivery_id: str, sample_posts: int) -> dict[str, str]:
    """Consentry's delivery restricted to the first `sample_posts` posts: post_id -> text."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from consentry.delivery.build import LINEAGE_TABLE
    from consentry.engine import Lake

    lake = Lake(Path(root) / "lake")
    sample_ids = _first_posts(lake, sample_posts, ["post_id"]).column("post_id")
    lineage = lake.read_arrow(LINEAGE_TABLE)
    lineage = lineage.filter(
        pc.and_(
            pc.equal(lineage["delivery_id"], delivery_id),
            pc.is_in(lineage["post_id"], value_set=sample_ids),
        )
    )
    parts = sorted((Path(root) / "deliveries" / delivery_id).glob("part-*.parquet"))
    records = pq.read_table(parts, columns=["record_id", "text"])
    records = records.filter(pc.is_in(records["record_id"], value_set=lineage["record_id"]))
    text_of = dict(zip(records["record_id"].to_pylist(), records["text"].to_pylist(), strict=True))
    by_post = pa.table({"post_id": lineage["post_id"], "record_id": lineage["record_id"]})
    return {
        post: text_of[record]
        for post, record in zip(
            by_post["post_id"].to_pylist(), by_post["record_id"].to_pylist(), strict=True
        )
    }


def _first_posts(lake: Any, count: int, columns: list[str] | None = None) -> Any:
    """The first `count` posts of the lake (its parts in order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    held = 0
    for path in lake.files("posts"):
        if held >= count:
            break
        table = pq.read_table(path, columns=columns)
        tables.append(table.slice(0, count - held))
        held += tables[-1].num_rows
    return pa.concat_tables(tables)


# ---------------------------------------------------------------------------------------
# Peer 1: pandas

# What a pandas user would write: one regex per kind, applied with `str.replace`.
_PANDAS_RULES = (
    (r"(?:https?://|www\.)\S*?(?:\?\S+|/(?:users?|u|in|profiles?|members?|people)/\S+|/@\S+)",
     "<URL>"),
    (r"(?<![\w.%+@/-])@[A-Za-z_À-ÖØ-öø-ɏ][\wÀ-ÖØ-öø-ɏ]*(?:@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,})?",
     "<HANDLE>"),
    (r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}", "<EMAIL>"),
    (r"(?<![\d_+.,])(?:\d{4}[ -]\d{4}[ -]\d{4}[ -]\d{1,4}|\d{4}[ -]\d{6}[ -]\d{4,5}|\d{13,19})"
     r"(?!\d)", "<CARD>"),
    (r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d))"
     r"{3}|(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{0,4})(?![\w.])", "<IP>"),
    (r"(?<![\w+.,/#-])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d+(?:[ .-]\d+)*"
     r"|\(\d{2,5}\)[ -]?\d{2,8}(?:[ ./-]\d{2,8})*|\d{2,5}(?:[ ./-]\d{2,8}){1,4})", "<PHONE>"),
)  # fmt: skip


def _pandas_consent(policy: Any, subjects: Any, events: Any, purpose_key: str, at: datetime) -> Any:
    """Decision per subject (`user_id`, `region`, `birth_date`) with the consent rules."""
    import numpy as np
    import pandas as pd

    from consentry.ledger.rules import minor_birth_cutoff
    from consentry.policy import Choice

    version = policy.version_at(at)
    purpose = version.purpose(purpose_key) if version else None
    if version is None or purpose is None:
        return pd.Series("deny", index=subjects.index)
    mine = events[events["purpose"] == purpose_key]
    latest = mine.sort_values(["user_id", "at", "event_id"]).drop_duplicates("user_id", keep="last")
    merged = subjects[["user_id", "region", "birth_date"]].merge(
        latest[["user_id", "choice"]], on="user_id", how="left"
    )
    birth = pd.to_datetime(merged["birth_date"])
    cutoff = pd.Timestamp(minor_birth_cutoff(at, version.age_of_majority))
    unknown = birth.isna().to_numpy()
    minor = (birth > cutoff).to_numpy()
    regional = {k: v.value for k, v in purpose.resolved_region_defaults().items()}
    region_choice = merged["region"].str.upper().map(regional)
    decision = np.select(
        [
            unknown & (purpose.unknown_age is Choice.DENY),
            minor & (purpose.minors is Choice.DENY),
            merged["choice"].notna().to_numpy(),
            region_choice.notna().to_numpy(),
        ],
        ["deny", "deny", merged["choice"].to_numpy(dtype=object),
         region_choice.to_numpy(dtype=object)],
        default=purpose.default.value,
    )  # fmt: skip
    return pd.Series(decision, index=subjects.index)


def run_pandas(root: str, purpose: str, as_of_text: str, sample_posts: int) -> dict[str, Any]:
    """Peer 1: the delivery's rules as a pandas pipeline on the first `sample_posts` posts."""
    import hashlib
    import hmac

    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    from consentry.delivery.eligibility import REASON_ORDER
    from consentry.engine import Lake
    from consentry.policy import AIPREF_CATEGORIES, load_policy
    from consentry.settings import DEFAULT_POLICY_FILE

    as_of = _as_of(as_of_text)
    lake = Lake(Path(root) / "lake")
    policy = load_policy(DEFAULT_POLICY_FILE)
    out = Path(root) / "pandas-delivery"
    out.mkdir(exist_ok=True)
    posts_arrow = _first_posts(lake, sample_posts)
    events_arrow = _ledger_events(str(lake.root), as_of)
    cpu_before = _cpu_seconds()
    with stopwatch() as sw:
        posts = posts_arrow.to_pandas()
        users = pq.read_table([str(f) for f in lake.files("users")]).to_pandas()
        events = events_arrow.to_pandas()
        cutoff = pd.Timestamp(as_of)
        # Authors with their facts (unknown authors keep NaN facts) and consent.
        authors = pd.DataFrame({"user_id": posts["author_id"].unique()})
        authors = authors.merge(users, on="user_id", how="left", indicator=True)
        authors["known"] = authors["_merge"] == "both"
        authors["consent"] = _pandas_consent(policy, authors, events, purpose, as_of)
        frame = posts.merge(
            authors.drop(columns=["_merge", "created_at"]).rename(
                columns={"user_id": "author_id", "deleted_at": "author_deleted_at"}
            ),
            on="author_id",
            how="left",
        )
        checks = [
            frame["created_at"] > cutoff,
            frame["visibility"] != "public",
            (frame["deleted_at"] <= cutoff).fillna(False),
            ~frame["known"],
            (frame["author_deleted_at"] <= cutoff).fillna(False),
            (frame["deactivated_at"] <= cutoff).fillna(False),
            frame["protected"].fillna(False).astype(bool),
            pd.Series(False, index=frame.index),  # every region
            pd.Series(False, index=frame.index),  # every language
            pd.Series(False, index=frame.index),  # no period
            frame["consent"] != "allow",
        ]
        reasons = np.select(
            [c.to_numpy(dtype=bool) for c in checks], [r.value for r in REASON_ORDER], "-"
        )
        counts = pd.Series(reasons).value_counts().to_dict()
        eligible = frame[reasons == "-"].copy()
        # The author's intents: per AIPREF category, any deny among its purposes wins.
        version = policy.version_at(as_of)
        voters = [p for p in (version.purposes if version else []) if p.aipref]
        ok_authors = authors[authors["user_id"].isin(eligible["author_id"])].copy()
        denied = {
            p.key: _pandas_consent(policy, ok_authors, events, p.key, as_of) == "deny"
            for p in voters
        }
        parts = []
        for category in AIPREF_CATEGORIES:
            votes = [denied[p.key] for p in voters if category in p.aipref]
            if votes:
                any_deny = np.logical_or.reduce([v.to_numpy() for v in votes])
                parts.append(np.where(any_deny, f"{category}=n", f"{category}=y"))
        ok_authors["author_intents"] = (
            pd.DataFrame(parts).T.apply(", ".join, axis=1).to_numpy() if parts else ""
        )
        eligible = eligible.merge(
            ok_authors[["user_id", "author_intents"]].rename(columns={"user_id": "author_id"}),
            on="author_id",
        )
        text = eligible["text"]
        for pattern, placeholder in _PANDAS_RULES:
            text = text.str.replace(pattern, placeholder, regex=True)
        delivered = pd.DataFrame(
            {
                "record_id": [
                    hmac.new(KEY, p.encode(), hashlib.sha256).hexdigest()
                    for p in eligible["post_id"]
                ],
                "author_ref": [
                    hmac.new(KEY, a.encode(), hashlib.sha256).hexdigest()
                    for a in eligible["author_id"]
                ],
                "created_at": eligible["created_at"].dt.floor("h"),
                "lang": eligible["lang"],
                "text": text,
                "author_intents": eligible["author_intents"],
            }
        )
        order = np.argsort(delivered["record_id"].to_numpy(dtype=object), kind="stable")
        delivered = delivered.iloc[order]
        delivered.to_parquet(out / "part-00000.parquet", compression="zstd", index=False)
        lineage = pd.DataFrame(
            {
                "record_id": delivered["record_id"].to_numpy(),
                "post_id": eligible["post_id"].to_numpy()[order],
                "author_id": eligible["author_id"].to_numpy()[order],
            }
        )
        lineage.to_parquet(out / "lineage.parquet", compression="zstd", index=False)
    return {
        "seconds": sw.seconds,
        "cpu_seconds": _cpu_seconds() - cpu_before,
        "considered": len(posts),
        "counts": {k: int(v) for k, v in counts.items()},
        "delivered": dict(
            zip(lineage["post_id"].tolist(), delivered["text"].tolist(), strict=True)
        ),
    }


# ---------------------------------------------------------------------------------------
# Peer 2: Presidio


def presidio_available() -> bool:
    import importlib.util

    return all(
        importlib.util.find_spec(name) is not None
        for name in ("presidio_analyzer", "presidio_anonymizer")
    )


def run_presidio(root: str, sample: int) -> dict[str, Any]:
    """Peer 2: Presidio pattern recognisers + AnonymizerEngine replace, post by post."""
    import importlib

    from consentry.engine import Lake

    # Through importlib: presidio is optional, and typed or not depending on the install.
    recognisers = importlib.import_module("presidio_analyzer.predefined_recognizers")
    anonymizing = importlib.import_module("presidio_anonymizer")
    operator = importlib.import_module("presidio_anonymizer.entities").OperatorConfig

    texts = _first_posts(Lake(Path(root) / "lake"), sample, ["text"]).column("text").to_pylist()
    recognizers = [
        recognisers.EmailRecognizer(),
        recognisers.PhoneRecognizer(),
        recognisers.UrlRecognizer(),
        recognisers.IpRecognizer(),
        recognisers.CreditCardRecognizer(),
    ]
    anonymizer = anonymizing.AnonymizerEngine()
    operators = {
        entity: operator("replace", {"new_value": placeholder})
        for entity, placeholder in (
            ("EMAIL_ADDRESS", "<EMAIL>"),
            ("PHONE_NUMBER", "<PHONE>"),
            ("URL", "<URL>"),
            ("IP_ADDRESS", "<IP>"),
            ("CREDIT_CARD", "<CARD>"),
        )
    }
    found = 0
    with stopwatch() as sw:
        for text in texts:  # the peer's way: one post at a time
            results = []
            for recognizer in recognizers:
                results += recognizer.analyze(
                    text, recognizer.supported_entities, nlp_artifacts=None
                )
            found += len(results)
            anonymizer.anonymize(text=text, analyzer_results=results, operators=operators)
    return {"seconds": sw.seconds, "posts": len(texts), "entities": found}


# ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000, help="users")
    parser.add_argument("--posts", type=int, default=10_000_000, help="posts")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--purpose", default="ai_training_third_party")
    parser.add_argument("--as-of", default="2025-07-01T00:00:00Z", help="RFC 3339 cut-off")
    parser.add_argument(
        "--pandas-posts", type=int, default=500_000, help="posts the pandas peer runs on"
    )
    parser.add_argument(
        "--presidio-posts", type=int, default=5_000, help="posts the Presidio peer runs on"
    )
    parser.add_argument(
        "--duckdb-memory-limit",
        default=Settings().duckdb_memory_limit,
        help="DuckDB memory_limit for the build (spills to a temp dir); default: the "
        "CONSENTRY_DUCKDB_MEMORY_LIMIT default that `consentry deliver` uses",
    )
    parser.add_argument("--skip-pandas", action="store_true", help="omit peer 1")
    parser.add_argument("--skip-presidio", action="store_true", help="omit peer 2")
    args = parser.parse_args(argv)
    as_of_text = _as_of(args.as_of).isoformat()

    with tempfile.TemporaryDirectory(prefix="consentry-delivery-bench-") as root:
        with stopwatch() as gen:
            made = run_isolated(generate, root, args.users, args.posts, args.seed)
        print(
            f"input: {made.value['posts']:,} posts by {made.value['users']:,} users, "
            f"{made.value['consent_events']:,} consent events (generated and loaded in "
            f"{gen.seconds:.1f} s, peak RSS {made.peak_rss_mib:,.0f} MiB); licensee purpose "
            f"{args.purpose}, as_of {as_of_text}, cores {os.cpu_count()}, load average "
            f"{os.getloadavg()[0]:.1f}"
        )
        ours = run_isolated(run_consentry, root, args.purpose, as_of_text, args.duckdb_memory_limit)
        built = ours.value
        considered = built["counts"]["considered"]
        our_rate = rate(considered, built["seconds"])
        rows: list[list[Any]] = [
            [
                "consentry build_delivery (DuckDB)",
                considered,
                built["counts"]["delivered"],
                built["seconds"],
                built["cpu_seconds"],
                round(our_rate),
                "1.0x",
                ours.peak_rss_mib,
            ]
        ]
        agreement = ""
        sample = min(args.pandas_posts, considered)
        if not args.skip_pandas and sample > 0:
            peer = run_isolated(run_pandas, root, args.purpose, as_of_text, sample)
            pandas_rate = rate(peer.value["considered"], peer.value["seconds"])
            rows.append(
                [
                    f"pandas pipeline ({sample:,} posts, extrapolated)",
                    considered,
                    "-",
                    considered / pandas_rate if pandas_rate else 0.0,
                    peer.value["cpu_seconds"] * considered / max(1, sample),
                    round(pandas_rate),
                    ratio(our_rate, pandas_rate),
                    peer.peak_rss_mib,
                ]
            )
            mine = run_isolated(delivered_sample, root, built["delivery_id"], sample).value
            theirs = peer.value["delivered"]
            same_posts = set(mine) == set(theirs)
            same_text = sum(1 for post, text in mine.items() if theirs.get(post) == text)
            agreement = (
                f"agreement on the first {sample:,} posts: delivered post sets "
                f"{'identical' if same_posts else 'DIFFER'} ({len(mine):,} ours, "
                f"{len(theirs):,} pandas); minimised texts equal for {same_text:,} of "
                f"{len(mine):,} ({100.0 * same_text / max(1, len(mine)):.2f}%; the pandas "
                f"regexes have no Luhn or shape checks)"
            )
        presidio_line = ""
        if args.skip_presidio:
            presidio_line = "Presidio peer skipped (--skip-presidio)."
        elif not presidio_available():
            presidio_line = (
                "Presidio peer skipped: not installed. For this measurement only: "
                "`.venv/bin/pip install presidio-analyzer presidio-anonymizer` "
                "(pattern recognisers only; no spaCy model is needed)."
            )
        else:
            peer2 = run_isolated(run_presidio, root, args.presidio_posts)
            per_post = peer2.value["seconds"] / max(1, peer2.value["posts"])
            ours_per_post = built["seconds"] / max(1, considered)
            rows.append(
                [
                    f"Presidio patterns ({peer2.value['posts']:,} posts, extrapolated)",
                    considered,
                    "-",
                    per_post * considered,
                    "-",
                    round(1 / per_post) if per_post else 0,
                    ratio(per_post, ours_per_post),
                    peer2.peak_rss_mib,
                ]
            )
            presidio_line = (
                f"per post: consentry {ours_per_post * 1e6:,.2f} µs (whole build / posts "
                f"considered), Presidio {per_post * 1e6:,.1f} µs (minimisation only; "
                f"{peer2.value['entities']:,} entities found)"
            )
    print_table(
        f"licensed delivery build ({considered:,} posts considered)",
        [
            "side",
            "posts",
            "delivered",
            "seconds",
            "CPU s",
            "posts/s",
            "consentry is",
            "peak RSS MiB",
        ],
        rows,
    )
    print()
    phases = built["phases"]
    steps = [f"{name} at {at:.1f} s" for name, at in phases]
    print(f"consentry phases: {'; '.join(steps)}; done at {built['seconds']:.1f} s")
    print(
        f"delivered {built['counts']['delivered']:,} records in {built['files']} part files "
        f"({built['bytes'] / 2**20:,.0f} MiB); excluded: "
        + ", ".join(f"{k} {v:,}" for k, v in built["counts"]["excluded"].items() if v)
    )
    if agreement:
        print(agreement)
    print(presidio_line)
    print(
        f"targets: >= 1,000,000 posts/s (measured {our_rate:,.0f}); peak RSS < 2 GiB at 20M "
        f"posts (measured {ours.peak_rss_mib:,.0f} MiB at {considered:,}); >= 100x Presidio "
        f"per post; >= 5x pandas"
    )


if __name__ == "__main__":
    main()
