"""The lake on object storage: the same Delta tables on a real S3 server (SeaweedFS, started
by the tests' fixtures), read back by delta-rs with its own S3 client."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from consentry.engine import Lake, connect
from consentry.engine.lake import s3_options
from consentry.errors import ConsentryError
from tests.engine.test_lake import POSTS


def _delta(uri: str, table: str, version: int | None = None) -> DeltaTable:
    return DeltaTable(f"{uri}/{table}", version=version, storage_options=s3_options(os.environ))


def _objects(lake: Lake, table: str) -> list[str]:
    selector = pafs.FileSelector(f"{lake.uri.removeprefix('s3://')}/{table}", recursive=True)
    return sorted(
        f"s3://{i.path}"
        for i in lake.filesystem.get_file_info(selector)
        if i.type == pafs.FileType.File
    )


def test_a_table_on_s3_is_a_delta_table_delta_rs_reads(s3_lake_uri: str, tmp_path: Path) -> None:
    lake = Lake(s3_lake_uri, staging=tmp_path / "staging")
    assert lake.remote
    assert lake.tables() == []
    lake.write_arrow("posts", POSTS)
    lake.write_arrow("posts", POSTS.slice(1))
    assert lake.tables() == ["posts"]
    assert lake.version("posts") == 1
    assert _delta(s3_lake_uri, "posts").to_pyarrow_table().to_pydict() == (
        POSTS.slice(1).to_pydict()
    )
    assert lake.read_arrow("posts", version=0).num_rows == 2
    assert [v.readable for v in lake.history("posts")] == [True, True]
    assert lake.row_counts() == {"posts": 1}
    # Nothing is left in the local staging folder once published.
    assert not any((tmp_path / "staging").rglob("*.parquet"))
    con = connect("duckdb")
    assert lake.table(con, "posts").count().execute() == 1


def test_vacuum_on_s3_removes_the_objects_old_versions_list(
    s3_lake_uri: str, tmp_path: Path
) -> None:
    lake = Lake(s3_lake_uri, staging=tmp_path / "staging")
    lake.write_arrow("posts", POSTS)
    lake.write_arrow("posts", POSTS.slice(1))
    old = set(lake.files("posts", version=0))
    assert old <= set(_objects(lake, "posts"))
    done = lake.vacuum("posts")
    assert done.versions_removed == (0,)
    assert not old & set(_objects(lake, "posts"))
    with pytest.raises(FileNotFoundError, match="not found"):
        _delta(s3_lake_uri, "posts", version=0).to_pyarrow_table()
    assert lake.reachable_files("posts") == lake.files("posts")
    assert lake.vacuum("posts").files_removed == (), "nothing is counted twice"


def test_a_publish_stopped_after_its_upload_is_finished_and_never_vacuumed(
    s3_lake_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(s3_lake_uri, staging=tmp_path / "staging")
    lake.write_arrow("posts", POSTS)
    staged = lake.stage("posts", "ab12ab12")
    pq.write_table(POSTS.slice(1), staged / "part-000000.parquet")

    def no_commit(*args: Any, **kwargs: Any) -> None:
        raise OSError("connection reset")

    with monkeypatch.context() as patch:
        patch.setattr(Lake, "_commit", no_commit)
        with pytest.raises(OSError, match="connection reset"):
            lake.publish("posts", "ab12ab12")
    uploaded = [o for o in _objects(lake, "posts") if "/data-ab12ab12/" in o]
    assert uploaded, "the parts were uploaded before the commit failed"
    assert lake.staged_tokens("posts") == ["ab12ab12"]
    assert lake.vacuum("posts").files_removed == ()
    assert lake.publish("posts", "ab12ab12")
    assert lake.read_arrow("posts")["post_id"].to_pylist() == ["p1"]
    assert lake.staged_tokens("posts") == []
    assert lake.publish("posts", "ab12ab12"), "idempotent"
    assert lake.version("posts") == 1


def test_discard_removes_an_uncommitted_upload(s3_lake_uri: str, tmp_path: Path) -> None:
    lake = Lake(s3_lake_uri, staging=tmp_path / "staging")
    lake.write_arrow("posts", POSTS)
    staged = lake.stage("posts", "cd34cd34")
    pq.write_table(POSTS, staged / "part-000000.parquet")
    before = _objects(lake, "posts")
    lake.discard("posts", "cd34cd34")
    assert _objects(lake, "posts") == before
    assert lake.staged_tokens("posts") == []
    assert not lake.publish("posts", "cd34cd34")


def test_writers_on_two_machines_append_without_losing_a_commit(
    s3_lake_uri: str, tmp_path: Path
) -> None:
    """Each writer has its own staging folder (its own machine); conditional puts make the
    store refuse a second commit of one version, and delta-rs retries the append."""
    Lake(s3_lake_uri, staging=tmp_path / "a").write_arrow("posts", POSTS.slice(0, 0))

    def append(index: int) -> None:
        lake = Lake(s3_lake_uri, staging=tmp_path / f"m{index}")
        token = f"{index:08x}"
        staged = lake.stage("posts", token, append=True)
        row = POSTS.slice(0, 1).set_column(0, "post_id", pa.array([f"w{index}"]))
        pq.write_table(row, staged / "part-000000.parquet")
        assert lake.publish("posts", token)

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(append, range(6)))
    lake = Lake(s3_lake_uri, staging=tmp_path / "check")
    assert sorted(lake.read_arrow("posts")["post_id"].to_pylist()) == [f"w{i}" for i in range(6)]
    assert lake.version("posts") == 6


def test_bad_lake_locations_are_named() -> None:
    for bad in ("gs://bucket/lake", "s3://", "s3:///"):
        with pytest.raises(ConsentryError, match="use a local folder or s3://bucket"):
            Lake(bad)
