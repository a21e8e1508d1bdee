"""`--engine spark` on a real Spark standalone cluster (a master and a worker started by the
`spark_cluster` fixture) delivers and assesses exactly what DuckDB does.

Each Spark run is a `consentry` process of its own, as in production: its driver connects to
the cluster named by CONSENTRY_SPARK_MASTER, and the master's status page shows the
application run there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from consentry.engine import Lake
from consentry.engine.backends import check_spark_master
from consentry.errors import BadInput
from tests.services import SparkCluster, free_port

AS_OF = "2026-12-01T00:00:00Z"


def _consentry(
    home: Path, *args: str, master: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENTRY_")}
    if master is not None:
        env["CONSENTRY_SPARK_MASTER"] = master
    # In the home's folder: a job must leave nothing in its working directory (Spark would
    # put a `spark-warehouse` there for any table it saved).
    done = subprocess.run(
        [sys.executable, "-m", "consentry.cli", "--home", str(home), *args],
        cwd=home.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated platform with one licensee for third-party AI training."""
    home = tmp_path_factory.mktemp("cluster") / "home"
    _consentry(home, "init")
    _consentry(home, "demo", "generate", "--users", "1500", "--posts", "15000",
               "--access-events", "30000", "--seed", "11", "--json")  # fmt: skip
    _consentry(home, "licensee", "add", "lab", "--purpose", "ai_training_third_party", "--json")
    return home


def _finished_apps(cluster: SparkCluster) -> int:
    return sum(1 for app in cluster.status()["completedapps"] if app["name"] == "consentry")


def _wait_finished(cluster: SparkCluster, count: int) -> None:
    # The master marks an application finished shortly after its driver leaves.
    deadline = time.monotonic() + 30
    while _finished_apps(cluster) < count:
        assert time.monotonic() < deadline, cluster.status()
        time.sleep(0.5)


def _records(home: Path, manifest: dict[str, Any]) -> pa.Table:
    folder = home / "deliveries" / manifest["delivery_id"]
    parts = [pq.read_table(folder / f["name"]) for f in manifest["files"]]
    return pa.concat_tables(parts).replace_schema_metadata(None)


def _lineage(home: Path, delivery_id: str) -> list[tuple[Any, ...]]:
    rows = Lake(home / "lake").read_arrow("delivery_lineage").to_pylist()
    return sorted(
        tuple(v for k, v in r.items() if k not in {"delivery_id", "delivered_at"})
        for r in rows
        if r["delivery_id"] == delivery_id
    )


def test_a_delivery_on_the_cluster_is_the_duckdb_delivery(
    spark_cluster: SparkCluster, platform: Path
) -> None:
    before = _finished_apps(spark_cluster)
    deliver = ("deliver", "lab", "--as-of", AS_OF, "--json", "--engine")
    duck = json.loads(_consentry(platform, *deliver, "duckdb").stdout)
    spark = json.loads(_consentry(platform, *deliver, "spark", master=spark_cluster.master).stdout)
    _wait_finished(spark_cluster, before + 1)

    assert (duck["engine"], spark["engine"]) == ("duckdb", "spark")
    assert spark["counts"] == duck["counts"]
    assert spark["counts"]["delivered"] > 1000
    assert spark["counts"]["excluded"]["consent_denied"] > 0
    duck_records, spark_records = _records(platform, duck), _records(platform, spark)
    assert duck_records.num_rows == duck["counts"]["delivered"]
    assert spark_records.equals(duck_records)
    assert _lineage(platform, spark["delivery_id"]) == _lineage(platform, duck["delivery_id"])
    assert len(_lineage(platform, spark["delivery_id"])) == duck["counts"]["delivered"]


def test_an_assessment_on_the_cluster_is_the_duckdb_assessment(
    spark_cluster: SparkCluster, platform: Path
) -> None:
    before = _finished_apps(spark_cluster)
    assess = ("scraping", "assess", "--json", "--engine")
    duck = json.loads(_consentry(platform, *assess, "duckdb").stdout)
    spark = json.loads(_consentry(platform, *assess, "spark", master=spark_cluster.master).stdout)
    _wait_finished(spark_cluster, before + 1)

    assert (duck.pop("engine"), spark.pop("engine")) == ("duckdb", "spark")
    assert duck.pop("assessment_id") != spark.pop("assessment_id")
    assert spark == duck
    assert any(e["windows"] for e in duck["entities"]), "the demo's scrapers cross the threshold"
    assert float(duck["total_amount"]) > 0


def test_consent_resolved_on_the_cluster_is_duckdb_s_and_leaves_no_warehouse(
    spark_cluster: SparkCluster, platform: Path
) -> None:
    resolve = ("consent", "resolve", "ai_training_third_party", "--at", AS_OF, "--json")
    duck = json.loads(_consentry(platform, *resolve, "--engine", "duckdb").stdout)
    for _ in range(2):  # the second run once met the first's saved table and failed
        spark = json.loads(
            _consentry(platform, *resolve, "--engine", "spark", master=spark_cluster.master).stdout
        )
        assert spark == duck
    assert duck["users"] == 1500
    assert duck["allow"] > 0
    assert duck["deny"] > 0
    assert sorted(p.name for p in platform.parent.iterdir()) == ["home"]


def test_an_unreachable_master_is_refused_at_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _consentry(home, "init")
    _consentry(home, "licensee", "add", "lab", "--purpose", "ai_training_third_party")
    nobody = f"spark://127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = _consentry(home, "deliver", "lab", "--engine", "spark", master=nobody, check=False)
    assert done.returncode == 2
    assert f"CONSENTRY_SPARK_MASTER: no Spark master answers at {nobody}" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 30
    assert not any((home / "deliveries").glob("dlv-*"))


@pytest.mark.parametrize(
    "master", ["local", "local[1]", "local[*]", "local[4,2]", "yarn", "k8s://https://k8s:6443"]
)
def test_master_urls_spark_takes_as_they_are(master: str) -> None:
    assert check_spark_master(master) == master


@pytest.mark.parametrize(
    "master",
    ["", "local[0]", "local[", "local[2", "local[x]", "spark://", "spark://host",
     "spark://host:port", "http://127.0.0.1:7077", "mesos://m:5050"],
)  # fmt: skip
def test_anything_else_is_bad_input_naming_the_setting(master: str) -> None:
    with pytest.raises(BadInput, match="CONSENTRY_SPARK_MASTER"):
        check_spark_master(master)
