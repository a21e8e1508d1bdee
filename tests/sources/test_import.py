"""Importing into the lake: formats, types, idempotent merges, atomicity and the CLI."""

from __future__ import annotations

import codecs
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import consentry.sources.importer as importer_module
from consentry.cli.main import app
from consentry.engine import Lake
from consentry.schema import MAX_POSTS_PER_ACCESS, TABLES, arrow_schema
from consentry.sources import ImportResult, import_arrow, import_files
from consentry.store import open_store
from tests.sources.rows import SAMPLES, tree_hash, write, write_csv

FORMATS = ("csv", "jsonl", "parquet")


def _by_key(lake: Lake, table: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    key = TABLES[table].key
    return {tuple(r[k] for k in key): r for r in lake.read_arrow(table).to_pylist()}


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("table", sorted(TABLES))
def test_every_table_round_trips_in_every_format(table: str, fmt: str, tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    path = write(fmt, tmp_path / table, table, SAMPLES[table])
    result = import_files(lake, table, [path])
    assert (result.table, result.origin) == (table, str(path))
    assert (result.rows_read, result.rows_new, result.rows_replaced, result.rows_total) == (
        3,
        3,
        0,
        3,
    )
    assert result.started_at <= result.finished_at
    assert result.started_at.tzinfo is UTC
    data = lake.read_arrow(table)
    assert data.schema == arrow_schema(table)
    key = TABLES[table].key
    expected = sorted(SAMPLES[table], key=lambda r: tuple((r[k] is not None, r[k]) for k in key))
    assert data.to_pylist() == expected
    assert lake.tables() == [table]
    assert lake.row_count(table) == 3


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("table", sorted(TABLES))
def test_a_leading_byte_order_mark_is_tolerated(table: str, fmt: str, tmp_path: Path) -> None:
    plain, marked = Lake(tmp_path / "plain"), Lake(tmp_path / "marked")
    path = write(fmt, tmp_path / table, table, SAMPLES[table])
    import_files(plain, table, [path])
    path.write_bytes(codecs.BOM_UTF8 + path.read_bytes())
    assert import_files(marked, table, [path]).rows_new == 3
    assert marked.read_arrow(table) == plain.read_arrow(table)


@pytest.mark.parametrize("fmt", FORMATS)
def test_posts_at_both_ends_of_the_range_are_accepted(fmt: str, tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    rows = [
        dict(SAMPLES["access_events"][0], request_id="low", posts=0),
        dict(SAMPLES["access_events"][0], request_id="high", posts=MAX_POSTS_PER_ACCESS),
    ]
    import_files(lake, "access_events", [write(fmt, tmp_path / "a", "access_events", rows)])
    got = {r["request_id"]: r["posts"] for r in lake.read_arrow("access_events").to_pylist()}
    assert got == {"low": 0, "high": MAX_POSTS_PER_ACCESS}


def test_timestamps_with_offsets_become_utc_microseconds(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    stamps = [
        "2024-05-01T12:00:00Z",
        "2024-05-01T14:00:00+02:00",
        "2024-05-01T07:30:00-0430",
        "2024-05-01 12:00:00.1234567+00",
    ]
    rows = [dict(SAMPLES["access_events"][0], request_id=f"r{i}") for i in range(4)]
    raw = {i: {"ts": s} for i, s in enumerate(stamps)}
    import_files(
        lake, "access_events", [write_csv(tmp_path / "a.csv", "access_events", rows, raw=raw)]
    )
    got = [r["ts"] for r in lake.read_arrow("access_events").to_pylist()]
    noon = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert got == [noon, noon, noon, noon + timedelta(microseconds=123456)]
    assert lake.read_arrow("access_events").schema.field("ts").type == pa.timestamp("us", tz="UTC")


def test_csv_booleans_accept_true_false_1_0(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    values = ["true", "FALSE", "1", "0"]
    rows = [dict(SAMPLES["users"][0], user_id=f"u{i}") for i in range(4)]
    raw = {i: {"protected": v} for i, v in enumerate(values)}
    import_files(lake, "users", [write_csv(tmp_path / "u.csv", "users", rows, raw=raw)])
    got = [r["protected"] for r in lake.read_arrow("users").to_pylist()]
    assert got == [True, False, True, False]


def test_csv_empty_fields(tmp_path: Path) -> None:
    """Unquoted empty: null in nullable columns, '' in non-nullable text; quoted: ''."""
    path = tmp_path / "p.csv"
    path.write_text(
        "post_id,author_id,created_at,text,visibility,lang,deleted_at\n"
        "p1,u1,2024-05-01T12:00:00Z,,public,,\n"
        'p2,u1,2024-05-01T12:00:00Z,"",public,"",\n',
        encoding="utf-8",
    )
    lake = Lake(tmp_path / "lake")
    import_files(lake, "posts", [path])
    rows = lake.read_arrow("posts").to_pylist()
    assert [(r["text"], r["lang"], r["deleted_at"]) for r in rows] == [
        ("", None, None),
        ("", "", None),
    ]


def test_reimport_is_idempotent_and_changed_rows_replace(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    first = write_csv(tmp_path / "first.csv", "posts", SAMPLES["posts"])
    import_files(lake, "posts", [first])
    snapshot = _by_key(lake, "posts")
    again = import_files(lake, "posts", [first])
    assert (again.rows_read, again.rows_new, again.rows_replaced, again.rows_total) == (3, 0, 3, 3)
    assert _by_key(lake, "posts") == snapshot

    changed = [dict(SAMPLES["posts"][1], text="edited"), dict(SAMPLES["posts"][0], post_id="p9")]
    result = import_files(
        lake, "posts", [write(fmt, tmp_path / "ch", "posts", changed) for fmt in ["jsonl"]]
    )
    assert (result.rows_new, result.rows_replaced, result.rows_total) == (1, 1, 4)
    rows = _by_key(lake, "posts")
    assert rows[("p2",)]["text"] == "edited"
    assert rows[("p9",)]["author_id"] == "u1"
    assert rows[("p1",)] == snapshot[("p1",)]
    # Output is sorted by key.
    assert [r["post_id"] for r in lake.read_arrow("posts").to_pylist()] == ["p1", "p2", "p3", "p9"]


def test_last_occurrence_wins_within_and_across_files(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    base = SAMPLES["consent_events"][0]
    a = write_csv(
        tmp_path / "a.csv",
        "consent_events",
        [dict(base, choice="allow"), dict(base, choice="deny", purpose="x")],
    )
    b = write(
        "parquet", tmp_path / "b", "consent_events", [dict(base, choice="allow", purpose="y")]
    )
    result = import_files(lake, "consent_events", [a, b])
    assert (result.rows_read, result.rows_new, result.rows_total) == (3, 1, 1)
    assert result.origin == f"{a}, {b}"
    (row,) = lake.read_arrow("consent_events").to_pylist()
    assert (row["choice"], row["purpose"]) == ("allow", "y")


def test_composite_key_with_null_part(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    import_files(lake, "entities", [write_csv(tmp_path / "e.csv", "entities", SAMPLES["entities"])])
    update = [dict(SAMPLES["entities"][1], entity="Renamed")]
    result = import_files(lake, "entities", [write_csv(tmp_path / "u.csv", "entities", update)])
    assert (result.rows_new, result.rows_replaced, result.rows_total) == (0, 1, 3)
    assert _by_key(lake, "entities")[("key-1", None)]["entity"] == "Renamed"


def test_import_arrow_merges_with_files(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    import_files(lake, "users", [write_csv(tmp_path / "u.csv", "users", SAMPLES["users"])])
    data = pa.Table.from_pylist(
        [dict(SAMPLES["users"][0], region="BE")], schema=arrow_schema("users")
    )
    result = import_arrow(lake, "users", data, origin="demo")
    assert isinstance(result, ImportResult)
    assert (result.origin, result.rows_new, result.rows_replaced, result.rows_total) == (
        "demo",
        0,
        1,
        3,
    )
    assert _by_key(lake, "users")[("u1",)]["region"] == "BE"


def test_import_arrow_of_zero_rows_creates_an_empty_table(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    result = import_arrow(lake, "posts", arrow_schema("posts").empty_table(), origin="none")
    assert (result.rows_read, result.rows_total) == (0, 0)
    assert lake.exists("posts")
    assert lake.read_arrow("posts").schema == arrow_schema("posts")


def test_merge_writes_several_sorted_parts_when_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer_module, "PART_FILE_SIZE", "20KB")
    monkeypatch.setattr(importer_module, "ROW_GROUP_ROWS", 2048)
    n = 20_000
    data = pa.table(
        {
            "request_id": [f"r{i:06d}" for i in range(n)][::-1],
            "ts": pa.array([datetime(2024, 1, 1, tzinfo=UTC)] * n, pa.timestamp("us", tz="UTC")),
            "credential": ["k"] * n,
            "posts": list(range(n)),
            "endpoint": [None] * n,
        }
    )
    lake = Lake(tmp_path / "lake")
    import_arrow(lake, "access_events", data, origin="big")
    files = lake.files("access_events")
    assert len(files) > 1
    assert [Path(f).name for f in files] == [f"part-{i:06d}.parquet" for i in range(len(files))]
    ids = lake.read_arrow("access_events")["request_id"].to_pylist()
    assert ids == sorted(ids)
    assert len(ids) == n
    assert lake.row_count("access_events") == n


# ------------------------------------------------------------------------- atomicity


def test_failure_at_commit_leaves_lake_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(tmp_path / "lake")
    import_files(lake, "posts", [write_csv(tmp_path / "p.csv", "posts", SAMPLES["posts"])])
    before = tree_hash(lake.root)

    def failing_commit(*args: Any, **kwargs: Any) -> None:
        # The Delta commit is the commit point: its parts are written and renamed by then.
        raise OSError("disk full")

    monkeypatch.setattr(Lake, "_commit", failing_commit)
    changed = [dict(SAMPLES["posts"][0], text="new")]
    with pytest.raises(OSError, match="disk full"):
        import_files(lake, "posts", [write_csv(tmp_path / "c.csv", "posts", changed)])
    assert tree_hash(lake.root) == before
    monkeypatch.undo()
    assert _by_key(lake, "posts")[("p1",)]["text"] == SAMPLES["posts"][0]["text"]


def test_failure_during_merge_leaves_lake_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(tmp_path / "lake")
    import_files(lake, "posts", [write_csv(tmp_path / "p.csv", "posts", SAMPLES["posts"])])
    before = tree_hash(lake.root)

    def broken_rename(self: Path, target: Any) -> Path:
        raise RuntimeError("crash while renaming parts")

    with monkeypatch.context() as patch:
        # Parts are renamed after DuckDB has written them: the staging dir is full by then.
        patch.setattr(Path, "rename", broken_rename)
        with pytest.raises(RuntimeError, match="crash while renaming"):
            import_arrow(
                lake,
                "posts",
                pa.Table.from_pylist(SAMPLES["posts"], schema=arrow_schema("posts")),
                origin="x",
            )
    assert tree_hash(lake.root) == before


def test_failed_first_import_leaves_no_table_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(tmp_path / "lake")
    import_files(lake, "posts", [write_csv(tmp_path / "p.csv", "posts", SAMPLES["posts"])])
    before = tree_hash(lake.root)
    monkeypatch.setattr(duckdb, "connect", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        import_files(lake, "users", [write_csv(tmp_path / "u.csv", "users", SAMPLES["users"])])
    assert tree_hash(lake.root) == before
    assert not (lake.root / "users").exists()


# ------------------------------------------------------------------------- property


_KEYS = st.sampled_from(["a", "b", "c", "d", "e"])
_ROW = st.fixed_dictionaries(
    {
        "request_id": _KEYS,
        "posts": st.integers(min_value=0, max_value=MAX_POSTS_PER_ACCESS),
        "credential": st.text(
            st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=5
        ),
        "endpoint": st.none() | st.text(max_size=5),
        "ts": st.datetimes(
            min_value=datetime(1970, 1, 1),
            max_value=datetime(2100, 1, 1),
            timezones=st.just(UTC) | st.just(timezone(timedelta(hours=5, minutes=30))),
        ),
    }
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(_ROW, max_size=6), min_size=1, max_size=4))
def test_merge_equals_last_write_wins_dict(
    batches: list[list[dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    lake = Lake(tmp_path_factory.mktemp("prop") / "lake")
    expected: dict[str, dict[str, Any]] = {}
    for batch in batches:
        data = pa.Table.from_pylist(batch, schema=arrow_schema("access_events"))
        before = dict(expected)
        result = import_arrow(lake, "access_events", data, origin="prop")
        for row in batch:
            expected[row["request_id"]] = row
        distinct = {r["request_id"] for r in batch}
        assert result.rows_new == len(distinct - before.keys())
        assert result.rows_replaced == len(distinct & before.keys())
        assert result.rows_total == len(expected)
    got = lake.read_arrow("access_events").to_pylist()
    assert [r["request_id"] for r in got] == sorted(expected)
    for row in got:
        want = expected[row["request_id"]]
        assert row == {**want, "ts": want["ts"].astimezone(UTC)}


# ------------------------------------------------------------------------- CLI

runner = CliRunner()


def _flat(text: str) -> str:
    """Undo Rich's wrapping of long stderr lines."""
    return " ".join(text.split())


def test_cli_import_reports_and_records_the_run(home: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["--home", str(home), "init"]).exit_code == 0
    path = write_csv(tmp_path / "users.csv", "users", SAMPLES["users"])
    result = runner.invoke(app, ["--home", str(home), "import", "users", str(path)])
    assert result.exit_code == 0, result.output
    assert "users: read 3, new 3, replaced 0, total 3" in result.stdout
    again = runner.invoke(app, ["--home", str(home), "import", "users", "--json", str(path)])
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert {k: report[k] for k in ("table", "rows_read", "rows_new", "rows_replaced")} == {
        "table": "users",
        "rows_read": 3,
        "rows_new": 0,
        "rows_replaced": 3,
    }
    assert report["rows_total"] == 3
    assert report["started_at"].endswith("Z")
    with open_store(f"sqlite:///{home / 'consentry.db'}") as store:
        runs = store.recent_imports()
    assert [(r.table, r.rows_read, r.rows_new) for r in runs] == [
        ("users", 3, 0),
        ("users", 3, 3),
    ]


@pytest.mark.parametrize("table", sorted(TABLES))
def test_cli_has_a_command_per_table(table: str) -> None:
    result = runner.invoke(app, ["import", table, "--help"])
    assert result.exit_code == 0
    assert "Key:" in result.stdout


def test_cli_bad_input_exits_2_with_message_and_lake_untouched(home: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["--home", str(home), "init"]).exit_code == 0
    lake = Lake(home / "lake")
    good = write_csv(tmp_path / "p.csv", "posts", SAMPLES["posts"])
    assert runner.invoke(app, ["--home", str(home), "import", "posts", str(good)]).exit_code == 0
    before = tree_hash(lake.root)
    bad = write_csv(
        tmp_path / "bad.csv",
        "posts",
        SAMPLES["posts"],
        raw={1: {"created_at": "2024-05-01T12:00:00"}},
    )
    result = runner.invoke(app, ["--home", str(home), "import", "posts", str(bad)])
    assert result.exit_code == 2
    assert _flat(f"error: {bad}:2: created_at: {NAIVE_MESSAGE}") in _flat(result.stderr)
    assert tree_hash(lake.root) == before


def test_cli_unknown_format_exits_2(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "posts.xlsx"
    path.write_bytes(b"x")
    result = runner.invoke(app, ["--home", str(home), "import", "posts", str(path)])
    assert result.exit_code == 2
    assert f"{path}: unknown format '.xlsx'" in _flat(result.stderr)


NAIVE_MESSAGE = "naive timestamp (no UTC offset): '2024-05-01T12:00:00'; add Z or +HH:MM"
