"""The `--events` and `--entities` files of `consentry scraping assess` and `meter-replay`:
read and validated by the import rules (docs/tables.md), so what one accepts the other does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consentry.cli.admin import init_home
from consentry.cli.main import app
from consentry.settings import Settings

runner = CliRunner()

ENTITIES = "credential,entity,valid_from,valid_to\nak_x,acme,,\n"


def run(settings: Settings, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--home", str(settings.home), *args])
    return result.exit_code, result.stdout, result.stderr


def _events(path: Path, fmt: str, *, bom: bool = False) -> Path:
    """Two accesses of `ak_x`, without the optional `endpoint` column."""
    rows = [
        {"request_id": "r1", "ts": "2025-03-05T00:00:00Z", "credential": "ak_x", "posts": 5},
        {"request_id": "r2", "ts": "2025-03-05T01:00:00Z", "credential": "ak_x", "posts": 7},
    ]
    if fmt == "csv":
        text = "request_id,ts,credential,posts\n" + "".join(
            f"{r['request_id']},{r['ts']},{r['credential']},{r['posts']}\n" for r in rows
        )
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
    target = path.with_suffix("." + fmt)
    target.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return target


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_events_without_the_optional_endpoint_column(
    settings: Settings, tmp_path: Path, fmt: str
) -> None:
    init_home(settings)
    events = _events(tmp_path / "events", fmt)
    entities = tmp_path / "entities.csv"
    entities.write_text(ENTITIES, encoding="utf-8")
    files = ["--events", str(events), "--entities", str(entities), "--json"]
    code, out, err = run(settings, "scraping", "assess", *files)
    assert code == 0, err
    (acme,) = json.loads(out)["entities"]
    assert (acme["entity"], acme["posts_total"]) == ("acme", 12)
    code, out, err = run(settings, "scraping", "meter-replay", *files)
    assert code == 0, err
    assert json.loads(out)["events"] == 2


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_events_and_entities_with_a_byte_order_mark(
    settings: Settings, tmp_path: Path, fmt: str
) -> None:
    init_home(settings)
    events = _events(tmp_path / "events", fmt, bom=True)
    entities = tmp_path / "entities.csv"
    entities.write_text("\ufeff" + ENTITIES, encoding="utf-8")
    code, out, err = run(
        settings,
        "scraping",
        "assess",
        "--events",
        str(events),
        "--entities",
        str(entities),
        "--json",
    )
    assert code == 0, err
    (acme,) = json.loads(out)["entities"]
    assert (acme["entity"], acme["posts_total"]) == ("acme", 12)
