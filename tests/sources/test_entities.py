"""The entities rules that span rows (one owner per credential at a time), at import.

The overlap rule is checked against a brute force over every pair of rows; the import is
checked against a dictionary model of the merge (last write wins by key).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from consentry.cli.main import app
from consentry.engine import Lake
from consentry.errors import BadInput
from consentry.schema import arrow_schema
from consentry.sources import import_arrow, import_files
from consentry.sources.entities import (
    LAKE_LOCATION,
    RowOrigins,
    check_entities,
    validity_overlaps,
)
from tests.sources.rows import tree_hash, write

FORMATS = ("csv", "jsonl", "parquet")
OVERLAP = "during this interval (validity intervals of one credential may not overlap)"
DAY = timedelta(days=1)
T0 = datetime(2025, 1, 1, tzinfo=UTC)

# ------------------------------------------------------------------------- the rule alone

INF = float("inf")


def _bounds(row: dict[str, Any]) -> tuple[float, float]:
    start = -INF if row["valid_from"] is None else row["valid_from"]
    end = INF if row["valid_to"] is None else row["valid_to"]
    return start, end


def _brute_overlaps(rows: list[dict[str, Any]]) -> dict[int, set[int]]:
    """Row j -> every earlier row i (by valid_from, open start first, then position) of the
    same credential whose non-empty half-open interval meets j's."""
    found: dict[int, set[int]] = {}
    for j, b in enumerate(rows):
        for i, a in enumerate(rows):
            (sa, ea), (sb, eb) = _bounds(a), _bounds(b)
            if i == j or a["credential"] != b["credential"] or not (sa < ea and sb < eb):
                continue
            if (sa, i) < (sb, j) and sa < eb and sb < ea:
                found.setdefault(j, set()).add(i)
    return found


_ENDS = st.none() | st.integers(min_value=0, max_value=8)
_INTERVAL = st.fixed_dictionaries(
    {"credential": st.sampled_from(["a", "b", "c"]), "valid_from": _ENDS, "valid_to": _ENDS}
)


@settings(max_examples=150, deadline=None)
@given(rows=st.lists(_INTERVAL, max_size=12))
def test_overlaps_equal_the_brute_force_over_all_pairs(rows: list[dict[str, Any]]) -> None:
    intervals = pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [("credential", pa.string()), ("valid_from", pa.int64()), ("valid_to", pa.int64())]
        ),
    )
    got = validity_overlaps(intervals).to_pylist()
    expected = _brute_overlaps(rows)
    assert [r["pos"] for r in got] == sorted(expected)
    for r in got:
        assert r["earlier"] in expected[r["pos"]]
        # The earlier row named is one reaching furthest (so every later overlap is seen).
        assert _bounds(rows[r["earlier"]])[1] == max(
            _bounds(rows[i])[1] for i in expected[r["pos"]]
        )


def test_overlaps_of_timestamps_touching_ends_do_not_overlap() -> None:
    data = pa.Table.from_pylist(
        [
            {"credential": "k", "entity": "a", "valid_from": None, "valid_to": T0},
            {"credential": "k", "entity": "b", "valid_from": T0, "valid_to": T0 + DAY},
            {"credential": "k", "entity": "c", "valid_from": T0 + DAY, "valid_to": None},
            {"credential": "k", "entity": "d", "valid_from": T0 + DAY / 2, "valid_to": T0 + DAY},
        ],
        schema=arrow_schema("entities"),
    )
    assert validity_overlaps(data).to_pylist() == [{"pos": 3, "earlier": 1}]


def test_the_lake_read_alone_reports_its_later_row() -> None:
    """Scraping checks the lake's table on its own: every row is the lake's, none swaps."""
    data = pa.Table.from_pylist(
        [
            {"credential": "k", "entity": "a", "valid_from": T0, "valid_to": None},
            {"credential": "k", "entity": "b", "valid_from": None, "valid_to": T0 + DAY},
        ],
        schema=arrow_schema("entities"),
    )
    with pytest.raises(BadInput) as info:
        check_entities(data, RowOrigins.single(LAKE_LOCATION, data.num_rows))
    assert [str(p) for p in info.value.problems] == [
        "lake:entities:1: valid_from: credential 'k' is already owned by row 2 "
        f"[open, 2025-01-02T00:00:00Z) {OVERLAP}"
    ]


# ------------------------------------------------------------------------- at import


def _entities(*rows: tuple[str, str, datetime | None, datetime | None]) -> list[dict[str, Any]]:
    return [{"credential": c, "entity": e, "valid_from": f, "valid_to": t} for c, e, f, t in rows]


