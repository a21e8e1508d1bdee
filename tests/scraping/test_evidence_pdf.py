"""The evidence pack's PDF and chart as a court reads them: a title page, numbered pages, no
trace of the machine that printed it, and an axis in plain numbers."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.ticker import ScalarFormatter
from pypdf import PdfReader
from typer.testing import CliRunner

from consentry.cli.main import app
from consentry.scraping.evidence import chart_figure
from consentry.scraping.results import EntityAssessment

runner = CliRunner()


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> tuple[Path, dict[str, Any]]:
    """scraper-charlie's pack (one billed window of 1,200,000 posts), written by the CLI."""
    home = tmp_path_factory.mktemp("pdf-home")
    out = tmp_path_factory.mktemp("pdf-out") / "pack"
    result = runner.invoke(
        app,
        ["--home", str(home), "scraping", "evidence", "scraper-charlie",
         "--events", str(demo_dir / "access_events.parquet"),
         "--entities", str(demo_dir / "entities.parquet"),
         "--out", str(out), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    assert document["pdf"] is True, "headless Chromium printed no PDF (is /usr/bin/chromium there?)"
    return out, document


def _pages(out: Path) -> list[str]:
    return [page.extract_text() for page in PdfReader(out / "report.pdf").pages]


# The two PDF tests start the system Chromium (to print): `browser`, like the Playwright
# tests, so mutation runs of the scraping rules leave them out.
@pytest.mark.browser
def test_every_page_is_numbered_and_carries_no_browser_header(
    pack: tuple[Path, dict[str, Any]],
) -> None:
    out, _ = pack
    pages = _pages(out)
    assert len(pages) >= 2  # the title page, then the report
    for number, text in enumerate(pages, start=1):
        assert f"Page {number} of {len(pages)}" in text, text
        # Chromium's own header and footer: the file:// URL of the staging directory it
        # printed from, the date, "1/2".
        assert "file:" not in text, text
        assert ".staging-" not in text, text
        assert str(out.parent) not in text, text
        assert not re.search(rf"\b{number}/{len(pages)}\b", text), text


@pytest.mark.browser
def test_the_title_page_stands_alone(pack: tuple[Path, dict[str, Any]]) -> None:
    out, document = pack
    title, *rest = _pages(out)
    for fact in (
        "Evidence of scraping",
        "scraper-charlie",
        "1,350,000 in 1,543 requests",
        "USD 18,000.00",
        "2024-11-15",
        document["generated_at"],
        document["first_access"],
    ):
        assert fact in title, (fact, title)
    assert document["first_access"] == "2025-03-04T10:00:00Z"
    assert document["last_access"] < "2025-03-09"
    # The report itself starts on the next page.
    assert "How to check these figures" not in title
    assert "Credentials and IP addresses involved" not in title
    assert "Scraping evidence: scraper-charlie" in rest[0]


def _axis_labels(posts: list[int]) -> tuple[str, list[str], Any]:
    start = 1_741_082_400_000_000  # 2025-03-04T10:00:00Z
    ts = np.array([start + i * 3_600_000_000 for i in range(len(posts))], dtype=np.int64)
    entity = EntityAssessment(
        "scraper-x", sum(posts), len(posts), sum(posts), datetime(2025, 3, 4, tzinfo=UTC), (),
        Decimal("0.00"),
    )  # fmt: skip
    fig = chart_figure(ts, np.array(posts, dtype=np.int64), entity, 1_000_000, 86_400_000_000)
    fig.canvas.draw()
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_yticklabels()]
    return ax.yaxis.get_offset_text().get_text(), labels, ax


@pytest.mark.parametrize(
    "posts",
    [
        [600_000, 600_000, 1],  # up to 1.2 million: matplotlib would write 0.2 … 1.2 and "1e6"
        [1_000_000, 20, 30, 40],  # a million and a little more
        [1, 2],  # a handful: whole ticks only (no "0", "0", "1" from 0, 0.5, 1)
    ],
)
def test_the_chart_axis_is_in_plain_numbers(posts: list[int]) -> None:
    offset, labels, ax = _axis_labels(posts)
    assert offset == ""
    assert labels, "no y tick labels"
    for label in labels:
        assert re.fullmatch(r"\d{1,3}(,\d{3})*", label), labels
    assert len(set(labels)) == len(labels), labels
    if sum(posts) >= 1_000_000:
        assert any(label.count(",") == 2 for label in labels), labels  # millions, written out
        # The data would have been drawn with a multiplier had the axis been left as it was.
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.figure.canvas.draw()
        assert ax.yaxis.get_offset_text().get_text() != ""
