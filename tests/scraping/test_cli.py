"""`consentry scraping assess|evidence|meter-replay` on the demo platform and on bad input."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from consentry.cli.admin import init_home
from consentry.cli.main import app
from consentry.demo import read_facts
from consentry.settings import Settings
from tests.lineage_events import check_run, dataset, read_events, runs

runner = CliRunner()


def run(home: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["--home", str(home), *args])
    return result.exit_code, result.stdout, result.stderr


def assess_json(home: Path, demo_dir: Path, *extra: str) -> dict[str, Any]:
    code, out, err = run(
        home,
        "scraping",
        "assess",
        "--events",
        str(demo_dir / "access_events.parquet"),
        "--entities",
        str(demo_dir / "entities.parquet"),
        "--json",
        *extra,
    )
    assert code == 0, err
    parsed: dict[str, Any] = json.loads(out)
    return parsed


def test_the_three_demo_scrapers_come_out_as_designed(settings: Settings, demo_dir: Path) -> None:
    init_home(settings)
    doc = assess_json(settings.home, demo_dir)
    facts = read_facts(demo_dir)
    assert doc["policy_version"] == "2024-11-15"
    assert (doc["threshold_posts"], doc["window_seconds"]) == (1_000_000, 86_400)
    assert (doc["rounding"], doc["mode"], doc["currency"]) == ("pro_rata", "earliest", "USD")
    names = [e["entity"] for e in doc["entities"]]
    assert names == sorted(names)
    by = {e["entity"]: e for e in doc["entities"]}
    for s in facts.scrapers:
        e = by[s.entity]
        assert e["max_posts_in_window"] == s.max_24h_posts
        assert e["max_window_start"] == s.window_start.isoformat().replace("+00:00", "Z")
        assert e["posts_total"] == s.total_posts
    alpha, bravo, charlie = by["scraper-alpha"], by["scraper-bravo"], by["scraper-charlie"]
    assert [(w["start"], w["posts"], w["amount"]) for w in alpha["windows"]] == [
        ("2025-03-05T02:00:00Z", 3_500_000, "52500.00")
    ]
    assert bravo["windows"] == []
    assert bravo["amount"] == "0.00"
    (window,) = charlie["windows"]
    assert (window["start"], window["end"]) == ("2025-03-07T18:00:00Z", "2025-03-08T18:00:00Z")
    assert window["posts"] == 1_200_000
    assert window["amount"] == "18000.00"
    assert charlie["amount"] == "18000.00"
    assert doc["total_amount"] == "70500.00"
    assert all(not e["windows"] for n, e in by.items() if not n.startswith("scraper-"))
    # The credentials of charlie's window include its CIDR-matched IPs and both keys.
    assert "192.0.2.66" in window["credentials"]
    assert "ak_2d6f8a0c4e1b7359c3e8" in window["credentials"]
    # Recorded: a file whose canonical JSON hash the audit event carries.
    assert doc["assessment_id"]
    recorded = settings.home / "scraping" / "assessments" / f"{doc['assessment_id']}.json"
    assert recorded.is_file()
    from consentry.audit import SqlAuditSink
    from consentry.store import open_store

    with open_store(settings.resolved_database_url) as store, store.session() as session:
        (event,) = SqlAuditSink.read(session, event_type="scraping.assessed")
    assert event.payload["result_sha256"] == hashlib.sha256(recorded.read_bytes()).hexdigest()
    assert event.payload["billed_entities"] == 2
    assert event.payload["total_amount"] == "70500.00"
    (run,) = runs(read_events(settings.home), "scraping.assess")
    done = check_run(run)
    events_file = dataset(done["inputs"], "access_events.parquet")
    assert events_file["inputFacets"]["inputStatistics"]["rowCount"] == doc["accesses"]
    assert dataset(done["inputs"], "entities.parquet")["namespace"] == "file"
    result = dataset(done["outputs"], f"{doc['assessment_id']}.json")
    assert result["outputFacets"]["outputStatistics"]["rowCount"] == len(doc["entities"])


def test_roundings_and_max_total(settings: Settings, demo_dir: Path) -> None:
    floor = assess_json(settings.home, demo_dir, "--rounding", "per_full_million")
    ceil = assess_json(settings.home, demo_dir, "--rounding", "per_started_million")
    assert floor["total_amount"] == "60000.00"  # 3 + 1 full millions
    assert ceil["total_amount"] == "90000.00"  # 4 + 2 started millions
    best = assess_json(settings.home, demo_dir, "--mode", "max_total")
    by = {e["entity"]: e for e in best["entities"]}
    # max_total may take a window holding all of charlie's 1,350,000 posts? No: its blocks
    # span more than 24 h; it still bills at least what earliest bills.
    assert sum(w["posts"] for w in by["scraper-charlie"]["windows"]) >= 1_200_000
    assert best["assessment_id"] is None  # the home was never initialised: not recorded


def test_evidence_pack(settings: Settings, demo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "pack"
    code, stdout, err = run(
        settings.home,
        "scraping",
        "evidence",
        "scraper-charlie",
        "--events",
        str(demo_dir / "access_events.parquet"),
        "--entities",
        str(demo_dir / "entities.parquet"),
        "--out",
        str(out),
        "--json",
    )
    assert code == 0, err
    pack = json.loads(stdout)
    assert {"report.html", "chart.png", "events.parquet", "evidence.json"} <= set(pack["files"])
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert "scraper-charlie" in html
    assert "USD 18,000.00" in html
    assert "192.0.2.66" in html
    # This home was never initialised: no ledger history, so the pack says so instead of
    # stating what was served (tests/scraping/test_served.py covers an initialised home).
    assert pack["signals_served"] is None
    assert "Not stated: this home has no initialised ledger" in html
    table = pq.read_table(out / "events.parquet")
    assert pa.compute.sum(table["posts"]).as_py() == 1_200_000
    (window,) = pack["windows"]
    meta = table.schema.metadata
    assert (
        meta[f"consentry.evidence_sha256.{window['start']}".encode()].decode()
        == window["evidence_sha256"]
    )
    # Anyone can recompute the digest from the Parquet file with the documented form.
    rows = sorted(table.to_pylist(), key=lambda r: (r["ts"], r["request_id"]))
    text = "".join(
        f"{r['ts'].strftime('%Y-%m-%dT%H:%M:%S.%f')}Z\t{r['request_id']}\t{r['credential']}\t{r['posts']}\n"
        for r in rows
    )
    assert hashlib.sha256(text.encode()).hexdigest() == window["evidence_sha256"]


def test_an_unknown_entity_gets_did_you_mean_and_exit_2(
    settings: Settings, demo_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pack"
    files = ["--events", str(demo_dir / "access_events.parquet")]
    files += ["--entities", str(demo_dir / "entities.parquet")]
    code, stdout, err = run(
        settings.home, "scraping", "evidence", "scraper-alpa", *files, "--out", str(out)
    )
    assert code == 2, err
    assert stdout == ""
    assert "no entity named 'scraper-alpa'; did you mean 'scraper-alpha'?" in " ".join(err.split())
    assert not out.exists()
    # Nothing close: the known names are listed instead.
    code, _, err = run(settings.home, "scraping", "evidence", "zzzz", *files, "--out", str(out))
    assert code == 2
    assert "no entity named 'zzzz'; known: acme-research" in " ".join(err.split())


def test_assess_prints_money_and_counts_in_words(settings: Settings, demo_dir: Path) -> None:
    code, stdout, err = run(
        settings.home,
        "scraping",
        "assess",
        "--events",
        str(demo_dir / "access_events.parquet"),
        "--entities",
        str(demo_dir / "entities.parquet"),
    )
    assert code == 0, err
    text = " ".join(stdout.split())
    assert "USD 15,000.00 per million" in text
    assert re.search(r"total USD \d{1,3}(,\d{3})*\.\d\d \(not recorded", text), text
    assert re.search(r"\d accesses, \d+ entities", text), text


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("version", "version: no version '1999'"),
        ("malformed", "events.csv:2: ts: unparsable timestamp"),
        ("negative", "events.csv:1: posts: must be >= 0"),
        ("overlap", "entities.csv:2: valid_from: credential 'ak_x' is already owned by row 1"),
        ("cidr", "entities.csv:1: credential: not a CIDR range"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    settings: Settings, tmp_path: Path, kind: str, expected: str
) -> None:
    init_home(settings)
    good = "request_id,ts,credential,posts,endpoint\nr1,2025-03-05T00:00:00Z,ak_x,5,\n"
    events = _write(tmp_path / "events.csv", good)
    entities = _write(
        tmp_path / "entities.csv",
        "credential,entity,valid_from,valid_to\nak_x,acme,,\n",
    )
    args = ["--events", str(events), "--entities", str(entities)]
    if kind == "version":
        args += ["--policy-version", "1999"]
    elif kind == "malformed":
        _write(events, good + "r2,yesterday,ak_x,5,\n")
    elif kind == "negative":
        _write(events, good.replace(",5,", ",-5,"))
    elif kind == "overlap":
        _write(
            entities,
            "credential,entity,valid_from,valid_to\nak_x,acme,,2025-04-01T00:00:00Z\n"
            "ak_x,other,2025-03-01T00:00:00Z,\n",
        )
    elif kind == "cidr":
        _write(entities, "credential,entity,valid_from,valid_to\n10.0.0.1/24,acme,,\n")
    code, _, err = run(settings.home, "scraping", "assess", *args, "--json")
    assert code == 2
    assert expected in " ".join(err.split())
    assert not (settings.home / "scraping").exists()


def test_meter_replay_cli(settings: Settings, demo_dir: Path) -> None:
    code, out, err = run(
        settings.home,
        "scraping",
        "meter-replay",
        "--events",
        str(demo_dir / "access_events.parquet"),
        "--entities",
        str(demo_dir / "entities.parquet"),
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    levels = {(a["entity"], a["level"]) for a in report["alerts"]}
    assert {("scraper-alpha", 100), ("scraper-charlie", 100), ("scraper-bravo", 80)} <= levels
    assert ("scraper-bravo", 100) not in levels