LAKE_ROWS = _entities(
    ("key-1", "Other Ltd", None, T0),
    ("key-1", "Acme AI", T0, T0 + 10 * DAY),
    ("2001:db8::/32", "Acme AI", None, None),
)


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    lake = Lake(tmp_path / "lake")
    import_files(lake, "entities", [write("csv", tmp_path / "seed", "entities", LAKE_ROWS)])
    return lake


def _refused(lake: Lake, files: list[Path]) -> list[str]:
    before = tree_hash(lake.root)
    with pytest.raises(BadInput) as info:
        import_files(lake, "entities", files)
    assert tree_hash(lake.root) == before
    return [str(p) for p in info.value.problems]


@pytest.mark.parametrize("fmt", FORMATS)
def test_overlap_within_one_file_is_refused_at_the_later_row(
    fmt: str, lake: Lake, tmp_path: Path
) -> None:
    rows = _entities(
        ("key-2", "late", T0 + DAY, None),
        ("key-2", "early", None, T0 + 2 * DAY),
    )
    path = write(fmt, tmp_path / "new", "entities", rows)
    assert _refused(lake, [path]) == [
        f"{path}:1: valid_from: credential 'key-2' is already owned by row 2 "
        f"[open, 2025-01-03T00:00:00Z) {OVERLAP}"
    ]


def test_overlap_across_files_names_the_other_file(lake: Lake, tmp_path: Path) -> None:
    first = write("csv", tmp_path / "first", "entities", _entities(("key-2", "a", T0, None)))
    second = write(
        "jsonl", tmp_path / "second", "entities", _entities(("key-2", "b", T0 + DAY, None))
    )
    assert _refused(lake, [first, second]) == [
        f"{second}:1: valid_from: credential 'key-2' is already owned by {first}:1 "
        f"[2025-01-01T00:00:00Z, open) {OVERLAP}"
    ]


def test_overlap_with_the_lake_is_refused_at_the_imported_row(lake: Lake, tmp_path: Path) -> None:
    # Overlapping both lake rows of key-1: the earlier, and the later (which is still
    # reported at the imported row, naming the lake's).
    path = write(
        "csv",
        tmp_path / "new",
        "entities",
        _entities(("key-2", "fine", None, None), ("key-1", "Acme AI", T0 - DAY / 2, T0 + DAY)),
    )
    assert sorted(_refused(lake, [path])) == [
        f"{path}:2: valid_from: credential 'key-1' is already owned by lake:entities:2 "
        f"[open, 2025-01-01T00:00:00Z) {OVERLAP}",
        f"{path}:2: valid_from: credential 'key-1' is already owned by lake:entities:3 "
        f"[2025-01-01T00:00:00Z, 2025-01-11T00:00:00Z) {OVERLAP}",
    ]
    later = write(
        "csv", tmp_path / "later", "entities", _entities(("key-1", "Next", T0 + 9 * DAY, None))
    )
    assert _refused(lake, [later]) == [
        f"{later}:1: valid_from: credential 'key-1' is already owned by lake:entities:3 "
        f"[2025-01-01T00:00:00Z, 2025-01-11T00:00:00Z) {OVERLAP}",
    ]


def test_ranges_are_compared_in_canonical_spelling(lake: Lake, tmp_path: Path) -> None:
    path = write(
        "csv", tmp_path / "new", "entities", _entities(("2001:0DB8::/32", "Other", T0, None))
    )
    assert _refused(lake, [path]) == [
        f"{path}:1: valid_from: credential '2001:db8::/32' is already owned by "
        f"lake:entities:1 [open, open) {OVERLAP}",
    ]


def test_a_replaced_key_no_longer_overlaps(lake: Lake, tmp_path: Path) -> None:
    """The merged table counts: the lake minus the imported keys plus the imported rows."""
    path = write(
        "csv",
        tmp_path / "new",
        "entities",
        _entities(
            ("key-1", "Acme AI", T0, T0 + 3 * DAY),  # replaces the lake's [T0, T0+10d)
            ("key-1", "Next", T0 + 3 * DAY, None),  # touches it: half-open, no overlap
        ),
    )
    result = import_files(lake, "entities", [path])
    assert (result.rows_new, result.rows_replaced, result.rows_total) == (1, 1, 4)


def test_the_last_occurrence_of_a_key_is_the_one_checked(lake: Lake, tmp_path: Path) -> None:
    path = write(
        "csv",
        tmp_path / "new",
        "entities",
        _entities(("key-3", "Wide", None, None), ("key-3", "Narrow", None, T0)),
    )
    other = write("csv", tmp_path / "other", "entities", _entities(("key-3", "Late", T0, None)))
    import_files(lake, "entities", [path, other])
    rows = [r for r in lake.read_arrow("entities").to_pylist() if r["credential"] == "key-3"]
    assert [r["entity"] for r in rows] == ["Narrow", "Late"]


