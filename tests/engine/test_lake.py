"""The lake: snapshot layout, atomic commits, reads through Arrow and DuckDB."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

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
    assert lake.files("posts") == []
    assert lake.row_count("posts") == 0
    assert lake.read_arrow("posts").schema == arrow_schema("posts")
    with pytest.raises(ConsentryError, match="has no table 'posts'"):
        lake.snapshot_dir("posts")
    with pytest.raises(ConsentryError, match="has no table 'scratch'"):
        lake.read_arrow("scratch")
    with pytest.raises(ConsentryError, match="bad table name"):
        lake.exists("../etc")


def test_write_creates_snapshot_layout_and_replaces_atomically(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    first = lake.write_arrow("posts", POSTS)
    assert first == tmp_path / "lake" / "posts" / "v-000001"
    assert (tmp_path / "lake" / "posts" / "CURRENT").read_text() == "v-000001\n"
    assert [f.name for f in lake.files("posts")] == ["part-000000.parquet"]
    assert pq.ParquetFile(lake.files("posts")[0]).metadata.row_group(0).column(0).compression == (
        "ZSTD"
    )
    second = lake.write_arrow("posts", POSTS.slice(0, 1))
    assert second.name == "v-000002"
    assert not first.exists(), "old snapshots are removed after the commit"
    assert sorted(p.name for p in (tmp_path / "lake" / "posts").iterdir()) == [
        "CURRENT",
        "v-000002",
    ]
    assert lake.row_counts() == {"posts": 1}
    assert lake.read_arrow("posts").schema == arrow_schema("posts")


def test_write_arrow_splits_parts(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    lake.write_arrow("posts", pa.concat_tables([POSTS] * 5), rows_per_part=3)
    assert [f.name for f in lake.files("posts")] == [f"part-{i:06d}.parquet" for i in range(4)]
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


def test_begin_and_commit_snapshot_for_any_table(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    staging = lake.begin_snapshot("scratch")
    assert staging.name.startswith(".staging-")
    assert lake.tables() == []
    pq.write_table(pa.table({"x": [1, 2, 3]}), staging / "part-000000.parquet")
    lake.commit_snapshot("scratch", staging)
    assert lake.tables() == ["scratch"]
    assert lake.read_arrow("scratch").to_pydict() == {"x": [1, 2, 3]}
    empty = lake.begin_snapshot("scratch")
    with pytest.raises(ConsentryError, match="no part files"):
        lake.commit_snapshot("scratch", empty)


def test_stale_staging_dirs_are_cleaned_on_next_commit(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    stale = lake.begin_snapshot("posts")
    lake.write_arrow("posts", POSTS)
    assert not stale.exists()


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
