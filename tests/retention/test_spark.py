"""The same candidate code on DuckDB and on Spark gives the same plan, hash for hash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from consentry.engine import Lake, connect
from consentry.keys import Keyring
from consentry.retention import add_hold, compute_plan
from consentry.settings import Settings
from consentry.store import open_store
from tests.delivery.conftest import make_lake_home
from tests.retention.conftest import write_policy

pytestmark = pytest.mark.spark


def test_duckdb_and_spark_plan_alike(tmp_path: Path, spark_session: Any) -> None:
    # Calendar durations (month-end clamping in the engines), an exact grace, anonymisation,
    # a user hold and an entity hold: every branch of the candidate expressions.
    policy = write_policy(
        tmp_path / "p.yaml",
        """\
        posts: {max_age: 18 months, after_post_deleted: 7 days}
        profile: {after_account_deleted: 1 month, action: anonymise, fields: [birth_date, region]}
        consent_evidence: {while_account_active: true, max_age: 1 year}
        access_events: {max_age: 6 months, action: anonymise, fields: [credential]}
        deliveries: {max_age: 6 years}
        audit: {max_age: 10 years}
        """,
    )
    home = make_lake_home(Settings(home=tmp_path / "home", policy_file=policy))
    month_ends = [
        datetime(2024, 8, d, h, tzinfo=UTC) for d, h in ((31, 0), (29, 12), (31, 0), (28, 0))
    ]
    Lake.of(home.settings).write_arrow(
        "access_events",
        pa.table(
            {
                "request_id": [f"r{i}" for i in range(6)],
                "ts": pa.array(
                    month_ends + [datetime(2025, 9, 1, tzinfo=UTC)] * 2,
                    pa.timestamp("us", tz="UTC"),
                ),
                "credential": ["k1", "k2", "anon:x", "k2", "k3", "k-acme"],
                "posts": [1, 2, 3, 4, 5, 6],
                "endpoint": [None] * 6,
            }
        ),
    )
    Lake.of(home.settings).write_arrow(
        "entities",
        pa.table(
            {
                "credential": ["k1"],
                "entity": ["acme"],
                "valid_from": pa.array([None], pa.timestamp("us", tz="UTC")),
                "valid_to": pa.array(
                    [datetime(2024, 9, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC")
                ),
            }
        ),
    )
    with open_store(home.settings.resolved_database_url) as store:
        keyring = Keyring.for_settings(home.settings)
        add_hold(store, keyring, matter="m", reason="r", scope="user", target="u-de-in")
        add_hold(store, keyring, matter="m", reason="r", scope="entity", target="acme")
    at = datetime(2025, 2, 28, tzinfo=UTC)
    duck = compute_plan(home.settings, at=at, engine="duckdb", owners=True)
    spark = compute_plan(
        home.settings, at=at, backend=connect("spark", spark=spark_session), owners=True
    )
    assert (duck.meta["engine"], spark.meta["engine"]) == ("duckdb", "pyspark")
    assert spark.categories == duck.categories
    assert spark.plan_sha256 == duck.plan_sha256
    access = duck.category("access_events")
    # 31 Aug 00:00 + 6 months = 28 Feb 00:00 (due): r0 (acme's key then: held), r2 (already
    # anonymised: done); 28 Aug: r3 due; 29 Aug 12:00 clamps to 28 Feb 12:00 (not yet).
    assert (access.anonymise, access.held, access.done, access.keep) == (1, 1, 1, 3)
    assert duck.category("posts").held >= 1
    assert timedelta(0) < datetime.now(UTC) - at