def test_inverted_intervals_and_bad_ranges_are_refused(lake: Lake, tmp_path: Path) -> None:
    path = write(
        "csv",
        tmp_path / "new",
        "entities",
        _entities(("key-4", "a", T0, T0), ("10.0.0.1/24", "b", None, None)),
    )
    assert _refused(lake, [path]) == [
        f"{path}:1: valid_to: must be after valid_from (exclusive end)",
        f"{path}:2: credential: not a CIDR range: 10.0.0.1/24 has host bits set",
    ]


def test_arrow_input_is_checked_too(lake: Lake) -> None:
    data = pa.Table.from_pylist(
        _entities(("key-1", "Demo", T0 + DAY, T0 + 2 * DAY)), schema=arrow_schema("entities")
    )
    before = tree_hash(lake.root)
    with pytest.raises(BadInput) as info:
        import_arrow(lake, "entities", data, origin="demo")
    assert [str(p) for p in info.value.problems] == [
        "demo:1: valid_from: credential 'key-1' is already owned by lake:entities:3 "
        f"[2025-01-01T00:00:00Z, 2025-01-11T00:00:00Z) {OVERLAP}"
    ]
    assert tree_hash(lake.root) == before


def test_cli_import_exits_2_and_the_lake_stays_assessable(home: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["--home", str(home), "init"]).exit_code == 0
    seed = write("csv", tmp_path / "seed", "entities", LAKE_ROWS)
    assert runner.invoke(app, ["--home", str(home), "import", "entities", str(seed)]).exit_code == 0
    bad = write("csv", tmp_path / "bad", "entities", _entities(("key-1", "X", T0 + DAY, None)))
    lake = Lake(home / "lake")
    before = tree_hash(lake.root)
    result = runner.invoke(app, ["--home", str(home), "import", "entities", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:1: valid_from: credential 'key-1' is already owned by" in " ".join(
        result.stderr.split()
    )
    assert tree_hash(lake.root) == before
    events = tmp_path / "events.csv"
    events.write_text("request_id,ts,credential,posts\nr1,2025-01-02T00:00:00Z,key-1,5\n")
    assessed = runner.invoke(
        app, ["--home", str(home), "scraping", "assess", "--events", str(events), "--json"]
    )
    assert assessed.exit_code == 0, assessed.stderr


# ------------------------------------------------------------------------- against a model

_DAYS = st.none() | st.integers(min_value=0, max_value=6)
_ROW = st.fixed_dictionaries(
    {
        "credential": st.sampled_from(["a", "b"]),
        "entity": st.sampled_from(["x", "y"]),
        "valid_from": _DAYS,
        "length": st.none() | st.integers(min_value=1, max_value=3),
    }
)


def _at(days: int | None) -> datetime | None:
    return None if days is None else T0 + days * DAY


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.lists(_ROW, max_size=4), min_size=1, max_size=4))
def test_an_import_is_refused_exactly_when_the_merged_table_would_overlap(
    batches: list[list[dict[str, Any]]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    lake = Lake(tmp_path_factory.mktemp("model") / "lake")
    model: dict[tuple[str, int | None], dict[str, Any]] = {}
    for batch in batches:
        rows = []
        for r in batch:
            end = None
            if r["length"] is not None:
                end = (r["valid_from"] or 0) + r["length"]
            rows.append(
                {
                    "credential": r["credential"],
                    "entity": r["entity"],
                    "valid_from": r["valid_from"],
                    "valid_to": end,
                }
            )
        merged = dict(model)
        for row in rows:
            merged[(row["credential"], row["valid_from"])] = row
        overlapping = bool(_brute_overlaps(list(merged.values())))
        data = pa.Table.from_pylist(
            [dict(r, valid_from=_at(r["valid_from"]), valid_to=_at(r["valid_to"])) for r in rows],
            schema=arrow_schema("entities"),
        )
        if overlapping:
            with pytest.raises(BadInput, match="may not overlap"):
                import_arrow(lake, "entities", data, origin="model")
        else:
            import_arrow(lake, "entities", data, origin="model")
            model = merged
        stored = {
            (r["credential"], r["valid_from"]): (r["entity"], r["valid_to"])
            for r in lake.read_arrow("entities").to_pylist()
        }
        assert stored == {
            (c, _at(f)): (r["entity"], _at(r["valid_to"])) for (c, f), r in model.items()
        }
