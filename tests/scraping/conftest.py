"""A small demo platform generated once for the scraping tests (about a second)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consentry.demo import generate

SMALL = {"users": 2_000, "posts": 5_000, "access_events": 12_000, "seed": 11}


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scraping-demo") / "demo"
    generate(out, **SMALL)  # type: ignore[arg-type]
    return out
