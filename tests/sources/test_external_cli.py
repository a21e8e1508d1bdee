"""`consentry source add|list|remove` through the real Typer app: external Delta tables and
Parquet folders (local and on S3) with other column names, every row validated as an import
validates it, the registry file and the audit events."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from consentry.audit import SqlAuditSink
from consentry.cli import common
from consentry.engine import Lake
from consentry.engine.external import SOURCES_FILE, ExternalTable, load_external
from consentry.engine.lake import s3_filesystem, s3_options
from consentry.schema import arrow_schema
from consentry.settings import Settings
from consentry.store import open_store
from tests.delivery.conftest import run_cli
from tests.sources.rows import SAMPLES, T0

MAP = "post_id=id,author_id=user_id,text=body"
"""The column map of the platform's `posts` below: its own names for three columns."""

RENAMED = {"post_id": "id", "author_id": "user_id", "text": "body"}


def platform_posts(ids: list[str], **changes: list[Any]) -> pa.Table:
    """The platform's own posts table: canonical types, its own column names (`id`,
    `user_id`, `body`) and a column Consentry does not know (`likes`); `changes` replaces
    canonical columns' values."""
    rows = [dict(SAMPLES["posts"][i % 3], post_id=post_id) for i, post_id in enumerate(ids)]
    canonical = pa.Table.from_pylist(rows, schema=arrow_schema("posts"))
    for name, values in changes.items():
        column = canonical.schema.get_field_index(name)
        canonical = canonical.set_column(
            column, name, pa.array(values, canonical.schema.field(name).type)
        )
    renamed = canonical.rename_columns([RENAMED.get(n, n) for n in canonical.column_names])
    return renamed.append_column("likes", pa.array(range(len(ids)), pa.int64()))


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.console, "width", 250)
    monkeypatch.setattr(common.err_console, "width", 250)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An initialised home."""
    path = tmp_path / "home"
    assert run_cli(path, "init").exit_code == 0
    return path


def events(home: Path, event_type: str) -> list[dict[str, Any]]:
    with open_store(Settings(home=home).resolved_database_url) as store, store.session() as s:
        return [e.payload for e in SqlAuditSink.read(s, event_type=event_type)]


def refused(home: Path, *args: str) -> str:
    """Run `source add ARGS` expecting exit 2 with nothing registered or audited; its
    stderr."""
    result = run_cli(home, "source", "add", *args)
    assert result.exit_code == 2, result.output
    assert not (home / SOURCES_FILE).exists()
    assert events(home, "source.added") == []
    return str(result.stderr)


def test_a_delta_table_with_its_own_column_names_is_registered_with_a_map(
    home: Path, tmp_path: Path
) -> None:
    location = tmp_path / "platform" / "posts"
    write_deltalake(location, platform_posts(["p1", "p2"]))
    write_deltalake(location, platform_posts(["p3"]), mode="append")
    result = run_cli(
        home, "source", "add", "posts", "--delta", str(location), "--map", MAP, "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report == {
        "table": "posts",
        "format": "delta",
        "location": str(location),
        "columns": RENAMED,
        "purge": False,
        "options": {},
        "rows": 3,
        "files": 2,
        "shadows_imported": False,
    }
    assert load_external(home) == {
        "posts": ExternalTable("posts", "delta", str(location), RENAMED, purge=False)
    }
    registry = json.loads((home / SOURCES_FILE).read_text(encoding="utf-8"))
    assert registry["sources"][0]["columns"] == RENAMED
    [event] = events(home, "source.added")
    assert {k: v for k, v in event.items() if k != "request_id"} == {
        "table": "posts",
        "format": "delta",
        "location": str(location),
        "columns": RENAMED,
        "purge": False,
        "rows": 3,
        "files": 2,
        "shadows_imported": False,
    }
    text = run_cli(home, "source", "list")
    assert text.exit_code == 0, text.output
    assert str(location) in text.stdout
    assert "author_id=user_id, post_id=id, text=body" in text.stdout


def test_a_relative_location_is_registered_absolute_and_purge_is_recorded(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_deltalake(tmp_path / "posts", platform_posts(["p1"]))
    monkeypatch.chdir(tmp_path)
    result = run_cli(home, "source", "add", "posts", "--delta", "posts", "--map", MAP, "--purge")
    assert result.exit_code == 0, result.output
    assert "registered the delta source" in result.stdout
    entry = load_external(home)["posts"]
    assert (entry.location, entry.purge) == (str(tmp_path / "posts"), True)
    assert events(home, "source.added")[0]["purge"] is True


def test_map_entries_may_repeat_the_option(home: Path, tmp_path: Path) -> None:
    write_deltalake(tmp_path / "posts", platform_posts(["p1"]))
    args = ["--map", "post_id=id", "--map", "author_id=user_id , text=body,lang=lang"]
    result = run_cli(home, "source", "add", "posts", "--delta", str(tmp_path / "posts"), *args)
    assert result.exit_code == 0, result.output
    # A column mapped to its own name is the default: the registry leaves it out.
    assert dict(load_external(home)["posts"].columns) == RENAMED


def test_a_parquet_folder_is_a_source_every_parquet_file_under_it(
    home: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    (folder / "day=2").mkdir(parents=True)
    pq.write_table(platform_posts(["p1", "p2"]), folder / "a.parquet")
    pq.write_table(platform_posts(["p3"]), folder / "day=2" / "b.parquet")
    (folder / "_SUCCESS").write_text("", encoding="utf-8")
    pq.write_table(platform_posts(["p1"]), folder / ".tmp-c.parquet")  # skipped: hidden
    result = run_cli(
        home, "source", "add", "posts", "--parquet", str(folder), "--map", MAP, "--json"
    )
    assert result.exit_code == 0, result.output
    assert (json.loads(result.stdout)["rows"], json.loads(result.stdout)["files"]) == (3, 2)
    entry = load_external(home)["posts"]
    assert (entry.format, entry.location, entry.purge) == ("parquet", str(folder), False)
    listed = json.loads(run_cli(home, "source", "list", "--json").stdout)
    assert listed == {"sources": [entry.to_json()]}


def test_a_bad_value_in_a_delta_file_names_the_file_row_and_field(
    home: Path, tmp_path: Path
) -> None:
    location = tmp_path / "posts"
    write_deltalake(
        location, platform_posts(["p1", "p2", "p3"], visibility=["public", "everyone", "direct"])
    )
    [file] = DeltaTable(str(location)).file_uris()
    stderr = refused(home, "posts", "--delta", str(location), "--map", MAP)
    assert f"{file}:2: visibility: unknown value 'everyone'" in stderr


def test_an_instant_in_year_1_in_a_parquet_file_names_that_file(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    pq.write_table(platform_posts(["p1"]), folder / "a.parquet")
    year_1 = datetime(1, 1, 1, tzinfo=UTC)
    pq.write_table(platform_posts(["p2", "p3"], created_at=[T0, year_1]), folder / "b.parquet")
    stderr = refused(home, "posts", "--parquet", str(folder), "--map", MAP)
    assert f"{folder / 'b.parquet'}:2: created_at: instant out of range" in stderr
    assert "a.parquet" not in stderr


def test_a_column_missing_from_the_source_names_it_and_the_canonical_column(
    home: Path, tmp_path: Path
) -> None:
    location = tmp_path / "posts"
    write_deltalake(location, platform_posts(["p1"]).drop_columns(["body"]))
    stderr = refused(home, "posts", "--delta", str(location), "--map", MAP)
    assert f"{location}: body: missing (holds text: --map text=body)" in stderr
    # Unmapped, the canonical name is looked for, and the hint names a likely column.
    write_deltalake(tmp_path / "other", platform_posts(["p1"]))
    stderr = refused(home, "posts", "--delta", str(tmp_path / "other"), "--map", "post_id=id")
    assert "author_id: missing (name the column holding author_id with --map" in stderr
    assert "did you mean 'user_id'?" in stderr


def test_a_key_twice_in_the_source_names_the_second_occurrence(home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    pq.write_table(platform_posts(["p1", "p2"]), folder / "a.parquet")
    pq.write_table(platform_posts(["p3", "p4", "p1"]), folder / "b.parquet")
    stderr = refused(home, "posts", "--parquet", str(folder), "--map", MAP)
    first, second = folder / "a.parquet", folder / "b.parquet"
    assert f"{second}:3: post_id: duplicate key 'p1': first at {first}:1" in stderr
    # Within one Delta file too.
    write_deltalake(tmp_path / "posts", platform_posts(["p1", "p1"]))
    stderr = refused(home, "posts", "--delta", str(tmp_path / "posts"), "--map", MAP)
    assert ":2: post_id: duplicate key 'p1': first at " in stderr


def test_an_entities_source_is_held_to_the_rules_spanning_rows(home: Path, tmp_path: Path) -> None:
    rows = SAMPLES["entities"]
    write_deltalake(tmp_path / "ok", pa.Table.from_pylist(rows, schema=arrow_schema("entities")))
    overlapping = [*rows, dict(rows[0], entity="Else", valid_from=T0 + timedelta(days=1))]
    write_deltalake(
        tmp_path / "bad", pa.Table.from_pylist(overlapping, schema=arrow_schema("entities"))
    )
    stderr = refused(home, "entities", "--delta", str(tmp_path / "bad"))
    assert ":4: valid_from: credential 'key-1' is already owned by row 1" in stderr
    result = run_cli(home, "source", "add", "entities", "--delta", str(tmp_path / "ok"))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--parquet", "{folder}", "--purge"], "--purge: only a Delta source can be purged"),
        ([], "--delta/--parquet/--mastodon: give exactly one of them"),
        (["--parquet", "{folder}", "--delta", "{folder}"], "give exactly one of them"),
        (["--parquet", "{folder}", "--map", "post_id"], "--map: bad entry 'post_id'"),
        (["--parquet", "{folder}", "--map", "=id"], "--map: bad entry '=id'"),
        (["--parquet", "{folder}", "--map", "postid=id"], "'postid' is not a column of posts"),
        (
            ["--parquet", "{folder}", "--map", "post_id=id,post_id=key"],
            "'post_id' is already mapped to 'id'",
        ),
        (
            ["--parquet", "{folder}", "--map", "post_id=id,author_id=user_id,text=id"],
            "source column 'id' would hold 'post_id' and 'text'",
        ),
        (["--delta", "{folder}"], "not a Delta table: a folder without a _delta_log folder"),
        (["--delta", "{folder}/nowhere"], "nowhere: no such file or directory"),
        (["--parquet", "{folder}/nowhere"], "nowhere: no such file or directory"),
        (["--parquet", "{folder}/a.parquet"], "not a folder"),
        (["--parquet", "gs://bucket/posts"], "unsupported location 'gs://bucket/posts'"),
    ],
)
def test_bad_arguments_exit_2_and_register_nothing(
    home: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    pq.write_table(platform_posts(["p1"]), folder / "a.parquet")
    stderr = refused(home, "posts", *(a.format(folder=folder) for a in args))
    assert message in stderr


def test_an_empty_folder_and_an_unknown_table_are_refused(home: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert "no .parquet files here" in refused(home, "posts", "--parquet", str(tmp_path / "empty"))
    stderr = refused(home, "post", "--parquet", str(tmp_path / "empty"))
    assert "'post' is not a table a source may stand in for" in stderr
    assert "did you mean 'posts'?" in stderr


def test_a_table_the_lake_holds_needs_replace_imported_and_keeps_the_copy(
    home: Path, tmp_path: Path
) -> None:
    lake = Lake(Settings(home=home).lake_dir)
    imported = pa.Table.from_pylist(SAMPLES["posts"], schema=arrow_schema("posts"))
    lake.write_arrow("posts", imported)
    write_deltalake(tmp_path / "posts", platform_posts(["p7"]))
    args = ["posts", "--delta", str(tmp_path / "posts"), "--map", MAP]
    stderr = refused(home, *args)
    assert "already holds posts imported by Consentry" in stderr
    assert "it is kept, not deleted" in stderr
    assert "--replace-imported" in stderr
    result = run_cli(home, "source", "add", *args, "--replace-imported", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["shadows_imported"] is True
    assert events(home, "source.added")[0]["shadows_imported"] is True
    assert lake.read_arrow("posts") == imported.sort_by("post_id")


def test_list_and_remove(home: Path, tmp_path: Path) -> None:
    assert json.loads(run_cli(home, "source", "list", "--json").stdout) == {"sources": []}
    empty = run_cli(home, "source", "list")
    assert "no external sources" in empty.stdout
    write_deltalake(tmp_path / "posts", platform_posts(["p1"]))
    write_deltalake(
        tmp_path / "users",
        pa.Table.from_pylist(SAMPLES["users"], schema=arrow_schema("users")),
    )
    delta = ["--delta", str(tmp_path / "posts"), "--map", MAP]
    assert run_cli(home, "source", "add", "posts", *delta).exit_code == 0
    assert (
        run_cli(home, "source", "add", "users", "--delta", str(tmp_path / "users")).exit_code == 0
    )
    again = run_cli(home, "source", "add", "posts", *delta)
    assert again.exit_code == 2
    assert "posts already has a source" in again.stderr
    listed = json.loads(run_cli(home, "source", "list", "--json").stdout)["sources"]
    assert [s["table"] for s in listed] == ["posts", "users"]

    removed = run_cli(home, "source", "remove", "posts", "--json")
    assert removed.exit_code == 0, removed.output
    assert json.loads(removed.stdout)["removed"]["location"] == str(tmp_path / "posts")
    assert list(load_external(home)) == ["users"]
    [event] = events(home, "source.removed")
    assert {k: v for k, v in event.items() if k != "request_id"} == {
        "table": "posts",
        "format": "delta",
        "location": str(tmp_path / "posts"),
    }
    assert DeltaTable(str(tmp_path / "posts")).version() == 0  # the source is not touched
    unknown = run_cli(home, "source", "remove", "posts")
    assert unknown.exit_code == 2
    assert "'posts' is not a table with an external source" in unknown.stderr
    text = run_cli(home, "source", "remove", "users")
    assert text.exit_code == 0, text.output
    assert "unregistered the delta source" in text.stdout
    assert load_external(home) == {}
    assert len(events(home, "source.removed")) == 2


def test_a_delta_table_and_a_parquet_prefix_on_s3(home: Path, s3_lake_uri: str) -> None:
    options = s3_options(os.environ)
    # A bad row is named by the file's s3:// URI.
    bad = f"{s3_lake_uri}/platform/bad"
    write_deltalake(
        bad, platform_posts(["p1", "p2"], visibility=["public", "x"]), storage_options=options
    )
    [file] = DeltaTable(bad, storage_options=options).file_uris()
    assert file.startswith("s3://")
    stderr = refused(home, "posts", "--delta", bad, "--map", MAP)
    assert f"{file}:2: visibility: unknown value 'x'" in stderr
    stderr = refused(home, "posts", "--delta", f"{s3_lake_uri}/none", "--map", MAP)
    assert "not a readable Delta table" in stderr

    delta = f"{s3_lake_uri}/platform/posts"
    write_deltalake(delta, platform_posts(["p1", "p2"]), storage_options=options)
    result = run_cli(home, "source", "add", "posts", "--delta", delta + "/", "--map", MAP, "--json")
    assert result.exit_code == 0, result.output
    assert (json.loads(result.stdout)["rows"], json.loads(result.stdout)["files"]) == (2, 1)
    assert load_external(home)["posts"].location == delta
    assert events(home, "source.added")[0]["location"] == delta

    fs = s3_filesystem(options)
    prefix = s3_lake_uri.removeprefix("s3://") + "/export"
    users = pa.Table.from_pylist(SAMPLES["users"], schema=arrow_schema("users"))
    with fs.open_output_stream(f"{prefix}/part-0.parquet") as out:
        pq.write_table(users, out)
    result = run_cli(home, "source", "add", "users", "--parquet", f"s3://{prefix}", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == 3
    assert sorted(load_external(home)) == ["posts", "users"]


def test_a_partitioned_delta_table_is_read_with_its_partition_column(
    home: Path, tmp_path: Path
) -> None:
    location = tmp_path / "posts"
    write_deltalake(location, platform_posts(["p1", "p2", "p3"]), partition_by=["visibility"])
    result = run_cli(
        home, "source", "add", "posts", "--delta", str(location), "--map", MAP, "--json"
    )
    assert result.exit_code == 0, result.output
    assert (json.loads(result.stdout)["rows"], json.loads(result.stdout)["files"]) == (3, 3)
    # A bad value in the partition column is found too, in its file.
    write_deltalake(
        tmp_path / "bad",
        platform_posts(["p1", "p2"], visibility=["public", "everyone"]),
        partition_by=["visibility"],
    )
    result = run_cli(home, "source", "remove", "posts")
    assert result.exit_code == 0, result.output
    stderr = refused_again(home, "posts", "--delta", str(tmp_path / "bad"), "--map", MAP)
    assert "visibility=everyone/" in stderr
    assert ":1: visibility: unknown value 'everyone'" in stderr


def refused_again(home: Path, *args: str) -> str:
    """`refused` for a home that already recorded sources: exit 2, the registry unchanged."""
    before = (home / SOURCES_FILE).read_text(encoding="utf-8")
    added = len(events(home, "source.added"))
    result = run_cli(home, "source", "add", *args)
    assert result.exit_code == 2, result.output
    assert (home / SOURCES_FILE).read_text(encoding="utf-8") == before
    assert len(events(home, "source.added")) == added
    return str(result.stderr)


def test_the_audit_event_is_committed_before_the_registry_is_written(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry write that fails leaves an audit event for a change that did not happen
    (and says so), never a registered source without its event."""
    import consentry.cli.sources as cli_sources

    def fail(home: Path, tables: object) -> None:
        assert len(events(home, "source.added")) == 1  # already committed
        raise OSError("disk full")

    monkeypatch.setattr(cli_sources, "save_external", fail)
    write_deltalake(tmp_path / "posts", platform_posts(["p1"]))
    result = run_cli(
        home, "source", "add", "posts", "--delta", str(tmp_path / "posts"), "--map", MAP
    )
    assert result.exit_code == 1
    assert "(source.added) was recorded, but the registry" in result.stderr
    assert "disk full" in result.stderr
    assert not (home / SOURCES_FILE).exists()
