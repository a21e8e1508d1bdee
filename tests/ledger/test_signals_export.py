"""Every author's signal headers at once (`consentry.ledger.export`): the vectorised mapping
agrees with the per-author rule, diffs are exact, files are whole or absent."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consentry.cli.admin import init_home
from consentry.errors import BadInput
from consentry.ledger.export import (
    EXPORT_FORMAT,
    atomic_write,
    diff_snapshots,
    export_signals,
    header_set,
)
from consentry.ledger.service import ConsentLedger, Evidence
from consentry.ledger.sync import ledger_for
from consentry.policy import Choice
from consentry.settings import Settings
from tests.factories import users_table

BASE = "https://platform.example"
THIRD = "ai_training_third_party"
BEFORE_V2 = datetime(2024, 11, 1, tzinfo=UTC)  # version 2023-09-29 in force
AFTER_V2 = datetime(2024, 12, 1, tzinfo=UTC)  # version 2024-11-15 in force
LATER = datetime(2025, 2, 1, tzinfo=UTC)

# Adults in the US, France (EU: opted out by the region default), Japan; a minor; an
# account without a birth date (treated as an adult by this policy).
POPULATION = [
    ("us1", "US", date(1980, 1, 1)),
    ("us2", "US", date(1990, 5, 5)),
    ("fr1", "FR", date(1985, 2, 2)),
    ("jp1", "JP", date(1970, 3, 3)),
    ("kid", "US", date(2015, 6, 6)),
    ("anon", None, None),
]


@pytest.fixture
def ledger(request: pytest.FixtureRequest, home: Path) -> Iterator[ConsentLedger]:
    """A home with `POPULATION` synced; on SQLite unless parametrised `postgresql`."""
    backend = getattr(request, "param", "sqlite")
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    settings = Settings(home=home, database_url=url)
    init_home(settings)
    ledger = ledger_for(settings)
    ledger.sync_subjects(users_table(POPULATION))
    yield ledger
    ledger.store.close()


def _lines(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(key -> value, trailer) of an export file."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    *entries, trailer = rows
    assert [e["key"] for e in entries] == sorted(e["key"] for e in entries)
    return {e["key"]: e["value"] for e in entries}, trailer


def _expected(ledger: ConsentLedger, at: datetime) -> dict[str, dict[str, str]]:
    """The per-author rule, one author at a time through the scalar resolver."""
    version = ledger.policy.version_at(at)
    return {
        user: json.loads(header_set(version, ledger.resolve_all(user, at), BASE).value_json)
        for user, _, _ in POPULATION
    }


@pytest.mark.parametrize(
    "ledger", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)
def test_full_export_matches_the_per_author_rule(ledger: ConsentLedger, home: Path) -> None:
    exports = home / "signals" / "exports"
    result = export_signals(ledger, exports, at=AFTER_V2, base_url=BASE)
    values, trailer = _lines(result.out)
    assert values == _expected(ledger, AFTER_V2)
    assert values["fr1"] == {
        "content-usage": "train-ai=n",
        "tdm-reservation": "1",
        "tdm-policy": f"{BASE}/policies/tdm.json",
        "x-robots-tag": "noai, noimageai",
    }
    assert values["us1"] == {"content-usage": "train-ai=y"}
    assert trailer == {
        "format": EXPORT_FORMAT,
        "cursor": result.cursor,
        "since": None,
        "at": "2024-12-01T00:00:00Z",
        "policy_version": "2024-11-15",
        "authors": 6,
        "put": 6,
        "remove": 0,
    }
    assert result.out == exports / f"{result.cursor}.ndjson"
    assert (exports / f"{result.cursor}.parquet").is_file()
    assert sorted(p.name for p in exports.iterdir() if p.name.startswith(".")) == []
    # Three header sets: allowed (us1, us2, jp1, anon), refused by region (fr1) and by age
    # (kid) share one set, so two distinct sets in all.
    assert sorted(s["authors"] for s in result.header_sets) == [2, 4]


def test_an_opt_out_then_since_gives_exactly_that_author(ledger: ConsentLedger, home: Path) -> None:
    exports = home / "signals" / "exports"
    first = export_signals(ledger, exports, at=AFTER_V2, base_url=BASE)
    ledger.record(
        "us2",
        THIRD,
        Choice.DENY,
        source="api",
        evidence=Evidence(),
        at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    second = export_signals(ledger, exports, at=LATER, base_url=BASE, since=first.cursor)
    values, trailer = _lines(second.out)
    assert values == {"us2": _expected(ledger, LATER)["us2"]}
    assert values["us2"]["x-robots-tag"] == "noai, noimageai"
    assert (trailer["since"], trailer["put"], trailer["remove"]) == (first.cursor, 1, 0)
    assert second.cursor != first.cursor
    # Nothing changed since: an empty diff, and the same content gives the same cursor.
    third = export_signals(ledger, exports, at=LATER, base_url=BASE, since=second.cursor)
    assert _lines(third.out) == ({}, {**trailer, "since": second.cursor, "put": 0})
    assert third.cursor == second.cursor
    assert third.out == exports / f"{second.cursor}.since-{second.cursor}.ndjson"
    assert second.out == exports / f"{second.cursor}.since-{first.cursor}.ndjson"
    assert _lines(first.out)[1]["put"] == 6  # the full export is still whole


def test_a_policy_version_change_gives_the_affected_authors(
    ledger: ConsentLedger, home: Path
) -> None:
    exports = home / "signals" / "exports"
    first = export_signals(ledger, exports, at=BEFORE_V2, base_url=BASE)
    assert first.policy_version == "2023-09-29"
    second = export_signals(ledger, exports, at=AFTER_V2, base_url=BASE, since=first.cursor)
    values, _ = _lines(second.out)
    before, after = _expected(ledger, BEFORE_V2), _expected(ledger, AFTER_V2)
    assert set(values) == {u for u in after if after[u] != before[u]}
    # The EU region default of 2024-11-15 refuses training for the French adult; the minor
    # was refused under both versions.
    assert "fr1" in values
    assert "kid" not in values
    assert values["fr1"]["x-robots-tag"] == "noai, noimageai"


def test_a_deleted_author_is_removed_back_to_the_default(ledger: ConsentLedger, home: Path) -> None:
    exports = home / "signals" / "exports"
    first = export_signals(ledger, exports, at=AFTER_V2, base_url=BASE)
    gone = users_table([p for p in POPULATION if p[0] == "jp1"])
    gone = gone.set_column(
        gone.schema.get_field_index("deleted_at"),
        "deleted_at",
        pa.array([datetime(2025, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC")),
    )
    ledger.sync_subjects(gone)
    second = export_signals(ledger, exports, at=LATER, base_url=BASE, since=first.cursor)
    values, trailer = _lines(second.out)
    assert values == {"jp1": None}
    assert (trailer["authors"], trailer["put"], trailer["remove"]) == (5, 0, 1)


def test_an_unknown_cursor_is_bad_input_and_writes_nothing(
    ledger: ConsentLedger, home: Path
) -> None:
    exports = home / "signals" / "exports"
    for cursor in ("a1-2024-11-15-000000000000", "../../etc/passwd", ""):
        with pytest.raises(BadInput, match="unknown cursor"):
            export_signals(ledger, exports, at=AFTER_V2, base_url=BASE, since=cursor)
    assert not exports.exists()


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path: Path) -> None:
    target = tmp_path / "signals.ndjson"
    target.write_text("old, complete\n")

    def half_then_killed(tmp: Path) -> None:
        tmp.write_text('{"key": "a", "value": {"content-usage": "tr')
        raise KeyboardInterrupt  # what SIGINT raises midway through a write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_killed)
    assert target.read_text() == "old, complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["signals.ndjson"]
    atomic_write(target, lambda tmp: tmp.write_text("new\n"))
    assert target.read_text() == "new\n"
    assert [p.name for p in tmp_path.iterdir()] == ["signals.ndjson"]


_KILLED_WRITER = """
import sys, time
from pathlib import Path
from consentry.ledger.export import atomic_write

