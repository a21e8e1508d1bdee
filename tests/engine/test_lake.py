"""The lake: Delta tables, atomic commits, two-phase publish, time travel, vacuum, reads
through Arrow and DuckDB. Every table is read back with delta-rs's own reader as well."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from consentry.engine import ENGINES, Lake, connect
from consentry.errors import BadInput, ConsentryError
from consentry.schema import arrow_schema

POSTS = pa.table(
    {
        "post_id": ["p2", "p1"],
        "author_id": ["u1", "u2"],
        "created_at": pa.array(
            [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)],
            pa.timestamp("us", tz="UTC"),
        ),
        "text": ["a", "b"],
        "visibility": ["public", "direct"],
        "lang": [None, "en"],
        "deleted_at": pa.array([None, None], pa.timestamp("us", tz="UTC")),
    }
)


def test_empty_lake(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "nowhere")
    assert lake.tables() == []
    assert lake.row_counts() == {}
    assert not lake.exists("posts")
    assert lake.version("posts") is None
    assert lake.files("posts") == []
    assert lake.row_count("posts") == 0
    assert lake.read_arrow("posts").schema == arrow_schema("posts")
    with pytest.raises(ConsentryError, match="has no table 'posts'"):
        lake.history("posts")
    with pytest.raises(ConsentryError, match="has no table 'scratch'"):
        lake.read_arrow("scratch")
    with pytest.raises(ConsentryError, match="bad table name"):
        lake.exists("../etc")


def _log_actions(table_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for commit in sorted((table_dir / "_delta_log").glob("*.json"))
        for line in commit.read_text().splitlines()
    ]


def test_each_write_is_one_delta_commit_that_delta_rs_reads(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    lake.write_arrow("posts", POSTS)
    table_dir = tmp_path / "lake" / "posts"
    assert lake.version("posts") == 0
    assert DeltaTable(str(table_dir)).to_pyarrow_table().sort_by("post_id").to_pydict() == (
        POSTS.sort_by("post_id").to_pydict()
    )
    assert pq.ParquetFile(lake.files("posts")[0]).metadata.row_group(0).column(0).compression == (
        "ZSTD"
    )
    lake.write_arrow("posts", POSTS.slice(0, 1))
    assert lake.version("posts") == 1
    assert DeltaTable(str(table_dir)).to_pyarrow_table().to_pydict() == (
        POSTS.slice(0, 1).to_pydict()
    )
    assert lake.row_counts() == {"posts": 1}
    assert lake.read_arrow("posts").schema == arrow_schema("posts")
    # Time travel: the first version is still readable, through us and through delta-rs.
    assert lake.read_arrow("posts", version=0).num_rows == 2
    assert DeltaTable(str(table_dir), version=0).to_pyarrow_table().num_rows == 2
    assert [(v.version, v.operation, v.readable) for v in lake.history("posts")] == [
        (1, "WRITE", True),
        (0, "CREATE TABLE", True),
    ]


def test_the_log_keeps_row_counts_and_no_column_values(tmp_path: Path) -> None:
    """Min/max statistics would copy key values into the log, out of any vacuum's reach."""
    lake = Lake(tmp_path / "lake")
    lake.write_arrow("posts", POSTS)
    for index in range(3):
        with lake.writing("posts") as staging:
            pq.write_table(POSTS, staging / f"part-{index:06d}.parquet")
    lake.optimize("posts")
    adds = [a["add"] for a in _log_actions(tmp_path / "lake" / "posts") if "add" in a]
    assert adds
    for add in adds:
        assert set(json.loads(str(add["stats"]))) == {"numRecords"}, add
    text = "".join(p.read_text() for p in (tmp_path / "lake" / "posts" / "_delta_log").iterdir())
    assert "u1" not in text
    assert "p2" not in text


