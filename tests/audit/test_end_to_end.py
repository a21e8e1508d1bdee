"""Every capability's state changes appear as leaves of the audit log, each one proven
included under a signed checkpoint, and no leaf carries personal data.

The demo platform is driven through each capability by a *driver*: a function that acts
through the CLI or the service and names the audit event types its changes must produce.
New capabilities add a driver to DRIVERS.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from consentry.audit.checkpoint import parse_signed_checkpoint
from consentry.audit.log import AuditLog
from consentry.audit.merkle import verify_inclusion
from consentry.cli.main import app as cli
from consentry.delivery.licensees import registry_for
from consentry.engine import Lake
from consentry.keys import Keyring
from consentry.ledger.service import Evidence
from consentry.ledger.sync import ledger_for
from consentry.policy import Choice
from consentry.revocation.log import RevocationLog
from consentry.settings import Settings
from consentry.signing import Signer
from consentry.store import open_store

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
TOKEN = re.compile(r"[A-Za-z0-9_@.:-]+")


def run(home: Path, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--home", str(home), *args])
    assert result.exit_code == 0, (args, result.output)
    return result.output


def run_json(home: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["--home", str(home), *args, "--json"])
    assert result.exit_code == 0, (args, result.output)
    return json.loads(result.stdout)


def drive_subjects(home: Path) -> set[str]:
    """Generating and loading the demo syncs users into subjects and imports consent."""
    run(
        home,
        "demo",
        "generate",
        "--users",
        "300",
        "--posts",
        "900",
        "--access-events",
        "1000",
        "--seed",
        "3",
    )
    return {"subjects.synced", "consent.imported"}


def drive_policy(home: Path) -> set[str]:
    run(home, "policy", "publish")
    return {"policy.published"}


def opt_out(home: Path, users: list[str]) -> None:
    """`users` opt out of third-party training on the settings page."""
    ledger = ledger_for(Settings(home=home))
    try:
        for user in users:
            ledger.record(
                user,
                "ai_training_third_party",
                Choice.DENY,
                source="settings",
                evidence=Evidence(origin="test", client="browser"),
            )
    finally:
        ledger.store.close()


def drive_consent(home: Path) -> set[str]:
    opt_out(home, Lake(home / "lake").read_arrow("users").column("user_id").to_pylist()[:3])
    return {"consent.changed"}


def drive_licensees(home: Path) -> set[str]:
    run(home, "licensee", "add", "acme", "--purpose", "ai_training_third_party")
    return {"licensee.changed"}


def drive_deliveries(home: Path) -> set[str]:
    run(home, "deliver", "acme")
    return {"delivery.built"}


def drive_revocations(home: Path) -> set[str]:
    """Authors of delivered posts opt out; the revocation job revokes their records and the
    licensee confirms the deletion with receipts."""
    settings = Settings(home=home)
    lineage = Lake(home / "lake").read_arrow("delivery_lineage")
    opt_out(home, sorted(set(lineage.column("author_id").to_pylist()))[:2])
    report = run_json(home, "revocations", "acme")
    assert report["new"] > 0
    registry = registry_for(settings)
    try:
        licensee_id = registry.get("acme").id
        log = RevocationLog(registry.store, registry.policy)
        confirmed = log.confirm(licensee_id, [r["record_id"] for r in report["revocations"]])
        assert not confirmed.unknown
    finally:
        registry.store.close()
    return {"revocation.issued", "revocation.confirmed"}


def drive_retention(home: Path) -> set[str]:
    """A legal hold is placed and released; a retention plan is made and applied."""
    hold = run_json(
        home, "hold", "add", "--matter", "m-1", "--reason", "test", "--category", "posts"
    )
    run(home, "hold", "release", hold["id"])
    plan = home / "plan.json"
    run(home, "retention", "plan", "--out", str(plan))
    run(home, "retention", "apply", str(plan))
    return {
        "hold.added",
        "hold.released",
        "retention.planned",
        "retention.applied",
        "retention.verified",
    }


def drive_scraping(home: Path) -> set[str]:
    run(home, "scraping", "assess")
    return {"scraping.assessed"}


DRIVERS: list[tuple[str, Callable[[Path], set[str]]]] = [
    ("subjects", drive_subjects),
    ("policy", drive_policy),
    ("consent", drive_consent),
    ("licensees", drive_licensees),
    ("deliveries", drive_deliveries),
    ("revocations", drive_revocations),
    ("retention", drive_retention),
    ("scraping", drive_scraping),
]
"""Capability -> driver, in the order they run (later ones rely on earlier state)."""


@pytest.fixture(scope="module")
def driven(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, set[str]]]:
    home = tmp_path_factory.mktemp("audit-e2e")
    run(home, "init")
    expected = {name: drive(home) for name, drive in DRIVERS}
    return home, expected


def test_every_capabilitys_changes_are_leaves_each_proven(
    driven: tuple[Path, dict[str, set[str]]],
) -> None:
    home, expected = driven
    note = run(home, "audit", "checkpoint")
    signed = parse_signed_checkpoint(note)
    settings = Settings(home=home)
    assert signed.verify(Signer.from_keyring(Keyring.for_settings(settings)).public_key)
    store = open_store(settings.resolved_database_url)
    try:
        log = AuditLog(store)
        with store.session() as session:
            leaves = log.leaves(session)
        seen = {leaf.event_type for leaf in leaves}
        for capability, types in expected.items():
            assert types <= seen, f"{capability}: {types - seen} never reached the log"
        size, root = signed.checkpoint.size, signed.checkpoint.root_hash
        assert size == len(leaves)
        for leaf in leaves:
            proof = log.prove(leaf.event_id, size)
            assert proof.leaf == leaf
            assert verify_inclusion(leaf.leaf_index, size, leaf.leaf_hash, proof.path, root)
    finally:
        store.close()
    assert run(home, "audit", "verify").startswith("ok:")


def test_no_leaf_holds_personal_data(driven: tuple[Path, dict[str, set[str]]]) -> None:
    home, _ = driven
    lake = Lake(home / "lake")
    user_ids = set(lake.read_arrow("users").column("user_id").to_pylist())
    texts = "\n".join(t for t in lake.read_arrow("posts").column("text").to_pylist() if t)
    assert EMAIL.search(texts), "the demo should hold emails (else the scan proves nothing)"
    assert IPV4.search(texts), "the demo should hold IP addresses"
    store = open_store(Settings(home=home).resolved_database_url)
    try:
        with store.session() as session:
            entries = [leaf.entry for leaf in AuditLog(store).leaves(session)]
    finally:
        store.close()
    assert entries
    for entry in entries:
        assert not EMAIL.search(entry), entry
        assert not IPV4.search(entry), entry
        leaked = set(TOKEN.findall(entry)) & user_ids
        assert not leaked, (leaked, entry)