def fill(tmp: Path) -> None:
    with tmp.open("w") as handle:
        handle.write('{"key": "a", "value": {"content-usage": "tr')
        handle.flush()
        Path(sys.argv[2]).touch()  # tell the test the half line is on disk
        time.sleep(60)

atomic_write(Path(sys.argv[1]), fill)
"""


def test_a_writer_killed_midway_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "signals.ndjson"
    target.parent.mkdir()
    target.write_text("old, complete\n")
    ready = tmp_path / "ready"
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(target), str(ready)])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert writer.poll() is None, "the writer ended before writing"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        writer.kill()  # SIGKILL: no handler, no clean-up runs
        writer.wait()
    assert target.read_text() == "old, complete\n"
    (partial,) = [p for p in target.parent.iterdir() if p != target]
    assert partial.name.startswith(".signals.ndjson.")
    assert partial.name.endswith(".tmp")


_STATES = st.dictionaries(
    st.text(alphabet="abcdef", min_size=1, max_size=3), st.sampled_from(["h1", "h2", "h3"])
)


@settings(max_examples=60, deadline=None)
@given(_STATES, _STATES)
def test_applying_a_diff_to_the_old_state_gives_the_new(
    old: dict[str, str], new: dict[str, str]
) -> None:
    def table(state: dict[str, str]) -> pa.Table:
        return pa.table(
            {
                "author_id": pa.array(list(state), pa.string()),
                "header_hash": pa.array(list(state.values()), pa.string()),
            }
        )

    put, remove = diff_snapshots(table(old), table(new))
    applied = {k: v for k, v in old.items() if k not in set(remove.to_pylist())}
    applied.update({k: new[k] for k in put.to_pylist()})
    assert applied == new
    # Minimal: nothing unchanged is put.
    assert all(old.get(k) != new[k] for k in put.to_pylist())
