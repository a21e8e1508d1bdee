"""`consentry signals export` through the CLI, on a SQLite home."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

from typer.testing import CliRunner

from consentry.cli.admin import init_home
from consentry.cli.main import app
from consentry.ledger.service import Evidence
from consentry.ledger.sync import ledger_for
from consentry.policy import Choice
from consentry.settings import Settings
from tests.factories import users_table

runner = CliRunner()


def cli(home: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--home", str(home), *args])
    return result.exit_code, result.stdout, result.stderr


def test_export_then_since_then_unknown_cursor(settings: Settings, tmp_path: Path) -> None:
    init_home(settings)
    ledger = ledger_for(settings)
    try:
        ledger.sync_subjects(
            users_table([("alice", "US", date(1980, 1, 1)), ("bob", "US", date(1981, 1, 1))])
        )
    finally:
        ledger.store.close()
    home = settings.home
    full = tmp_path / "full.ndjson"
    code, out, err = cli(
        home,
        "signals",
        "export",
        "--at",
        "2025-01-01",
        "--base-url",
        "https://x.example",
        "--out",
        str(full),
        "--json",
    )
    assert code == 0, err
    first = json.loads(out)
    assert (first["authors"], first["put"], first["remove"]) == (2, 2, 0)
    lines = full.read_text().splitlines()
    assert [json.loads(line).get("key") for line in lines] == ["alice", "bob", None]
    assert json.loads(lines[-1])["cursor"] == first["cursor"]

    ledger = ledger_for(settings)
    try:
        ledger.record(
            "bob",
            "ai_training_third_party",
            Choice.DENY,
            source="settings",
            evidence=Evidence(),
            at=datetime(2025, 1, 2, tzinfo=UTC),
        )
    finally:
        ledger.store.close()
    code, out, err = cli(
        home,
        "signals",
        "export",
        "--at",
        "2025-01-03",
        "--base-url",
        "https://x.example",
        "--since",
        first["cursor"],
    )
    assert code == 0, err
    assert "2 authors" in out
    assert "1 put, 0 removed" in out
    written = Path(out.split("wrote ", 1)[1].split("\n", 1)[0])
    assert written.parent == home / "signals" / "exports"
    entry, trailer = (json.loads(line) for line in written.read_text().splitlines())
    assert entry == {
        "key": "bob",
        "value": {
            "content-usage": "train-ai=n",
            "tdm-reservation": "1",
            "tdm-policy": "https://x.example/policies/tdm.json",
            "x-robots-tag": "noai, noimageai",
        },
    }
    assert trailer["since"] == first["cursor"]

    code, _, err = cli(home, "signals", "export", "--base-url", "https://x", "--since", "a9-x-0")
    assert code == 2
    assert "unknown cursor 'a9-x-0'" in err
    code, _, err = cli(home, "signals", "export")
    assert code == 2
    assert "--base-url" in err
