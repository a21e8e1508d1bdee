"""Building deliveries from a home holding the known world: counts, files, manifest, signature,
lineage, determinism, crash safety and engine parity."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient

from consentry.api.app import create_app
from consentry.audit import SqlAuditSink
from consentry.delivery import build
from consentry.delivery.build import (
    DELIVERED_SCHEMA,
    LINEAGE_TABLE,
    evaluate_posts,
)
from consentry.delivery.eligibility import REASON_ORDER
from consentry.delivery.keyset import KeySet
from consentry.delivery.licensees import registry_for
from consentry.delivery.service import verify_delivery
from consentry.engine import Lake, connect
from consentry.engine.hmac import hmac_hex
from consentry.errors import BadInput, ConsentryError
from consentry.jobs import JobBusy
from consentry.ledger.sync import ledger_for
from consentry.settings import Settings
from consentry.signing import Signer, verify
from consentry.store import open_store
from tests.delivery.conftest import (
    AS_OF,
    THIRD,
    WORLD_POSTS,
    LakeHome,
    eu_scope,
    expected_counts,
    expected_reasons,
    make_lake_home,
)

POSTS = {p.post_id: p for p in WORLD_POSTS}
DELIVERY_ID = re.compile(r"dlv-20250301T000000Z-[0-9a-f]{12}")


@dataclass
class Built:
    home: LakeHome
    open1: dict[str, Any]
    open2: dict[str, Any]
    eu: dict[str, Any]

    def dir(self, manifest: dict[str, Any]) -> Path:
        return self.home.deliveries / str(manifest["delivery_id"])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One home, three deliveries: `open` twice (same inputs) and `eu` once."""
    home = make_lake_home(Settings(home=tmp_path_factory.mktemp("built")))
    return Built(home, home.deliver("open"), home.deliver("open"), home.deliver("eu"))


def delivered_ids(licensee: str) -> set[str]:
    return {pid for pid, reasons in expected_reasons(licensee).items() if not reasons}


# -- counts and manifest ------------------------------------------------------------------------


@pytest.mark.parametrize("licensee", ["open", "eu"])
def test_counts_put_each_post_under_its_first_reason(built: Built, licensee: str) -> None:
    manifest = built.open1 if licensee == "open" else built.eu
    assert manifest["counts"] == expected_counts(licensee)
    # Zeros are listed too, in the documented order.
    assert list(manifest["counts"]["excluded"]) == [r.value for r in REASON_ORDER]
    counts = manifest["counts"]
    assert counts["considered"] == counts["delivered"] + sum(counts["excluded"].values())


def test_a_post_failing_several_checks_counts_once_under_the_first(built: Built) -> None:
    # p18 fails created_after_cutoff, not_public and author_deactivated for `open`; p03 only
    # the first. Both count under created_after_cutoff, nothing else counts p18.
    assert expected_reasons("open")["p18"] == [
        "created_after_cutoff",
        "not_public",
        "author_deactivated",
    ]
    excluded = built.open1["counts"]["excluded"]
    assert excluded["created_after_cutoff"] == 2
    assert excluded["not_public"] == 1  # p04 only
    assert excluded["author_deactivated"] == 1  # p09 only


