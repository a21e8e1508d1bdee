"""`consentry deliver`, `explain` and `verify-delivery` on a generated demo platform.

The demo platform's EU-only delivery holds only EU users who explicitly opted in; before
2024-11-15 nothing goes to third-party training; `explain` agrees with the build on every
post; a killed build leaves nothing visible; bad arguments exit 2.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from consentry.api.app import create_app
from consentry.delivery.build import DELIVERED_SCHEMA, evaluate_posts
from consentry.delivery.eligibility import LicenceScope, reasons_of
from consentry.delivery.service import list_deliveries
from consentry.engine import Lake, connect
from consentry.ledger.rules import ConsentRule
from consentry.ledger.sync import ledger_for
from consentry.policy import Choice, expand_region
from consentry.settings import Settings
from tests.delivery.conftest import THIRD, run_cli
from tests.lineage_events import check_run, dataset, read_events, runs

AS_OF = "2025-09-01T00:00:00Z"
AS_OF_DT = datetime(2025, 9, 1, tzinfo=UTC)
BEFORE = "2024-11-14T23:59:59Z"
EU = expand_region("EU")
EXPLAIN_SAMPLE = 30
DIGIT_RUN = re.compile(r"\d+")


def cli_json(home: Path, *args: str) -> Any:
    result = run_cli(home, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def platform(demo_home: Path) -> Path:
    """The demo home with licensees: `eu-lab` (EU only), `open-lab` (everywhere), `grok`
    (first-party training, everywhere)."""
    for args in (
        ("eu-lab", "--purpose", THIRD, "--regions", "EU"),
        ("open-lab", "--purpose", THIRD),
        ("grok", "--purpose", "ai_training_first_party"),
    ):
        result = run_cli(demo_home, "licensee", "add", *args)
        assert result.exit_code == 0, result.output
    return demo_home


@pytest.fixture(scope="module")
def eu_delivery(platform: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = cli_json(platform, "deliver", "eu-lab", "--as-of", AS_OF)
    return manifest


@pytest.fixture(scope="module")
def open_delivery(platform: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = cli_json(platform, "deliver", "open-lab", "--as-of", AS_OF)
    return manifest


def lineage(home: Path, delivery_id: str) -> pa.Table:
    table = Lake(home / "lake").read_arrow("delivery_lineage")
    return table.filter(pc.equal(table.column("delivery_id"), delivery_id))


def evaluated(home: Path, scope: LicenceScope, as_of: datetime) -> dict[str, dict[str, Any]]:
    """Every post's row of the build's own expression, by post_id."""
    settings = Settings(home=home)
    ledger = ledger_for(settings)
    try:
        purposes = sorted({p.key for v in ledger.policy.versions for p in v.purposes})
        events, policy = ledger.events_arrow(purposes, as_of), ledger.policy
    finally:
        ledger.store.close()
    backend = connect("duckdb")
    expr = evaluate_posts(backend, Lake.of(settings), policy, events, scope, as_of)
    return {r["post_id"]: r for r in backend.to_pyarrow(expr).to_pylist()}


# -- the Done-when lines -----------------------------------------------------------------------


def test_eu_only_delivery_holds_only_eu_users_who_explicitly_opted_in(
    platform: Path, eu_delivery: dict[str, Any]
) -> None:
    counts = eu_delivery["counts"]
    assert eu_delivery["policy_version"] == "2024-11-15"
    assert counts["delivered"] > 0
    assert counts["excluded"]["out_of_scope_region"] > 0
    assert counts["excluded"]["consent_denied"] > 0  # EU users who never opted in
    rows = lineage(platform, eu_delivery["delivery_id"])
    assert rows.num_rows == counts["delivered"]
    authors = set(rows.column("author_id").to_pylist())
    ledger = ledger_for(Settings(home=platform))
    try:
        for author in authors:
            subject = ledger.subject(author)
            assert subject is not None
            assert subject.region in EU, (author, subject.region)
            decision = ledger.resolve(author, THIRD, AS_OF_DT)
            assert decision.decision is Choice.ALLOW, author
            assert decision.rule is ConsentRule.EXPLICIT, author

        # And every such post is there: recompute the set from the lake and the ledger.
        lake = Lake(platform / "lake")
        posts = lake.read_arrow("posts").to_pylist()
        users = {u["user_id"]: u for u in lake.read_arrow("users").to_pylist()}

        def gone(at: datetime | None) -> bool:
            return at is not None and at <= AS_OF_DT

        candidates = [
            p
            for p in posts
            if p["created_at"] <= AS_OF_DT
            and p["visibility"] == "public"
            and not gone(p["deleted_at"])
            and p["author_id"] in users
            and users[p["author_id"]]["region"] in EU
            and not gone(users[p["author_id"]]["deleted_at"])
            and not gone(users[p["author_id"]]["deactivated_at"])
            and not users[p["author_id"]]["protected"]
        ]
        decided = {
            a: ledger.resolve(a, THIRD, AS_OF_DT).decision
            for a in {p["author_id"] for p in candidates}
        }
    finally:
        ledger.store.close()
    want = {p["post_id"] for p in candidates if decided[p["author_id"]] is Choice.ALLOW}
    assert set(rows.column("post_id").to_pylist()) == want
    # The explicit opt-ins are a minority of the EU's posts: the filter did real work.
    assert len(want) < len(candidates)


def test_a_delivery_is_an_openlineage_run_with_its_datasets(
    platform: Path, eu_delivery: dict[str, Any]
) -> None:
    (run,) = [
        r
        for r in runs(read_events(platform), "deliver.eu-lab")
        if r[-1]["eventType"] == "COMPLETE"
        and any(d["name"].endswith(eu_delivery["delivery_id"]) for d in r[-1]["outputs"])
    ]
    done = check_run(run)
    assert [d["name"].rsplit("/", 1)[-1] for d in done["inputs"]] == [
        "posts",
        "users",
        "consent_events",
    ]
    parts = dataset(done["outputs"], f"/deliveries/{eu_delivery['delivery_id']}")
    stats = parts["outputFacets"]["outputStatistics"]
    assert stats["rowCount"] == eu_delivery["counts"]["delivered"]
    assert stats["fileCount"] == len(
        list((platform / "deliveries" / eu_delivery["delivery_id"]).glob("part-*.parquet"))
    )
    assert [f["name"] for f in parts["facets"]["schema"]["fields"]] == DELIVERED_SCHEMA.names
    posts = dataset(done["inputs"], "/lake/posts")
    assert posts["inputFacets"]["inputStatistics"]["rowCount"] == Lake(platform / "lake").row_count(
        "posts"
    )


def test_before_2024_11_15_nothing_goes_to_third_party_training(platform: Path) -> None:
    manifest = cli_json(platform, "deliver", "open-lab", "--as-of", BEFORE)
    counts = manifest["counts"]
    assert manifest["policy_version"] == "2023-09-29"
    assert counts["delivered"] == 0
    assert counts["considered"] == Lake(platform / "lake").row_count("posts")
    assert lineage(platform, manifest["delivery_id"]).num_rows == 0
    before = datetime(2024, 11, 14, 23, 59, 59, tzinfo=UTC)
    rows = evaluated(platform, LicenceScope.build(THIRD), before)
    assert not any(r["eligible"] for r in rows.values())
    assert {r["consent_rule"] for r in rows.values()} == {"purpose_not_in_policy"}
    assert {r["consent_decision"] for r in rows.values()} == {"deny"}
    # The purpose that did exist then (Grok training) had eligible posts: the cut-off, not
    # a broken build, is what empties the third-party delivery.
    grok = evaluated(platform, LicenceScope.build("ai_training_first_party"), before)
    assert any(r["eligible"] for r in grok.values())


def test_explain_agrees_with_the_build_on_every_post(
    platform: Path, open_delivery: dict[str, Any]
) -> None:
    rows = evaluated(platform, LicenceScope.build(THIRD), AS_OF_DT)
    delivered = set(lineage(platform, open_delivery["delivery_id"]).column("post_id").to_pylist())
    assert len(rows) == open_delivery["counts"]["considered"]
    for post_id, row in rows.items():
        assert row["eligible"] is (post_id in delivered), post_id
        reasons = reasons_of(row)
        assert (reasons[0] if reasons else None) == row["first_reason"], post_id
    firsts = Counter(r["first_reason"] for r in rows.values() if r["first_reason"])
    excluded = open_delivery["counts"]["excluded"]
    assert {k: v for k, v in excluded.items() if v} == dict(firsts)
    assert open_delivery["counts"]["delivered"] == len(delivered)

    # The CLI on a sample spread over every first reason seen, eligible posts included.
    by_reason: dict[str | None, list[str]] = {}
    for post_id, row in sorted(rows.items()):
        by_reason.setdefault(row["first_reason"], []).append(post_id)
    assert len(by_reason) >= 6
    sample: list[str] = []
    while len(sample) < EXPLAIN_SAMPLE and any(by_reason.values()):
        for ids in by_reason.values():
            if ids and len(sample) < EXPLAIN_SAMPLE:
                sample.append(ids.pop(len(ids) // 2))
    ledger = ledger_for(Settings(home=platform))
    try:
        for post_id in sample:
            report = cli_json(
                platform, "explain", post_id, "--licensee", "open-lab", "--as-of", AS_OF
            )
            row = rows[post_id]
            assert report["post_id"] == post_id
            assert report["licensee"] == "open-lab"
            assert report["as_of"] == AS_OF
            assert report["eligible"] is (post_id in delivered)
            assert report["reasons"] == reasons_of(row)
            if report["reasons"]:
                assert report["reasons"][0] == row["first_reason"]
            decision = ledger.resolve(row["author_id"], THIRD, AS_OF_DT)
            assert report["consent"]["decision"] == decision.decision.value
            assert report["consent"]["rule"] == decision.rule.value
            assert report["consent"]["policy_version"] == "2024-11-15"
    finally:
        ledger.store.close()


def test_explain_prints_a_sentence_without_json(platform: Path) -> None:
    post_id = Lake(platform / "lake").read_arrow("posts").column("post_id")[0].as_py()
    result = run_cli(platform, "explain", post_id, "--licensee", "eu-lab", "--as-of", AS_OF)
    assert result.exit_code == 0, result.output
    assert f"post {post_id} for eu-lab" in result.stdout
    assert "consent:" in result.stdout


def test_deliver_prints_a_summary_without_json(platform: Path) -> None:
    result = run_cli(platform, "deliver", "grok", "--as-of", BEFORE)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "for grok (ai_training_first_party, policy 2023-09-29" in text
    assert "excluded because" in text
    assert "written to" in text


def test_delivered_files_never_contain_internal_ids(
    platform: Path, eu_delivery: dict[str, Any], open_delivery: dict[str, Any]
) -> None:
    lake = Lake(platform / "lake")
    internal = set(lake.read_arrow("posts").column("post_id").to_pylist()) | set(
        lake.read_arrow("users").column("user_id").to_pylist()
    )
    for manifest in (eu_delivery, open_delivery):
        directory = platform / "deliveries" / manifest["delivery_id"]
        for entry in manifest["files"]:
            table = pq.read_table(directory / entry["name"])
            assert "post_id" not in table.column_names
            assert "author_id" not in table.column_names
            for name in table.column_names:
                column = table.column(name)
                if pa.types.is_string(column.type):
                    values = [v for v in column.to_pylist() if v]
                    assert not set(values) & internal, name
                    # Nor inside a value (a text quoting an id): the ids are digit runs.
                    runs = {m for v in values for m in DIGIT_RUN.findall(v)}
                    assert not runs & internal, name


# -- safety ----------------------------------------------------------------------------------


def test_a_disabled_licensee_gets_nothing(platform: Path) -> None:
    assert run_cli(platform, "licensee", "add", "gone", "--purpose", THIRD).exit_code == 0
    assert run_cli(platform, "licensee", "disable", "gone").exit_code == 0
    before = sorted(p.name for p in (platform / "deliveries").iterdir())
    result = run_cli(platform, "deliver", "gone", "--as-of", AS_OF)
    assert result.exit_code == 1
    assert "licensee 'gone' is disabled" in " ".join(result.stderr.split())
    assert sorted(p.name for p in (platform / "deliveries").iterdir()) == before


# The build runs in a real process; its engine output is slowed down (one row per batch,
# one row group per row, a pause between rows) so the test can kill it while it writes.
SLOW_BUILD = """
import sys, time
from consentry.delivery import build
build.ROW_GROUP_ROWS = 1
original = build._arrow_batches
def slow(backend, query):
    for batch in original(backend, query):
        for i in range(batch.num_rows):
            yield batch.slice(i, 1)
            time.sleep(0.2)
