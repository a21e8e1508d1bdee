"""A delivery checked only with the tools a licensee already has: Hugging Face `datasets`,
MLCommons `mlcroissant` and `securesystemslib` (DSSE). None of them is Consentry code.

Each tool must read exactly the delivered rows, and each must refuse the delivery once one
byte of what it checks is changed.
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from consentry.delivery.keyset import KeySet
from consentry.delivery.service import verify_delivery
from consentry.settings import Settings
from tests.delivery.conftest import make_lake_home


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], Path]:
    """One delivery to `open` (eight posts): its directory, its manifest, the home."""
    home = make_lake_home(Settings(home=tmp_path_factory.mktemp("outside")))
    manifest = home.deliver("open")
    return home.deliveries / manifest["delivery_id"], manifest, home.settings.home


def _rows(directory: Path) -> list[dict[str, Any]]:
    table = pq.read_table(sorted(directory.glob("part-*.parquet")))
    return sorted(table.to_pylist(), key=lambda r: r["record_id"])


def _copy(directory: Path, tmp_path: Path) -> Path:
    target = tmp_path / directory.name
    shutil.copytree(directory, target)
    return target


def _croissant_rows(directory: Path) -> list[dict[str, Any]]:
    import mlcroissant as mlc

    dataset = mlc.Dataset(jsonld=str(directory / "croissant.json"))
    out = []
    for record in dataset.records("records"):
        row = {k.split("/", 1)[1]: v for k, v in record.items()}
        intents = row.pop("author_intents")
        row["author_intents"] = {k.rsplit("/", 1)[1]: v for k, v in intents.items()}
        for key in ("record_id", "author_ref", "lang", "text"):
            value = row[key]
            row[key] = value.decode() if isinstance(value, bytes) else value
        row["created_at"] = row["created_at"].to_pydatetime()
        out.append(row)
    return sorted(out, key=lambda r: r["record_id"])


def test_mlcroissant_validates_and_reads_exactly_the_parquet_rows(
    delivered: tuple[Path, dict[str, Any], Path],
) -> None:
    import mlcroissant as mlc

    directory, manifest, _ = delivered
    dataset = mlc.Dataset(jsonld=str(directory / "croissant.json"))
    assert not dataset.metadata.issues.errors, dataset.metadata.issues.report()
    document = json.loads((directory / "croissant.json").read_text())
    assert document["conformsTo"] == "http://mlcommons.org/croissant/1.1"
    for key in (
        "rai:dataCollection",
        "rai:personalSensitiveInformation",
        "rai:dataReleaseMaintenancePlan",
        "rai:dataLimitations",
    ):
        assert document[key]
    assert "/v1/licensee/revocations" in document["rai:dataReleaseMaintenancePlan"]
    assert "P30D" in document["rai:dataReleaseMaintenancePlan"]
    fields = [f["name"] for f in document["recordSet"][0]["field"]]
    assert fields == manifest["columns"]
    rows = _rows(directory)
    assert len(rows) == manifest["counts"]["delivered"] == 8
    assert _croissant_rows(directory) == rows


def test_datasets_load_dataset_reads_the_directory_offline(
    delivered: tuple[Path, dict[str, Any], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    directory, manifest, _ = delivered
    card = (directory / "README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "other"
    assert front["size_categories"] == ["n<1K"]
    assert front["configs"][0]["data_files"] == [{"split": "train", "path": "part-*.parquet"}]
    for reason, count in manifest["counts"]["excluded"].items():
        if count:
            assert f"`{reason}`: {count:,}" in card
    assert "/v1/licensee/revocations" in card
    assert manifest["policy_version"] in card
    loaded = datasets.load_dataset(str(directory), split="train", cache_dir=str(tmp_path / "c"))
    assert sorted(loaded.to_list(), key=lambda r: r["record_id"]) == _rows(directory)
    assert loaded.features["author_intents"]["train-ai"].dtype == "bool"


def _sslib_verify(directory: Path, jwks: dict[str, Any]) -> dict[str, Any]:
    """The DSSE envelope checked by securesystemslib against the published JWKS; returns
    the in-toto Statement."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import Key, SSlibKey  # type: ignore[attr-defined]

    keys: list[Key] = [
        SSlibKey(k["kid"], "ed25519", "ed25519", {"public": _b64url(k["x"]).hex()})
        for k in jwks["keys"]
        if "attestation" in k["consentry_payloads"]
    ]
    envelope = Envelope.from_dict(json.loads((directory / "manifest.intoto.json").read_text()))
    assert envelope.payload_type == "application/vnd.in-toto+json"
    envelope.verify(keys, 1)
    statement: dict[str, Any] = json.loads(envelope.payload)
    return statement


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_securesystemslib_verifies_the_dsse_envelope_and_its_subjects(
    delivered: tuple[Path, dict[str, Any], Path],
) -> None:
    import hashlib

    directory, manifest, home = delivered
    statement = _sslib_verify(directory, KeySet.for_home(home).jwks())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "urn:consentry:predicate:delivery-manifest:v1"
    assert statement["predicate"] == manifest
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}
    on_disk = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in directory.iterdir()
        if p.name not in ("manifest.sig", "manifest.intoto.json")
    }
    assert subjects == on_disk


def test_one_changed_parquet_byte_fails_mlcroissant(
    delivered: tuple[Path, dict[str, Any], Path], tmp_path: Path
) -> None:
    directory = _copy(delivered[0], tmp_path)
    part = directory / "part-00000.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))
    with pytest.raises(Exception, match=r"Download\(part-00000"):
        _croissant_rows(directory)
    assert not verify_delivery(directory, KeySet.for_home(delivered[2]).jwks()).ok


def test_one_changed_croissant_field_fails_mlcroissant(
    delivered: tuple[Path, dict[str, Any], Path], tmp_path: Path
) -> None:
    directory = _copy(delivered[0], tmp_path)
    path = directory / "croissant.json"
    document = json.loads(path.read_text())
    document["recordSet"][0]["field"][0]["source"]["extract"]["column"] = "record"
    path.write_text(json.dumps(document))
    with pytest.raises(Exception, match=r"Read\(part-00000"):
        _croissant_rows(directory)
    # The signed manifest names croissant.json's digest: the edit is caught there too.
    report = verify_delivery(directory, KeySet.for_home(delivered[2]).jwks())
    assert any(p.startswith("croissant.json: sha256") for p in report.problems)


def test_a_changed_statement_fails_securesystemslib(
    delivered: tuple[Path, dict[str, Any], Path], tmp_path: Path
) -> None:
    from securesystemslib.exceptions import VerificationError

    directory = _copy(delivered[0], tmp_path)
    path = directory / "manifest.intoto.json"
    envelope = json.loads(path.read_text())
    body = base64.b64decode(envelope["payload"]).replace(b'"rows":8', b'"rows":9')
    envelope["payload"] = base64.b64encode(body).decode()
    path.write_text(json.dumps(envelope))
    with pytest.raises(VerificationError):
        _sslib_verify(directory, KeySet.for_home(delivered[2]).jwks())
