"""A home made by the previous release (store revision 0007: deliveries as bare directories,
consent events without anchors) is brought up to date by `consentry init`, and then every
invariant holds and every command works.

`data/home-0007.tar.gz` was made with Consentry at commit aa1a77b: `init`, `demo generate
--users 200 --posts 1500 --access-events 1000 --seed 3`, `licensee add acme --purpose
ai_training_third_party`, `deliver acme --as-of 2025-06-01`, `revocations acme`,
`audit checkpoint` (the demo's Parquet files removed, its facts kept).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from consentry.doctor import run_doctor
from consentry.settings import Settings
from tests.delivery.conftest import run_cli

ARCHIVE = Path(__file__).with_name("data") / "home-0007.tar.gz"


def _unpack(tmp_path: Path) -> Path:
    with tarfile.open(ARCHIVE) as archive:
        archive.extractall(tmp_path, filter="data")
    return tmp_path / "home"


def test_init_brings_a_home_of_the_previous_release_up_to_date(tmp_path: Path) -> None:
    home = _unpack(tmp_path)
    (delivery,) = [p.name for p in (home / "deliveries").iterdir()]
    result = run_cli(home, "init", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["store"]["previous_revision"] == "0007"
    assert report["consent_events_anchored"] > 0
    assert report["deliveries_adopted"] == [delivery]
    doctor = run_doctor(Settings(home=home))
    assert doctor.ok, doctor.first_violation
    # The old delivery is listed and verifies with the published keys; a second init
    # changes nothing more.
    again = json.loads(run_cli(home, "init", "--json").stdout)
    assert (again["consent_events_anchored"], again["deliveries_adopted"]) == (0, [])
    assert run_cli(home, "verify-delivery", str(home / "deliveries" / delivery)).exit_code == 0
    # And the home works as any other: a new delivery, a revocation run, the doctor.
    assert run_cli(home, "deliver", "acme", "--as-of", "2025-06-30").exit_code == 0
    assert run_cli(home, "revocations", "acme").exit_code == 0
    assert run_doctor(Settings(home=home)).ok