build._arrow_batches = slow
sys.argv = ["consentry", *sys.argv[1:]]
from consentry.cli.main import main
main()
"""


def test_a_build_killed_while_writing_leaves_no_visible_delivery(
    platform: Path, eu_delivery: dict[str, Any]
) -> None:
    deliveries = platform / "deliveries"
    manifests_before = list_deliveries(Settings(home=platform))
    lineage_before = Lake(platform / "lake").read_arrow("delivery_lineage")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_BUILD, "--home", str(platform), "deliver", "eu-lab"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        staging: Path | None = None
        while time.monotonic() < deadline and process.poll() is None:
            found = [d for d in deliveries.glob(".staging-*") if any(d.glob("part-*.parquet"))]
            if found:
                staging = found[0]
                break
            time.sleep(0.05)
        assert staging is not None, process.stderr.read() if process.stderr else ""
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr:
            process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    # The half-written build is only in its hidden staging directory.
    assert staging.exists()
    assert not (staging / "manifest.json").exists()
    visible = [d for d in deliveries.iterdir() if not d.name.startswith(".")]
    assert all((d / "manifest.json").exists() for d in visible)
    assert list_deliveries(Settings(home=platform)) == manifests_before
    assert Lake(platform / "lake").read_arrow("delivery_lineage").equals(lineage_before)
    # The next build sweeps away what the killed one left behind.
    again = run_cli(platform, "deliver", "eu-lab", "--json")
    assert again.exit_code == 0, again.output
    assert not staging.exists()


# -- verify-delivery -----------------------------------------------------------------------------


@pytest.fixture
def delivery_copy(platform: Path, eu_delivery: dict[str, Any], tmp_path: Path) -> Path:
    """A copy of the EU delivery to tamper with."""
    copy = tmp_path / str(eu_delivery["delivery_id"])
    shutil.copytree(platform / "deliveries" / eu_delivery["delivery_id"], copy)
    return copy


@pytest.fixture(scope="module")
def published_keys(platform: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The keys document as a licensee downloads it from the API."""
    response = TestClient(create_app(Settings(home=platform))).get(
        "/.well-known/consentry-keys.json"
    )
    assert response.status_code == 200
    path = tmp_path_factory.mktemp("keys") / "consentry-keys.json"
    path.write_text(response.text, encoding="utf-8")
    return path


