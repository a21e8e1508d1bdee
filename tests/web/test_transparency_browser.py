"""The transparency report in a real browser: it fits a phone and a desktop without the
page scrolling sideways, and its charts scale to the column.

Uses the demo platform and server of tests/web/test_browser.py (its `served` fixture and
system Chromium), so on a fresh demo the default period is the demo's last year of choices.
"""

from __future__ import annotations

import pytest

from tests.web.test_browser import Served, _chromium, _shot, served

__all__ = ["served"]  # the fixture, imported so pytest finds it in this module

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("width", [390, 1280])
def test_transparency_page_fits_the_width(served: Served, width: int) -> None:
    with _chromium() as browser:
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        response = page.goto(served.url + "/transparency")
        assert response is not None
        assert response.status == 200
        # The demo's choices end on 30 June 2025: the default period still shows them.
        third = page.locator("section.figure", has_text="Third-party AI training")
        figure = third.locator(".figure-value").inner_text()
        assert figure not in ("0", "fewer than 10"), figure
        charts = page.locator("figure.chart svg")
        assert charts.count() >= 3  # opt-outs per month for each of the demo's purposes
        _shot(page, f"transparency-{width}")
        # Every table open too: wide tables scroll inside their frame, never the page.
        summaries = page.locator("details summary")
        for i in range(summaries.count()):
            summaries.nth(i).click()
        assert page.locator("details[open]").count() == summaries.count()
        scroll = page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= width, f"the page scrolls sideways at {width} px ({scroll} px wide)"
        column = page.locator("main").evaluate("e => e.clientWidth")
        for i in range(charts.count()):
            box = charts.nth(i).bounding_box()
            assert box is not None
            assert 0 < box["width"] <= column
            # viewBox 480 x 184: the chart keeps its proportions at any width.
            assert box["height"] == pytest.approx(box["width"] * 184 / 480, rel=0.02)
        _shot(page, f"transparency-{width}-open")
        context.close()
