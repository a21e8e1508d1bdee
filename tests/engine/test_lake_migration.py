"""A home whose lake was written by the snapshot scheme (before Delta Lake) is converted by
`consentry init`: every row kept, a job interrupted before its publish still recovers, and
a conversion killed (SIGKILL) after any table's commit finishes on the next `init`.

`data/home-snapshot-lake.tar.gz` was made with Consentry at commit 97cb53f: `init`, `demo
generate --users 300 --posts 3000 --access-events 2000 --seed 3`, `demo cycle`, then
`deliver demo-ai-lab` killed at its step `deliver.lineage_staged` (its lineage staged under
a token, not yet published); the demo's Parquet files removed.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from consentry.doctor import run_doctor
from consentry.engine import Lake
from consentry.settings import Settings
from tests.delivery.conftest import run_cli
from tests.killed import cli_killed_at

ARCHIVE = Path(__file__).with_name("data") / "home-snapshot-lake.tar.gz"
TABLES = ["access_events", "consent_events", "delivery_lineage", "entities", "posts", "users"]


def _unpack(tmp_path: Path) -> Path:
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(tmp_path, filter="data")
    return tmp_path / "home"


def _old_rows(home: Path) -> dict[str, pa.Table]:
    """Each table's live snapshot as the old lake read it (CURRENT, then its parts)."""
    rows = {}
    for table in TABLES:
        folder = home / "lake" / table
        live = folder / (folder / "CURRENT").read_text().strip()
        rows[table] = pq.read_table(sorted(str(p) for p in live.glob("part-*.parquet")))
    return rows


def _same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Same rows, whatever the order and the columns' declared nullability."""
    keys = [(name, "ascending") for name in a.column_names]
    return bool(a.sort_by(keys).equals(b.select(a.column_names).cast(a.schema).sort_by(keys)))


def test_init_converts_every_table_and_keeps_every_row(tmp_path: Path) -> None:
    home = _unpack(tmp_path)
    before = _old_rows(home)
    lake = Lake(home / "lake")
    with pytest.raises(Exception, match="run `consentry init` to convert it"):
        lake.tables()
    result = run_cli(home, "init", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert sorted(t["table"] for t in report["lake_converted"]) == TABLES
    assert {t["table"]: t["rows"] for t in report["lake_converted"]} == {
        t: before[t].num_rows for t in TABLES
    }
    assert lake.tables() == TABLES
    for table in TABLES:
        folder = home / "lake" / table
        assert not (folder / "CURRENT").exists()
        assert lake.version(table) == 0
        # delta-rs's own reader sees the rows the old lake held.
        assert _same_rows(DeltaTable(str(folder)).to_pyarrow_table(), before[table]), table
    # The delivery killed before its publish kept its staged lineage, under the same token.
    assert len(lake.staged_tokens("delivery_lineage")) == 1
    again = json.loads(run_cli(home, "init", "--json").stdout)
    assert again["lake_converted"] == []
    # The next command recovers the interrupted delivery (finished or undone), then works.
    delivered = run_cli(home, "deliver", "demo-ai-lab", "--json")
    assert delivered.exit_code == 0, delivered.stderr
    assert lake.staged_tokens("delivery_lineage") == []
    lineage = lake.read_arrow("delivery_lineage")
    assert before["delivery_lineage"].num_rows < lineage.num_rows
    assert set(before["delivery_lineage"]["delivery_id"].to_pylist()) < set(
        lineage["delivery_id"].to_pylist()
    )
    doctor = run_doctor(Settings(home=home))
    assert doctor.ok, doctor.first_violation


@pytest.mark.parametrize("kill_at", [1, 3, 6])
def test_a_conversion_killed_after_a_commit_finishes_on_the_next_init(
    tmp_path: Path, kill_at: int
) -> None:
    home = _unpack(tmp_path)
    before = _old_rows(home)
    cli_killed_at(f"lake.converted@{kill_at}", home, "init")
    # The killed table has its Delta commit and still its CURRENT pointer.
    both = [
        t
        for t in TABLES
        if (home / "lake" / t / "CURRENT").exists() and (home / "lake" / t / "_delta_log").exists()
    ]
    assert len(both) == 1
    result = run_cli(home, "init", "--json")
    assert result.exit_code == 0, result.stderr
    converted = {t["table"] for t in json.loads(result.stdout)["lake_converted"]}
    assert len(converted) == len(TABLES) - kill_at
    lake = Lake(home / "lake")
    for table in TABLES:
        assert not (home / "lake" / table / "CURRENT").exists()
        assert _same_rows(lake.read_arrow(table), before[table])
    assert run_cli(home, "recover").exit_code == 0
    assert run_doctor(Settings(home=home)).ok
