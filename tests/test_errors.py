"""`consentry.errors.did_you_mean`: the hint that ends every "unknown name" message."""

from __future__ import annotations

from consentry.errors import did_you_mean

SCRAPERS = ["scraper-alpha", "scraper-bravo", "scraper-charlie", "acme-research", "uni-lab"]


def test_a_close_name_is_suggested() -> None:
    assert did_you_mean("scraper-alpa", SCRAPERS) == "did you mean 'scraper-alpha'?"


def test_several_close_names_closest_first_at_most_three() -> None:
    hint = did_you_mean("scraper", SCRAPERS)
    assert hint.startswith("did you mean 'scraper-")
    assert hint.count("' or '") == 2  # three names, no more


def test_nothing_close_lists_the_known_names_sorted() -> None:
    assert did_you_mean("zzz", ["b", "a"]) == "known: a, b"


def test_a_long_list_is_cut_with_a_count() -> None:
    names = [f"name-{i:02d}" for i in range(13)]
    assert did_you_mean("zzz", names, listed=10) == (
        "known: " + ", ".join(names[:10]) + " and 3 more"
    )


def test_nothing_known_gives_no_hint() -> None:
    assert did_you_mean("anything", []) == ""
