"""A client generated from the schema drives the consent and licensee flows.

`openapi-python-client` writes a typed Python client from a running `consentry serve`'s
`/openapi.json` into a temporary directory (nothing generated is kept); the test imports
it and uses nothing else to talk to the server: typed bodies for every success, a typed
`ProblemDetails` for every refusal, the bearer token and the licensee's API key through
the client's own authentication.
"""

from __future__ import annotations

import hashlib
import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from consentry.keys import Keyring
from consentry.serving.auth import issue_token
from consentry.settings import Settings
from tests.api.conftest import Api, make_api
from tests.services import serving

PACKAGE = "consentry_client"
CONFIG = f"""post_hooks: []
project_name_override: consentry-client
package_name_override: {PACKAGE}
content_type_overrides:
  application/rsl+xml: text/plain
  application/vnd.apache.parquet: application/octet-stream
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, str, ModuleType]]:
    """A delivered home served for real, and the client generated from its schema."""
    home = tmp_path_factory.mktemp("generated") / "home"
    home.mkdir()
    api = make_api(Settings(home=home))
    out = tmp_path_factory.mktemp("client")
    with serving(api.home.settings.home) as url:
        (out / "openapi.json").write_bytes(httpx.get(f"{url}/openapi.json").content)
        (out / "config.yaml").write_text(CONFIG)
        done = subprocess.run(
            [str(Path(sys.executable).with_name("openapi-python-client")), "generate",
             "--path", str(out / "openapi.json"), "--output-path", str(out / PACKAGE),
             "--meta", "none", "--config", str(out / "config.yaml")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Warning" not in done.stdout, done.stdout
        sys.path.insert(0, str(out))
        try:
            yield api, url, importlib.import_module(PACKAGE)
        finally:
            sys.path.remove(str(out))
            for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
                del sys.modules[name]


def _call(package: ModuleType, module: str) -> Any:
    """The generated module of one operation (`consent.change_consent`)."""
    return importlib.import_module(f"{PACKAGE}.api.{module}")


def _client(package: ModuleType, url: str, token: str) -> Any:
    return package.AuthenticatedClient(base_url=url, token=token, raise_on_unexpected_status=True)


def test_the_consent_flow_through_a_generated_client(
    served: tuple[Api, str, ModuleType],
) -> None:
    api, url, package = served
    models = importlib.import_module(f"{PACKAGE}.models")
    secret = Keyring.for_home(api.home.settings.home).platform_secret
    user = _client(package, url, issue_token(secret, "u-us", "user"))
    admin = _client(package, url, issue_token(secret, "ops", "admin"))

    read = _call(package, "consent.read_consent").sync("u-us", client=user)
    assert isinstance(read, models.ConsentView)
    assert read.user_id == "u-us"
    assert "ai_training_third_party" in {p.purpose for p in read.purposes}
    before = _call(package, "consent.consent_history").sync("u-us", client=user)
    assert isinstance(before, models.HistoryView)

    change = _call(package, "consent.change_consent")
    for choice in (models.Choice.ALLOW, models.Choice.DENY):
        event = change.sync(
            "u-us", "ai_training_third_party", client=user, body=models.ChoiceBody(choice=choice)
        )
        assert isinstance(event, models.EventView)
        assert event.choice == choice
        assert event.source == "api"
    after = _call(package, "consent.consent_history").sync("u-us", client=user)
    assert len(after.events) == len(before.events) + 2

    checked = _call(package, "consent.check_consent").sync(
        client=admin,
        body=models.CheckBody(purpose="ai_training_third_party", user_ids=["u-us", "nobody"]),
    )
    assert isinstance(checked, models.CheckView)
    assert [(d.user_id, d.decision, d.known_user) for d in checked.decisions] == [
        ("u-us", models.Choice.DENY, True),
        ("nobody", checked.decisions[1].decision, False),
    ]

    # Refusals come back typed as problems: the item says where the input was wrong.
    refused = change.sync_detailed(
        "u-us",
        "ai_training_third_party",
        client=user,
        body=models.ChoiceBody(choice=models.Choice.ALLOW),
        x_consentry_shown_policy="not-a-version",
    )
    assert refused.status_code == 422
    assert isinstance(refused.parsed, models.ProblemDetails)
    [item] = refused.parsed.errors
    assert (item.location, item.field) == ("header", "X-Consentry-Shown-Policy")
    stranger = change.sync_detailed(
        "u-de-in", "ai_training_third_party", client=user,
        body=models.ChoiceBody(choice=models.Choice.ALLOW),
    )  # fmt: skip
    assert stranger.status_code == 403
    assert isinstance(stranger.parsed, models.ProblemDetails)
    anonymous = package.Client(base_url=url)
    missing = _call(package, "consent.read_consent").sync_detailed("u-us", client=anonymous)
    assert missing.status_code == 401
    assert missing.parsed.errors[0].field == "Authorization"


def test_the_licensee_flow_through_a_generated_client(
    served: tuple[Api, str, ModuleType],
) -> None:
    api, url, package = served
    models = importlib.import_module(f"{PACKAGE}.models")
    alpha = _client(package, url, api.keys["alpha"])

    listed = _call(package, "licensee.list_my_deliveries").sync(client=alpha)
    assert isinstance(listed, models.DeliveriesView)
    assert [d.delivery_id for d in listed.deliveries] == [api.deliveries["alpha"]]
    delivery = listed.deliveries[0]
    manifest = _call(package, "licensee.delivery_manifest").sync(delivery.delivery_id, client=alpha)
    assert isinstance(manifest, models.DeliveryManifest)
    assert manifest.counts.delivered == delivery.delivered
    part = delivery.files[0]
    download = _call(package, "licensee.delivery_file").sync_detailed(
        delivery.delivery_id, part.name, client=alpha
    )
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == part.sha256

    feed = _call(package, "licensee.revocation_feed")
    batch = feed.sync(client=alpha)
    assert isinstance(batch, models.RevocationBatch)
    pending = [r.record_id for r in batch.revocations if r.status != "confirmed"]
    assert pending, "make_api revokes records of two users"
    receipt = _call(package, "licensee.post_receipts").sync(
        client=alpha, body=models.ReceiptBody(record_ids=pending)
    )
    assert isinstance(receipt, models.ReceiptView)
    assert sorted(receipt.confirmed) == sorted(pending)
    again = feed.sync(client=alpha)
    assert {r.record_id: r.status for r in again.revocations} == dict.fromkeys(
        [r.record_id for r in again.revocations], "confirmed"
    )
    bad = feed.sync_detailed(client=alpha, cursor="not-a-cursor")
    assert bad.status_code == 400
    assert isinstance(bad.parsed, models.ProblemDetails)
    assert bad.parsed.errors[0].field == "cursor"