def test_manifest_shape(built: Built) -> None:
    manifest = built.eu
    assert set(manifest) == {
        "delivery_id",
        "licensee",
        "purpose",
        "as_of",
        "policy_version",
        "engine",
        "created_at",
        "counts",
        "files",
        "documents",
        "columns",
        "lineage_sha256",
        "signing_key",
    }
    assert DELIVERY_ID.fullmatch(manifest["delivery_id"])
    assert manifest["licensee"] == "eu"
    assert manifest["purpose"] == "ai_training_third_party"
    assert manifest["as_of"] == "2025-03-01T00:00:00Z"
    assert manifest["policy_version"] == "2024-11-15"
    assert manifest["engine"] == "duckdb"
    assert manifest["columns"] == DELIVERED_SCHEMA.names
    directory = built.dir(manifest)
    on_disk = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk == manifest
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [f["name"] for f in manifest["files"]]
        + ["manifest.json", "manifest.sig", "manifest.intoto.json", "README.md", "croissant.json"]
    )
    for document in manifest["documents"]:
        path = directory / document["name"]
        assert document["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    for entry in manifest["files"]:
        path = directory / entry["name"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["rows"] == pq.ParquetFile(path).metadata.num_rows
    assert sum(f["rows"] for f in manifest["files"]) == manifest["counts"]["delivered"]


def test_lineage_digest_names_this_deliverys_lineage_part(built: Built) -> None:
    lake = built.home.lake
    parts = {hashlib.sha256(Path(p).read_bytes()).hexdigest(): p for p in lake.files(LINEAGE_TABLE)}
    for manifest in (built.open1, built.open2, built.eu):
        part = parts[manifest["lineage_sha256"]]
        ids = set(pq.read_table(part).column("delivery_id").to_pylist())
        assert ids == {manifest["delivery_id"]}


def test_signature_verifies_against_the_published_keys(built: Built) -> None:
    client = TestClient(create_app(built.home.settings))
    response = client.get("/.well-known/consentry-keys.json")
    assert response.status_code == 200
    keys = response.json()
    manifest_keys = [k["kid"] for k in keys["keys"] if "manifest" in k["consentry_current_for"]]
    assert manifest_keys == [built.eu["signing_key"]]
    directory = built.dir(built.eu)
    body = (directory / "manifest.json").read_bytes()
    signature = (directory / "manifest.sig").read_bytes()
    assert verify(keys, body, signature)
    assert not verify(keys, body.replace(b'"eu"', b'"EU"'), signature)
    report = verify_delivery(directory, keys)
    assert report.ok, report.problems


def test_every_build_is_audited_with_the_manifest_hash(built: Built) -> None:
    with open_store(built.home.settings.resolved_database_url) as store, store.session() as s:
        events = SqlAuditSink.read(s, event_type="delivery.built")
    by_id = {e.payload["delivery_id"]: e.payload for e in events}
    for manifest in (built.open1, built.open2, built.eu):
        payload = by_id[manifest["delivery_id"]]
        body = (built.dir(manifest) / "manifest.json").read_bytes()
        assert payload["manifest_sha256"] == hashlib.sha256(body).hexdigest()
        assert payload["delivered"] == manifest["counts"]["delivered"]
        assert payload["considered"] == manifest["counts"]["considered"]
        assert payload["policy_version"] == "2024-11-15"


# -- delivered records ------------------------------------------------------------------------


def test_records_are_the_eligible_posts_pseudonymised_hourly_and_minimised(built: Built) -> None:
    secret = built.home.secret("open")
    rows = built.home.records(built.open1["delivery_id"])
    by_record = {hmac_hex(secret, pid): pid for pid in POSTS}
    delivered = {by_record[r["record_id"]]: r for r in rows}
    assert set(delivered) == delivered_ids("open")
    assert [r["record_id"] for r in rows] == sorted(r["record_id"] for r in rows)
    for post_id, row in delivered.items():
        post = POSTS[post_id]
        assert row["author_ref"] == hmac_hex(secret, post.author_id)
        assert row["created_at"] == post.created_at.replace(minute=0, second=0, microsecond=0)
        assert row["lang"] == post.lang
    texts = {pid: row["text"] for pid, row in delivered.items()}
    assert "<EMAIL>" in texts["p01"]
    assert "jane.doe@example.com" not in texts["p01"]
    assert "<URL>" in texts["p01"]
    assert "ref=1" not in texts["p01"]
    assert texts["p02"] == "Guten Morgen <HANDLE>!"
    assert "<PHONE>" in texts["p19"]
    assert "1234567" not in texts["p19"]
    assert "<IP>" in texts["p20"]
    assert "192.168" not in texts["p20"]
    assert texts["p12"] == POSTS["p12"].text  # nothing to minimise: untouched
    intents = {pid: row["author_intents"] for pid, row in delivered.items()}
    # Both AI-training purposes allowed (US default, unknown age allowed in JP).
    both = {"train-ai": True, "search": None}
    assert intents["p01"] == intents["p12"] == both
    # u-de-in allowed third-party training but Grok training is off by the EU default;
    # AIPREF's rule (any disallow wins) makes the travelling signal a `n`.
    assert intents["p02"] == {"train-ai": False, "search": None}


def test_files_are_zstd_parquet_with_exactly_the_delivered_columns(built: Built) -> None:
    for manifest in (built.open1, built.eu):
        for entry in manifest["files"]:
            meta = pq.ParquetFile(built.dir(manifest) / entry["name"])
            assert meta.schema_arrow.names == DELIVERED_SCHEMA.names
            assert meta.schema_arrow.equals(DELIVERED_SCHEMA, check_metadata=False)
            footer = meta.schema_arrow.metadata
            assert footer[b"consentry.delivery_id"] == manifest["delivery_id"].encode()
            assert footer[b"consentry.policy_version"] == manifest["policy_version"].encode()
            assert footer[b"consentry.licensee"] == manifest["licensee"].encode()
            columns = meta.metadata.row_group(0).num_columns
            for i in range(columns):
                assert meta.metadata.row_group(0).column(i).compression == "ZSTD"


def test_delivered_files_never_contain_internal_ids(built: Built) -> None:
    internal = set(POSTS) | {p.author_id for p in WORLD_POSTS}
    for manifest in (built.open1, built.open2, built.eu):
        for row in built.home.records(manifest["delivery_id"]):
            for column, value in row.items():
                if isinstance(value, str):
                    assert not any(i in value for i in internal), (column, value)


def test_lineage_records_every_delivered_post_and_author(built: Built) -> None:
    for manifest, licensee in ((built.open1, "open"), (built.eu, "eu")):
        lineage = built.home.lineage(manifest["delivery_id"])
        assert {r["post_id"] for r in lineage} == delivered_ids(licensee)
        assert {r["licensee"] for r in lineage} == {licensee}
        secret = built.home.secret(licensee)
        for r in lineage:
            assert r["record_id"] == hmac_hex(secret, r["post_id"])
            assert r["author_id"] == POSTS[r["post_id"]].author_id
        delivered = {r["record_id"] for r in built.home.records(manifest["delivery_id"])}
        assert delivered == {r["record_id"] for r in lineage}


def test_pseudonyms_differ_between_licensees(built: Built) -> None:
    open_ids = {r["record_id"] for r in built.home.records(built.open1["delivery_id"])}
    eu_rows = built.home.records(built.eu["delivery_id"])
    assert {r["record_id"] for r in eu_rows}.isdisjoint(open_ids)
    open_refs = {r["author_ref"] for r in built.home.records(built.open1["delivery_id"])}
    assert {r["author_ref"] for r in eu_rows}.isdisjoint(open_refs)


# -- determinism ------------------------------------------------------------------------------


def test_same_inputs_give_byte_identical_data_pages(built: Built) -> None:
    first, second = built.open1, built.open2
    assert first["delivery_id"] != second["delivery_id"]
    assert [f["name"] for f in first["files"]] == [f["name"] for f in second["files"]]
    for f in first["files"]:
        # Byte for byte up to the footer, which names each delivery.
        assert _pages(built.home, first, f) == _pages(built.home, second, f)
    assert first["counts"] == second["counts"]


def _rebatched(sizes: list[int]) -> Any:
    """An `_arrow_batches` that cuts the engine's output into batches of the given sizes
    (cycled), as another engine, thread count or machine might."""
    original = build._arrow_batches

    def batches(backend: Any, query: str) -> Iterator[pa.RecordBatch]:
        table = pa.Table.from_batches(list(original(backend, query)))
        offset, i = 0, 0
        while offset < table.num_rows:
            size = sizes[i % len(sizes)]
            yield from table.slice(offset, size).to_batches()
            offset += size
            i += 1

    return batches


def test_parts_roll_over_and_bytes_do_not_depend_on_engine_batching(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = built.home
    monkeypatch.setattr(build, "ROWS_PER_PART", 3)
    monkeypatch.setattr(build, "ROW_GROUP_ROWS", 2)
    monkeypatch.setattr(build, "_arrow_batches", _rebatched([1]))
    one = home.deliver("open")
    monkeypatch.setattr(build, "_arrow_batches", _rebatched([5, 2]))
    other = home.deliver("open")
    assert [f["rows"] for f in one["files"]] == [3, 3, 2]
    assert [f["name"] for f in one["files"]] == [f"part-{i:05d}.parquet" for i in range(3)]
    # The data pages are the same bytes; only the footer differs (it names the delivery).
    assert [_pages(home, one, f) for f in one["files"]] == [
        _pages(home, other, f) for f in other["files"]
    ]
    # Rows stay sorted by record_id across parts, and are those of the one-part delivery.
    rows = home.records(one["delivery_id"])
    assert [r["record_id"] for r in rows] == sorted(r["record_id"] for r in rows)
    assert rows == home.records(built.open1["delivery_id"])
    keys = KeySet.for_home(home.settings.home).jwks()
    assert verify_delivery(home.deliveries / one["delivery_id"], keys).ok


def _pages(home: Any, manifest: dict[str, Any], entry: dict[str, Any]) -> bytes:
    """A part's bytes before its footer (footer length: the 4 bytes before `PAR1`)."""
    data: bytes = (home.deliveries / manifest["delivery_id"] / entry["name"]).read_bytes()
    footer = int.from_bytes(data[-8:-4], "little")
    return data[: len(data) - 8 - footer]


def test_nothing_eligible_still_gives_one_empty_signed_part(built: Built) -> None:
    home = built.home
    manifest = home.deliver("open", as_of=datetime(2024, 11, 14, tzinfo=UTC))
    assert manifest["counts"]["delivered"] == 0
    assert manifest["policy_version"] == "2023-09-29"
    assert [(f["name"], f["rows"]) for f in manifest["files"]] == [("part-00000.parquet", 0)]
    part = pq.read_table(home.deliveries / manifest["delivery_id"] / "part-00000.parquet")
    assert part.num_rows == 0
    assert part.schema.names == DELIVERED_SCHEMA.names
    assert home.lineage(manifest["delivery_id"]) == []


# -- safety -----------------------------------------------------------------------------------


@dataclass
class State:
    """Everything a failed build must leave as it was."""

    entries: list[str]
    lineage_version: int | None
    lineage: list[dict[str, Any]]
    audited: int

    @classmethod
    def of(cls, home: LakeHome) -> State:
        with open_store(home.settings.resolved_database_url) as store, store.session() as s:
            audited = len(SqlAuditSink.read(s, event_type="delivery.built"))
        return cls(
            sorted(p.name for p in home.deliveries.iterdir()),
            home.lake.version(LINEAGE_TABLE),
            home.lineage(),
            audited,
        )


def test_a_crash_while_writing_parts_leaves_no_delivery_and_no_lineage(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = State.of(built.home)
    original = build._write_parts
    wrote: list[Path] = []

    def crash(batches: Iterator[pa.RecordBatch], staging: Path, *args: Any) -> Any:
        # Write a real part file from the first batch, then die half-way.
        original(iter([next(batches)]), staging, *args)
        wrote.extend(staging.glob("part-*.parquet"))
        raise OSError("disk full")

    monkeypatch.setattr(build, "_write_parts", crash)
    with pytest.raises(OSError, match="disk full"):
        built.home.deliver("open")
    assert wrote  # the crash came after a part was written
    assert State.of(built.home) == before  # no directory at all, staging included


def test_a_failure_before_the_commit_leaves_nothing(
    built: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = State.of(built.home)

    def refuse(self: Signer, data: bytes) -> bytes:
        raise ConsentryError("signing key unavailable")

    monkeypatch.setattr(Signer, "sign", refuse)
    with pytest.raises(ConsentryError, match="signing key unavailable"):
        built.home.deliver("eu")
    # No directory, no audit event, no lineage: the job was rolled back before its commit.
    assert State.of(built.home) == before


def test_a_disabled_licensee_gets_nothing(built: Built) -> None:
    home = built.home
    home.add_licensee("gone")
    registry = registry_for(home.settings)
    try:
        registry.disable("gone")
    finally:
        registry.store.close()
    before = State.of(home)
    with pytest.raises(ConsentryError, match="disabled"):
        home.deliver("gone")
    assert State.of(home) == before


def test_a_cutoff_in_the_future_is_bad_input(built: Built) -> None:
    before = State.of(built.home)
    with pytest.raises(BadInput, match="future"):
        built.home.deliver("open", as_of=datetime.now(UTC) + timedelta(minutes=5))
    assert State.of(built.home) == before


def test_concurrent_deliveries_lose_no_lineage_and_one_licensee_waits_its_turn(
    lake_home: LakeHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("third-a", "third-b", "third-c"):
        lake_home.add_licensee(name)
    original = Lake.files

    def slow_files(self: Lake, name: str) -> list[str]:
        # Widen the window between reading the live lineage parts and publishing.
        found = original(self, name)
        time.sleep(0.05)
        return found

    monkeypatch.setattr(Lake, "files", slow_files)
    with ThreadPoolExecutor(max_workers=3) as pool:
        manifests = list(pool.map(lake_home.deliver, ["third-a", "third-b", "third-c"]))
        # Two deliveries for one licensee at once: the second is refused, not doubled.
        building, refused = threading.Event(), threading.Event()

        def hold(step: str) -> None:
            building.set()
            assert refused.wait(60), "the second delivery never came"

        first = pool.submit(lake_home.deliver, "third-a", on_progress=hold)
        assert building.wait(60)
        with pytest.raises(JobBusy, match="deliver:"):
            lake_home.deliver("third-a")
        refused.set()
        manifests.append(first.result())
    monkeypatch.setattr(Lake, "files", original)
    lineage = lake_home.lake.read_arrow(LINEAGE_TABLE)
    for manifest in manifests:
        rows = lineage.filter(pa.compute.equal(lineage["delivery_id"], manifest["delivery_id"]))
        assert rows.num_rows == manifest["counts"]["delivered"] > 0
    parts = {
        hashlib.sha256(Path(p).read_bytes()).hexdigest()
        for p in lake_home.lake.files(LINEAGE_TABLE)
    }
    assert parts == {m["lineage_sha256"] for m in manifests}


# -- engines ----------------------------------------------------------------------------------


@pytest.mark.spark
def test_spark_delivers_the_same_records_as_duckdb(lake_home: LakeHome, spark_session: Any) -> None:
    duck = lake_home.deliver("open", engine="duckdb")
    spark = lake_home.deliver("open", engine="spark")
    assert spark["engine"] == "spark"
    assert spark["counts"] == duck["counts"] == expected_counts("open")
    # Both sorted by record_id: the same rows in the same order, value for value.
    assert lake_home.records(duck["delivery_id"]) == lake_home.records(spark["delivery_id"])

    def lineage(manifest: dict[str, Any]) -> list[tuple[str, str, str]]:
        rows = lake_home.lineage(manifest["delivery_id"])
        return sorted((r["record_id"], r["post_id"], r["author_id"]) for r in rows)

    assert lineage(duck) == lineage(spark)
    assert len(lineage(duck)) == expected_counts("open")["delivered"]
    # The scoped licence's checks (region, language, period) agree post for post too.
    events = ledger_for(lake_home.settings)
    try:
        table = events.events_arrow([THIRD], AS_OF)
        policy = events.policy
    finally:
        events.store.close()
    firsts = {}
    for engine, backend in (
        ("duckdb", connect("duckdb")),
        ("spark", connect("spark", spark=spark_session)),
    ):
        expr = evaluate_posts(backend, lake_home.lake, policy, table, eu_scope(), AS_OF)
        rows = backend.to_pyarrow(expr.select("post_id", "first_reason")).to_pylist()
        firsts[engine] = {r["post_id"]: r["first_reason"] for r in rows}
    want = {pid: (r[0] if r else None) for pid, r in expected_reasons("eu").items()}
    assert firsts["duckdb"] == firsts["spark"] == want
