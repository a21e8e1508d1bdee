"""End to end: the reference client against a real `consentry serve` on loopback.

Deliver, sync (resuming a partial download with a Range request), opt out through the API,
run the revocation job, sync again: the opted-out user's records are gone from the client's
copy and confirmed on the server; a third sync changes nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from consentry.delivery.licensees import registry_for
from consentry.engine.hmac import hmac_hex
from consentry.keys import Keyring
from consentry.serving.auth import issue_token
from consentry.settings import Settings
from tests.delivery.conftest import THIRD, make_lake_home
from tests.services import serving

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "examples" / "licensee_client.py"


@dataclass
class Served:
    url: str
    settings: Settings
    api_key: str


def _cli(home: Path, *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "consentry.cli", *args, "--json"],
        env={**os.environ, "CONSENTRY_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"consentry {args} failed:\n{done.stdout}{done.stderr}"
    return json.loads(done.stdout)


def _client(served: Served, directory: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(CLIENT), "--url", served.url, "--dir", str(directory), "--json"],
        env={**os.environ, "CONSENTRY_API_KEY": served.api_key},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"the client failed:\n{done.stdout}{done.stderr}"
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    home = tmp_path / "home"
    home.mkdir()
    settings = make_lake_home(Settings(home=home)).settings
    registry = registry_for(settings)
    try:
        api_key = registry.add("alpha", THIRD).api_key
    finally:
        registry.store.close()
    with serving(home) as url:
        yield Served(url, settings, api_key)


def test_deliver_opt_out_revoke_sync(served: Served, tmp_path: Path) -> None:
    home = served.settings.home
    manifest = _cli(home, "deliver", "alpha", "--as-of", "2025-03-01T00:00:00Z")
    delivery_id = manifest["delivery_id"]
    registry = registry_for(served.settings)
    try:
        secret = registry.secret(registry.get("alpha"))
    finally:
        registry.store.close()
    us_records = {hmac_hex(secret, p) for p in ("p01", "p20")}
    us_author = hmac_hex(secret, "u-us")

    # A download cut off after 100 bytes: the client resumes it with a Range request.
    part = manifest["files"][0]
    copy = tmp_path / "copy"
    partial = copy / "downloads" / delivery_id / f"{part['name']}.partial"
    partial.parent.mkdir(parents=True)
    partial.write_bytes((home / "deliveries" / delivery_id / part["name"]).read_bytes()[:100])

    first = _client(served, copy)
    assert first["deliveries_copied"] == [delivery_id]
    assert first["records"] == manifest["counts"]["delivered"] == 8
    assert first["revocations_seen"] == 0
    held = pq.read_table(copy / "records.parquet")
    assert us_records <= set(held.column("record_id").to_pylist())
    assert not partial.exists()

    token = issue_token(Keyring.for_home(home).platform_secret, "u-us", "user")
    auth = {"Authorization": f"Bearer {token}"}
    changed = httpx.put(
        f"{served.url}/v1/users/u-us/consent/{THIRD}", json={"choice": "deny"}, headers=auth
    )
    assert changed.status_code == 200, changed.text

    run = _cli(home, "revocations", "alpha")
    revoked = {r["record_id"]: r for r in run["revocations"]}
    assert us_records <= set(revoked)
    assert {revoked[r]["reason"] for r in us_records} == {"consent_denied"}
    assert all(r["status"] == "pending" for r in revoked.values())

    second = _client(served, copy)
    assert second["deliveries_copied"] == []
    assert second["revocations_seen"] == len(revoked)
    assert second["receipts"]["confirmed"] == len(revoked)
    held = pq.read_table(copy / "records.parquet")
    assert not us_records & set(held.column("record_id").to_pylist())
    assert us_author not in set(held.column("author_ref").to_pylist())
    assert held.num_rows == 8 - len(revoked)

    recipients = httpx.get(f"{served.url}/v1/users/u-us/recipients", headers=auth).json()
    (alpha,) = recipients["recipients"]
    assert alpha["licensee"] == "alpha"
    assert alpha["revocations"] == {"total": 2, "pending": 0, "overdue": 0, "confirmed": 2}
    again = _cli(home, "revocations", "alpha")
    assert {r["status"] for r in again["revocations"]} == {"confirmed"}
    assert not any(r["new"] for r in again["revocations"])
    assert _cli(home, "revocations", "overdue")["overdue"] == 0

    third = _client(served, copy)
    assert third["revocations_seen"] == 0
    assert third["deliveries_copied"] == []
    assert third["records"] == held.num_rows
    assert list((copy / "batches").glob("*.sig"))  # the signed batch kept as evidence


# -- refusals: one sentence, exit 2 -------------------------------------------------------------


def _run_client(url: str, api_key: str, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLIENT), "--url", url, "--dir", str(directory)],
        env={**os.environ, "CONSENTRY_API_KEY": api_key},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _example() -> Any:
    """examples/licensee_client.py as a module (it is a script, not part of a package)."""
    spec = importlib.util.spec_from_file_location("licensee_client_example", CLIENT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_a_refused_api_key_is_one_sentence_and_exit_2(served: Served, tmp_path: Path) -> None:
    wrong = served.api_key[: len("csk_0123456789abcdef_")] + "A" * 43  # right id, wrong secret
    registry = registry_for(served.settings)
    try:
        disabled = registry.add("beta", THIRD).api_key
        registry.disable("beta")
    finally:
        registry.store.close()
    for key in (wrong, disabled, "not-a-key"):
        done = _run_client(served.url, key, tmp_path / "copy")
        assert done.returncode == 2, (key, done.stdout, done.stderr)
        assert done.stdout == ""
        (line,) = done.stderr.splitlines()
        assert line.startswith(
            "error: The server refused the API key (401 Unauthorized on GET "
            "/v1/licensee/deliveries). The server said: "
        ), line
        assert "CONSENTRY_API_KEY" in line
        assert "ask the platform for a new one" in line
        assert "Traceback" not in done.stderr
        assert "httpx" not in done.stderr
    assert not (tmp_path / "copy" / "records.parquet").exists()


def test_a_forbidden_request_and_a_server_error_are_sentences() -> None:
    client = _example()
    problem = {"type": "about:blank", "title": "Forbidden", "status": 403,
               "detail": "deliveries of this purpose are closed", "errors": []}  # fmt: skip
    request = httpx.Request("GET", "https://platform.example/v1/licensee/deliveries")
    with pytest.raises(client.AccessRefused) as refused:
        client._checked(httpx.Response(403, json=problem, request=request))
    assert str(refused.value) == (
        "The API key was accepted but lacks permission for GET /v1/licensee/deliveries "
        "(403 Forbidden). The server said: deliveries of this purpose are closed. Ask the "
        "platform to check what your licence allows."
    )
    with pytest.raises(client.SyncError) as failed:
        client._checked(httpx.Response(502, text="<html>bad gateway</html>", request=request))
    assert str(failed.value) == (
        "the server answered 502 Bad Gateway to GET /v1/licensee/deliveries."
    )
    ok = httpx.Response(200, json={"deliveries": []}, request=request)
    assert client._checked(ok) is ok
