"""A small demo generated once per session for the demo tests (about a second)."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from consentry.demo import TABLE_ORDER, DemoFacts, generate, read_facts


class Sizes(TypedDict):
    users: int
    posts: int
    access_events: int


class SeededSizes(Sizes):
    seed: int


SMALL = SeededSizes(users=5_000, posts=50_000, access_events=20_000, seed=7)
"""The issue's small run: 5,000 users, 50,000 posts, 20,000 access events."""


class Demo:
    """The generated files, their tables and the facts."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.facts: DemoFacts = read_facts(out)
        self.tables: dict[str, pa.Table] = {
            t: pq.read_table(out / f"{t}.parquet") for t in TABLE_ORDER
        }


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    out = tmp_path_factory.mktemp("demo") / "small"
    generate(out, **SMALL)
    return Demo(out)
