"""The outside-tools verifier (examples/licensee_verify.py) against a real `consentry serve`.

It must import no Consentry module, verify a delivery and a signed feed page, and fail once
one byte of a delivered part is changed on the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from consentry.delivery.licensees import registry_for
from consentry.settings import Settings
from tests.delivery.conftest import THIRD, make_lake_home
from tests.services import serving

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "licensee_verify.py"


def _run(
    url: str, api_key: str, directory: Path, hf_home: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--url", url, "--dir", str(directory), "--json"],
        env={
            **os.environ,
            "CONSENTRY_API_KEY": api_key,
            "HF_HOME": str(hf_home),
            "HF_DATASETS_OFFLINE": "1",
            "HF_HUB_OFFLINE": "1",
        },
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_outside_tools_verify_a_delivery_and_a_feed_page(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    settings = make_lake_home(Settings(home=home)).settings
    registry = registry_for(settings)
    try:
        api_key = registry.add("alpha", THIRD).api_key
    finally:
        registry.store.close()
    done = subprocess.run(
        [sys.executable, "-m", "consentry.cli", "deliver", "alpha", "--json"],
        env={**os.environ, "CONSENTRY_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    manifest = json.loads(done.stdout)
    # A rotation between the delivery and the check: retired keys still verify.
    subprocess.run(
        [sys.executable, "-m", "consentry.cli", "keys", "rotate", "--json"],
        env={**os.environ, "CONSENTRY_HOME": str(home)},
        capture_output=True,
        check=True,
        timeout=120,
    )
    with serving(home) as url:
        first = _run(url, api_key, tmp_path / "copy", tmp_path / "hf")
        assert first.returncode == 0, first.stderr
        report = json.loads(first.stdout)
        assert report["ok"] is True
        assert report["consentry_imported"] is False
        assert report["delivery_id"] == manifest["delivery_id"]
        assert report["records"] == manifest["counts"]["delivered"] == 8
        assert report["subjects"] == len(manifest["files"]) + 3  # + README, croissant, manifest

        part = home / "deliveries" / manifest["delivery_id"] / manifest["files"][0]["name"]
        data = bytearray(part.read_bytes())
        data[len(data) // 2] ^= 0x01
        part.write_bytes(bytes(data))
        second = _run(url, api_key, tmp_path / "copy2", tmp_path / "hf")
        assert second.returncode == 1
        assert "sha256 differs from the signed statement" in second.stderr