def test_verify_delivery_accepts_an_untouched_delivery(
    platform: Path, delivery_copy: Path, published_keys: Path
) -> None:
    result = run_cli(platform, "verify-delivery", str(delivery_copy))
    assert result.exit_code == 0, result.output
    assert "signature and every file check out" in result.stdout
    report = cli_json(
        platform, "verify-delivery", str(delivery_copy), "--keys", str(published_keys)
    )
    assert report == {
        "directory": str(delivery_copy),
        "ok": True,
        "signature_ok": True,
        "files_ok": True,
        "problems": [],
    }


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_manifest(path: Path) -> None:
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["counts"]["excluded"]["consent_denied"] -= 1
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _point_outside(path: Path) -> None:
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["files"][0]["name"] = "../../outside.parquet"
    path.write_text(json.dumps(manifest), encoding="utf-8")


TAMPERING: dict[str, tuple[Callable[[Path], object], str]] = {
    "flipped byte in a part": (
        lambda d: _flip_byte(d / "part-00000.parquet"),
        "part-00000.parquet: sha256",
    ),
    "edited manifest": (
        lambda d: _edit_manifest(d / "manifest.json"),
        "manifest.sig does not verify",
    ),
    "extra parquet file": (
        lambda d: shutil.copy(d / "part-00000.parquet", d / "part-00001.parquet"),
        "part-00001.parquet: not listed in the manifest",
    ),
    "manifest not JSON": (
        lambda d: (d / "manifest.json").write_text("{truncated", encoding="utf-8"),
        "manifest.json is not a delivery manifest",
    ),
    "listed name outside the directory": (
        lambda d: _point_outside(d / "manifest.json"),
        "../../outside.parquet: not a file name inside the delivery directory",
    ),
    "missing part": (
        lambda d: (d / "part-00000.parquet").unlink(),
        "part-00000.parquet: missing",
    ),
}


