"""Regions in policy files: ISO 3166-1 alpha-2 country codes and the built-in groups.

Country and currency lists come from `pycountry` (ISO 3166-1 and ISO 4217 data as shipped
with the installed version), so a typo such as `UK` for a country or `EL` for Greece is
caught instead of silently never matching.
"""

from __future__ import annotations

import functools

import pycountry

__all__ = [
    "REGION_GROUPS",
    "expand_region",
    "is_country_code",
    "is_currency_code",
    "is_region",
    "region_name",
]

_EU = frozenset(
    {
        "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
        "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
    }
)  # fmt: skip

REGION_GROUPS: dict[str, frozenset[str]] = {
    "EU": _EU,
    "EEA": _EU | {"IS", "LI", "NO"},
    # The United Kingdom's ISO 3166-1 code is GB; "UK" is only an exceptionally reserved code.
    "UK": frozenset({"GB"}),
}
"""Built-in region groups: EU = the 27 member states, EEA = EU + IS, LI, NO, UK = GB."""

_GROUP_NAMES = {"EU": "the EU", "EEA": "the EEA", "UK": "the UK"}
# Countries whose English name takes "the" in a sentence ("people in the Netherlands").
_WITH_ARTICLE = frozenset(
    {"AE", "BS", "CF", "DO", "GB", "GM", "KM", "MH", "MV", "NL", "PH", "SB", "US"}
)


@functools.cache
def _country_codes() -> frozenset[str]:
    return frozenset(c.alpha_2 for c in pycountry.countries)


@functools.cache
def _currency_codes() -> frozenset[str]:
    return frozenset(c.alpha_3 for c in pycountry.currencies)


def is_country_code(code: str) -> bool:
    """True for an assigned ISO 3166-1 alpha-2 code, upper case (`DE`, `GB`, `NO`)."""
    return code in _country_codes()


def is_region(code: str) -> bool:
    """True for a country code or a built-in group name."""
    return code in REGION_GROUPS or is_country_code(code)


def is_currency_code(code: str) -> bool:
    """True for an ISO 4217 alphabetic code, upper case (`USD`, `EUR`)."""
    return code in _currency_codes()


def expand_region(code: str) -> frozenset[str]:
    """The country codes a region stands for.

    1. A built-in group expands to its members.
    2. A country code stands for itself.
    3. Anything else raises KeyError (callers validate first with `is_region`).
    """
    if code in REGION_GROUPS:
        return REGION_GROUPS[code]
    if is_country_code(code):
        return frozenset({code})
    raise KeyError(f"unknown region {code!r}: use an ISO 3166-1 alpha-2 code or EU, EEA, UK")


def region_name(code: str) -> str:
    """A plain name for sentences: `the EU`, `Germany`, `Taiwan`; unknown codes as given."""
    if code in _GROUP_NAMES:
        return _GROUP_NAMES[code]
    country = pycountry.countries.get(alpha_2=code)
    if country is None:
        return code
    name: str = getattr(country, "common_name", None) or country.name
    return f"the {name}" if code in _WITH_ARTICLE else name
