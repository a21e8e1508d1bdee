"""Fixtures shared by the whole suite: isolated homes, PostgreSQL schemas, Spark."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase
from hypothesis import settings as hypothesis_settings

from consentry.settings import Settings
from tests.services import (
    S3Server,
    SparkCluster,
    ensure_seaweedfs,
    postgres_schema,
    s3_filesystem,
    spark_standalone,
)

os.environ.setdefault("PYSPARK_PYTHON", os.environ.get("PYSPARK_PYTHON", "python3"))

# Mutation runs (`make mutate`, docs/testing.md) set HYPOTHESIS_PROFILE=mutate: every mutant
# then meets the same examples (derandomize), so a survivor is a fact about the tests and not
# about a seed, and no property test runs more than MUTATE_MAX_EXAMPLES of them. A failure is
# not shrunk: a mutant only needs to fail, and shrinking would take longer than the tests.
MUTATE_MAX_EXAMPLES = 50
hypothesis_settings.register_profile(
    "mutate",
    max_examples=MUTATE_MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
# Every other run: no per-example deadline. On a shared 2-core machine an example's time says
# how loaded the machine is, not whether a rule holds (a 200 ms deadline failed rule tests
# under load); tests that are about speed live in bench/.
hypothesis_settings.register_profile("consentry", deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or "consentry")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every Spark test, and under the mutate profile cap explicit max_examples.

    1. Any test that uses the `spark_session` or `spark_cluster` fixture is marked `spark`,
       so `-m "not spark"` (mutation runs, quick local runs) never starts a JVM because a
       marker was forgotten.
    2. Outside the mutate profile, change nothing else (`make test` keeps each test's own
       count).
    3. For each collected Hypothesis test, lower its max_examples to MUTATE_MAX_EXAMPLES if it
       asks for more; a test's explicit settings would otherwise override the profile.
    """
    for item in items:
        if {"spark_session", "spark_cluster"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.spark)
    if os.environ.get("HYPOTHESIS_PROFILE") != "mutate":
        return
    for item in items:
        test = getattr(item, "obj", None)
        current = getattr(test, "_hypothesis_internal_use_settings", None)
        if current is not None and current.max_examples > MUTATE_MAX_EXAMPLES:
            test._hypothesis_internal_use_settings = hypothesis_settings(  # type: ignore[union-attr]
                current, max_examples=MUTATE_MAX_EXAMPLES, derandomize=True
            )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty Consentry home for one test."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def settings(home: Path) -> Settings:
    """Settings pointing at the per-test home (SQLite store)."""
    return Settings(home=home)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL for a fresh, empty PostgreSQL schema on the real server; dropped afterwards."""
    with postgres_schema() as url:
        yield url


S3_BUCKET = "consentry-tests"


@pytest.fixture(scope="session")
def s3_server() -> S3Server:
    """The tests' S3 endpoint (SeaweedFS, `ensure_seaweedfs`) with the bucket `S3_BUCKET`."""
    server = ensure_seaweedfs()
    s3_filesystem(server).create_dir(S3_BUCKET)
    return server


@pytest.fixture
def s3_lake_uri(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`s3://consentry-tests/<fresh prefix>` for one test's lake, with the AWS variables of
    the tests' server set; everything under the prefix is deleted afterwards."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    prefix = f"{S3_BUCKET}/{uuid.uuid4().hex}"
    yield f"s3://{prefix}"
    s3_filesystem(s3_server).delete_dir(prefix)


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkCluster]:
    """A Spark standalone cluster (a master and one worker, started from the installed
    pyspark) for the whole run; drivers reach it from their own processes."""
    with spark_standalone(tmp_path_factory.mktemp("spark-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def spark_session() -> Iterator[Any]:
    """One local Spark session for the whole run (it takes ~10 s to start)."""
    from consentry.engine import spark_session as make_session

    session = make_session(master=os.environ.get("CONSENTRY_SPARK_MASTER", "local[2]"))
    yield session
    session.stop()