@pytest.mark.parametrize("tamper", list(TAMPERING))
def test_verify_delivery_names_the_problem(
    platform: Path, delivery_copy: Path, published_keys: Path, tamper: str
) -> None:
    change, message = TAMPERING[tamper]
    change(delivery_copy)
    for keys in ((), ("--keys", str(published_keys))):
        result = run_cli(platform, "verify-delivery", str(delivery_copy), *keys)
        assert result.exit_code == 1, result.output
        assert message in " ".join(result.stdout.split())
        assert "does not verify" in " ".join(result.stderr.split())
    report = json.loads(run_cli(platform, "verify-delivery", str(delivery_copy), "--json").stdout)
    assert report["ok"] is False
    assert any(message in p for p in report["problems"])


def test_verify_delivery_refuses_another_installations_key(
    platform: Path, delivery_copy: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-home"
    assert run_cli(other, "init").exit_code == 0
    result = run_cli(other, "verify-delivery", str(delivery_copy))
    assert result.exit_code == 1
    assert "manifest.sig does not verify" in " ".join(result.stdout.split())


# -- bad arguments --------------------------------------------------------------------------------

FUTURE = (datetime.now(UTC) + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
BAD_ARGUMENTS = {
    "deliver: unknown licensee": (
        ["deliver", "nobody", "--as-of", AS_OF],
        "licensee: no licensee named 'nobody'; known:",
    ),
    "deliver: as_of in the future": (
        ["deliver", "eu-lab", "--as-of", FUTURE],
        "--as-of: the cut-off is in the future",
    ),
    "deliver: malformed instant": (
        ["deliver", "eu-lab", "--as-of", "next tuesday"],
        "'next tuesday' is not a date or RFC 3339 instant",
    ),
    "deliver: instant without offset": (
        ["deliver", "eu-lab", "--as-of", "2025-01-01T10:00:00"],
        "needs an offset",
    ),
    "deliver: unknown engine": (
        ["deliver", "eu-lab", "--as-of", AS_OF, "--engine", "oracle"],
        "'oracle' is not one of 'duckdb', 'spark'",
    ),
    "explain: unknown licensee": (
        ["explain", "1", "--licensee", "nobody", "--as-of", AS_OF],
        "no licensee named 'nobody'",
    ),
    "explain: as_of in the future": (
        ["explain", "1", "--licensee", "eu-lab", "--as-of", FUTURE],
        "the cut-off is in the future",
    ),
    "explain: malformed instant": (
        ["explain", "1", "--licensee", "eu-lab", "--as-of", "2025-13-45"],
        "is not a date or RFC 3339 instant",
    ),
    "explain: unknown post": (
        ["explain", "no-such-post", "--licensee", "eu-lab", "--as-of", AS_OF],
        "POST_ID: no post 'no-such-post'",
    ),
    "verify-delivery: not a delivery": (
        ["verify-delivery", "."],
        "not a delivery: manifest.json or .sig missing",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_arguments_exit_2_with_a_clear_message(platform: Path, case: str) -> None:
    args, message = BAD_ARGUMENTS[case]
    before = sorted(p.name for p in (platform / "deliveries").iterdir())
    result = run_cli(platform, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert result.stdout == ""
    assert sorted(p.name for p in (platform / "deliveries").iterdir()) == before
