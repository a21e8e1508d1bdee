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


def _errors(stderr: str) -> list[str]:
    """The `error:` lines of a command, unwrapped (Rich wraps long lines)."""
    return [e.strip() for e in " ".join(stderr.split()).split("error:") if e.strip()]


def test_overlapping_entities_get_the_import_message_everywhere(
    settings: Settings, tmp_path: Path
) -> None:
    """`import entities`, `scraping assess --entities` and `meter-replay --entities` refuse
    one overlapping file with the same problems (one rule, `check_entities`)."""
    init_home(settings)
    events = _events(tmp_path / "events", "csv")
    entities = tmp_path / "entities.csv"
    entities.write_text(
        "credential,entity,valid_from,valid_to\n"
        "ak_x,acme,2025-03-01T00:00:00Z,\n"
        "ak_x,other,,2025-04-01T00:00:00Z\n"
        "ak_y,acme,2025-03-01T00:00:00Z,2025-03-02T00:00:00Z\n"
        "ak_y,acme,2025-03-02T00:00:00Z,\n",
        encoding="utf-8",
    )
    expected = [
        f"{entities}:1: valid_from: credential 'ak_x' is already owned by row 2 "
        "[open, 2025-04-01T00:00:00Z) during this interval "
        "(validity intervals of one credential may not overlap)"
    ]
    code, _, err = run(settings, "import", "entities", str(entities))
    assert (code, _errors(err)) == (2, expected)
    for command in ("assess", "meter-replay"):
        code, _, err = run(
            settings, "scraping", command, "--events", str(events), "--entities", str(entities)
        )
        assert (code, _errors(err)) == (2, expected), command
    assert not (settings.home / "scraping").exists()


@pytest.mark.parametrize(
    ("events_text", "entities_text", "expected"),
    [
        (
            "r1,0000-01-01T00:00:00Z,ak_x,5\n",
            ENTITIES,
            "events.csv:1: ts: instant out of range: '0000-01-01T00:00:00Z'",
        ),
        (
            "r1,2025-03-05T00:00:00Z,ak_x,1000000001\n",
            ENTITIES,
            "events.csv:1: posts: must be <= 1000000000, got 1000000001",
        ),
        (
            "r1,2025-03-05T00:00:00Z,\x00,5\n",
            ENTITIES,
            "events.csv:1: credential: control character U+0000 in an identifier column",
        ),
        (
            "r1,2025-03-05T00:00:00Z,ak_x,5\n",
            "credential,entity,valid_from,valid_to\nak_x,acme,9999-12-31T23:59:59-14:00,\n",
            "entities.csv:1: valid_from: instant out of range: '9999-12-31T23:59:59-14:00'",
        ),
        (
            "r1,2025-03-05T00:00:00Z,ak_x,5\n",
            "credential,entity,valid_from,valid_to\nak_x,,,\n",
            "entities.csv:1: entity: empty value in an identifier column",
        ),
    ],
    ids=["year-0", "posts-max", "nul-credential", "year-9999-offset", "empty-entity"],
)
def test_bad_events_and_entities_exit_2(
    settings: Settings, tmp_path: Path, events_text: str, entities_text: str, expected: str
) -> None:
    init_home(settings)
    events = tmp_path / "events.csv"
    events.write_text("request_id,ts,credential,posts\n" + events_text, encoding="utf-8")
    entities = tmp_path / "entities.csv"
    entities.write_text(entities_text, encoding="utf-8")
    for command in ("assess", "meter-replay"):
        code, _, err = run(
            settings, "scraping", command, "--events", str(events), "--entities", str(entities)
        )
        assert code == 2, command
        assert expected in " ".join(err.split()), command
    assert not (settings.home / "scraping").exists()
