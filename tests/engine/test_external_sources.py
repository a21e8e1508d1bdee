"""External sources read in place: the platform's own Delta table of posts, with its own
column names, on a local path or on S3. Deliveries and the retention plan read it as they
read an imported table; imports into it are refused; a purge is refused unless the source
allows purges, and then runs as a Delta MERGE on the source followed by a vacuum, after
which no version of the source returns a purged post."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from consentry.engine import Lake
from consentry.engine.lake import s3_options
from consentry.errors import BadInput, ConsentryError
from consentry.retention import apply_plan, compute_plan
from consentry.settings import Settings
from consentry.sources.importer import import_arrow
from tests.delivery.conftest import EU_TERMS, LakeHome, make_lake_home, run_cli
from tests.retention.conftest import AT

POST_MAP = {"post_id": "id", "author_id": "user_id", "text": "Body Text"}
"""Canonical column -> the platform's column."""
PURGED = {"p05", "p06", "p08", "p18"}


def _revoke_all(settings: Any, *, post_ids: Any, purged_at: Any, purge_id: str) -> int:
    return len(post_ids)


@pytest.fixture(params=["local", "s3"])
def platform(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the platform keeps its posts table."""
    if request.param == "s3":
        return f"{request.getfixturevalue('s3_lake_uri')}/platform/posts"
    return str(tmp_path / "platform" / "posts")


def _options(location: str) -> dict[str, str]:
    return s3_options(os.environ) if location.startswith("s3://") else {}


def _externalise(home: LakeHome, location: str, *, purge: bool) -> pa.Table:
    """Write the lake's posts as the platform's own Delta table (its column names) and
    register it; returns the posts."""
    posts = home.lake.read_arrow("posts")
    theirs = posts.rename_columns([POST_MAP.get(c, c) for c in posts.column_names])
    write_deltalake(location, theirs, mode="overwrite", storage_options=_options(location))
    mapping = ",".join(f"{k}={v}" for k, v in POST_MAP.items())
    flags = ["--purge"] if purge else []
    added = run_cli(
        home.settings.home, "source", "add", "posts", "--delta", location, "--map", mapping,
        "--replace-imported", *flags,
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    return posts


def test_deliveries_and_plans_read_an_external_source_like_an_imported_table(
    settings: Settings, platform: str
) -> None:
    home = make_lake_home(settings)
    home.add_licensee("eu2", **EU_TERMS)
    before = home.deliver("eu")
    plan_before = compute_plan(settings, at=AT)
    posts = _externalise(home, platform, purge=False)
    lake = Lake.of(settings)
    assert lake.location_of("posts") == platform
    assert lake.read_arrow("posts").sort_by("post_id").equals(posts.sort_by("post_id"))
    after = home.deliver("eu2")
    assert after["counts"] == before["counts"]
    assert sorted(r["post_id"] for r in home.lineage(after["delivery_id"])) == sorted(
        r["post_id"] for r in home.lineage(before["delivery_id"])
    )
    plan = compute_plan(settings, at=AT)
    for category in ("posts", "profile", "consent_evidence"):  # eu2's delivery adds the rest
        assert plan.category(category) == plan_before.category(category), category
    with pytest.raises(ConsentryError, match="read in place from the external source"):
        import_arrow(lake, "posts", posts, origin="test")
    # Not allowed to purge the source: refused before anything changes.
    with pytest.raises(BadInput, match="registered without --purge"):
        apply_plan(settings, plan, revoker=_revoke_all)
    assert DeltaTable(platform, storage_options=_options(platform)).version() == 0


def test_a_purge_runs_on_the_source_as_a_delta_merge_and_a_vacuum(
    settings: Settings, platform: str
) -> None:
    home = make_lake_home(settings)
    home.deliver("open")
    _externalise(home, platform, purge=True)
    purge = apply_plan(settings, compute_plan(settings, at=AT), revoker=_revoke_all)
    assert purge["state"] == "verified", purge["evidence"]
    assert purge["results"]["deleted"]["lake.posts"] == len(PURGED)
    options = _options(platform)
    theirs = DeltaTable(platform, storage_options=options)
    left = set(theirs.to_pyarrow_table()["id"].to_pylist())
    assert not PURGED & left
    assert len(left) == 20 - len(PURGED)
    # The source's own history: the MERGE is its newest commit, and the version before it
    # (which still held the purged posts) can no longer be read.
    assert theirs.history(1)[0]["operation"] == "MERGE"
    with pytest.raises(FileNotFoundError, match="not found"):
        DeltaTable(platform, version=0, storage_options=options).to_pyarrow_table()
    assert purge["results"]["versions_vacuumed"]["posts"] == [0]
    # Column names are the platform's; nothing else of the source changed.
    assert theirs.schema().to_arrow().names[:3] == ["id", "user_id", "created_at"]


ACCESS_MAP = {"request_id": "req", "ts": "served_at", "credential": "api_key"}


def test_an_assessment_reads_access_events_from_a_parquet_source(tmp_path: Path) -> None:
    """The access log as the platform writes it: Parquet files in a folder (with a file in
    a sub-folder), its own column names; the assessment equals the imported table's."""
    home = tmp_path / "home"
    assert run_cli(home, "init").exit_code == 0
    generated = run_cli(
        home, "demo", "generate", "--users", "200", "--posts", "1000",
        "--access-events", "3000", "--seed", "5",
    )  # fmt: skip
    assert generated.exit_code == 0, generated.output
    imported = json.loads(run_cli(home, "scraping", "assess", "--json").stdout)
    assert float(imported["total_amount"]) > 0
    settings = Settings(home=home)
    events = Lake.of(settings).read_arrow("access_events")
    theirs = events.rename_columns([ACCESS_MAP.get(c, c) for c in events.column_names])
    folder = tmp_path / "platform" / "access_log"
    (folder / "2026-12-06").mkdir(parents=True)
    pq.write_table(theirs.slice(0, 1000), folder / "a.parquet")
    pq.write_table(theirs.slice(1000), folder / "2026-12-06" / "b.parquet")
    mapping = ",".join(f"{k}={v}" for k, v in ACCESS_MAP.items())
    added = run_cli(
        home, "source", "add", "access_events", "--parquet", str(folder), "--map", mapping,
        "--replace-imported",
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    read = json.loads(run_cli(home, "scraping", "assess", "--json").stdout)
    for key in ("accesses", "entities", "total_amount"):
        assert read[key] == imported[key], key
    with pytest.raises(ConsentryError, match="parquet source: it has no versions"):
        Lake.of(settings).files("access_events", version=0)