def test_write_arrow_splits_parts(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    lake.write_arrow("posts", pa.concat_tables([POSTS] * 5), rows_per_part=3)
    assert [Path(f).name for f in lake.files("posts")] == [
        f"part-{i:06d}.parquet" for i in range(4)
    ]
    assert lake.row_count("posts") == 10


def test_writing_error_discards_staging(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    lake.write_arrow("posts", POSTS)
    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    def fail_after_writing(table: str) -> None:
        with lake.writing(table) as staging:
            pq.write_table(POSTS, staging / "part-000000.parquet")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_after_writing("posts")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing
    with pytest.raises(RuntimeError, match="boom"):
        fail_after_writing("fresh")
    assert not (tmp_path / "lake" / "fresh").exists()


def _write_part(lake: Lake, table: str, data: pa.Table) -> None:
    with lake.writing(table) as staging:
        pq.write_table(data, staging / "part-000000.parquet")


def test_a_part_with_other_columns_is_refused_and_nothing_commits(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    lake.write_arrow("posts", POSTS)
    with pytest.raises(ConsentryError, match="do not match table 'posts'"):
        _write_part(lake, "posts", POSTS.drop_columns(["lang"]))
    bad = POSTS.set_column(5, "lang", pa.array([1, 2], pa.int64()))
    with pytest.raises(ConsentryError, match="column 'lang' is int64"):
        _write_part(lake, "posts", bad)
    assert lake.version("posts") == 0
    assert lake.staged_tokens("posts") == []


def test_any_table_takes_its_schema_from_its_first_commit(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    _write_part(lake, "scratch", pa.table({"x": [1, 2, 3]}))
    assert lake.tables() == ["scratch"]
    assert lake.read_arrow("scratch").to_pydict() == {"x": [1, 2, 3]}
    with pytest.raises(ConsentryError, match="no part files"), lake.writing("scratch"):
        pass
    with pytest.raises(ConsentryError, match="'x' is string"):
        _write_part(lake, "scratch", pa.table({"x": ["a"]}))


def test_two_phase_publish_is_idempotent_and_discard_spares_published(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    lake.write_arrow("posts", POSTS)
    staged = lake.stage("posts", "aa11aa11")
    pq.write_table(POSTS.slice(1), staged / "part-000000.parquet")
    assert lake.staged_tokens("posts") == ["aa11aa11"]
    assert lake.row_count("posts") == 2, "staged parts are not read"
    assert lake.publish("posts", "aa11aa11")
    assert lake.publish("posts", "aa11aa11"), "a repeated publish finds it committed"
    assert lake.version("posts") == 1
    assert lake.history("posts")[0].token == "aa11aa11"
    lake.discard("posts", "aa11aa11")
    assert lake.read_arrow("posts")["post_id"].to_pylist() == ["p1"]
    assert lake.staged_tokens("posts") == []
    assert not lake.publish("posts", "bb22bb22"), "nothing staged under that token"


def test_append_adds_parts_and_a_staged_append_may_be_empty(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    lake.write_arrow("posts", POSTS)
    staged = lake.stage("posts", "cc33cc33", append=True)
    pq.write_table(POSTS.slice(0, 1), staged / "part-000000.parquet")
    assert lake.publish("posts", "cc33cc33")
    assert lake.row_count("posts") == 3
    assert len(lake.files("posts")) == 2
    lake.stage("posts", "dd44dd44", append=True)
    assert lake.publish("posts", "dd44dd44")
    assert lake.row_count("posts") == 3


def test_publish_finishes_a_rename_whose_commit_never_happened(tmp_path: Path) -> None:
    """A crash between renaming the staged folder and the commit: the folder is still the
    token's, unlisted by any version, and publish commits it."""
    lake = Lake(tmp_path / "lake")
    lake.write_arrow("posts", POSTS)
    staged = lake.stage("posts", "ee55ee55")
    pq.write_table(POSTS.slice(1), staged / "part-000000.parquet")
    os.rename(staged, staged.parent / "data-ee55ee55")
    assert lake.staged_tokens("posts") == ["ee55ee55"]
    assert lake.vacuum("posts").files_removed == (), "uncommitted parts are never vacuumed"
    assert lake.publish("posts", "ee55ee55")
    assert lake.read_arrow("posts")["post_id"].to_pylist() == ["p1"]
    assert lake.staged_tokens("posts") == []


def test_vacuum_makes_old_versions_unreadable_and_names_them(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    lake.write_arrow("posts", POSTS)
    lake.write_arrow("posts", POSTS.slice(1))
    assert "p2" in lake.read_arrow("posts", version=0)["post_id"].to_pylist()
    assert len(lake.reachable_files("posts")) == 2
    kept = lake.vacuum("posts", grace_hours=1)
    assert (kept.files_removed, kept.versions_removed) == ((), ())
    done = lake.vacuum("posts")
    assert len(done.files_removed) == 1
    assert done.versions_removed == (0,)
    assert lake.reachable_files("posts") == lake.files("posts")
    with pytest.raises(FileNotFoundError, match="not found"):
        DeltaTable(str(tmp_path / "lake" / "posts"), version=0).to_pyarrow_table()
    assert [v.readable for v in lake.history("posts")] == [True, False]
    assert sorted(p.name for p in (tmp_path / "lake" / "posts").iterdir() if p.is_dir())[0] == (
        "_delta_log"
    )


def test_vacuum_keeps_the_versions_it_is_told_to(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    lake.write_arrow("posts", POSTS)
    lake.write_arrow("posts", POSTS.slice(1))
    assert lake.vacuum("posts", keep_versions=[0]).versions_removed == ()
    assert lake.read_arrow("posts", version=0).num_rows == 2


def test_a_table_of_the_snapshot_lake_is_refused_until_converted(tmp_path: Path) -> None:
    old = tmp_path / "lake" / "posts"
    (old / "v-000001").mkdir(parents=True)
    pq.write_table(POSTS, old / "v-000001" / "part-000000.parquet")
    (old / "CURRENT").write_text("v-000001\n")
    lake = Lake(tmp_path / "lake")
    for action in (lambda: lake.exists("posts"), lake.tables, lambda: lake.files("posts")):
        with pytest.raises(ConsentryError, match="run `consentry init` to convert it"):
            action()


def test_table_on_duckdb(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    con = connect("duckdb")
    empty = lake.table(con, "posts")
    assert empty.count().execute() == 0
    assert list(empty.columns) == arrow_schema("posts").names
    lake.write_arrow("posts", POSTS)
    posts = lake.table(con, "posts")
    assert posts.count().execute() == 2
    got = posts.order_by("post_id").execute()
    assert list(got["post_id"]) == ["p1", "p2"]
    assert str(got["created_at"].dt.tz) == "UTC"
    with pytest.raises(ConsentryError, match="no table 'scratch'"):
        lake.table(con, "scratch")


def test_connect_rejects_unknown_engine() -> None:
    assert ENGINES == ("duckdb", "spark")
    with pytest.raises(BadInput, match="unknown engine 'polars'; known engines: duckdb, spark"):
        connect("polars")
