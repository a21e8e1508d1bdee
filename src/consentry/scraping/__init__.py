"""Scraping enforcement: exact "posts in any 24 hours" per entity, damages, evidence, meter.

See docs/scraping.md for the semantics; the rules are pure functions in `rules`.
"""

from consentry.scraping.assessment import assess
from consentry.scraping.attribution import Owners, attribute, check_owners
from consentry.scraping.canonical import evidence_sha256
from consentry.scraping.meter import ALERT_LEVELS, Alert, Bounds, MemoryMeter, Meter, RedisMeter
from consentry.scraping.results import Assessment, BilledWindow, EntityAssessment
from consentry.scraping.rules import (
    MODES,
    ROUNDINGS,
    Terms,
    earliest_windows,
    max_total_windows,
    select_windows,
    window_amount,
)

__all__ = [
    "ALERT_LEVELS",
    "MODES",
    "ROUNDINGS",
    "Alert",
    "Assessment",
    "BilledWindow",
    "Bounds",
    "EntityAssessment",
    "MemoryMeter",
    "Meter",
    "Owners",
    "RedisMeter",
    "Terms",
    "assess",
    "attribute",
    "check_owners",
    "earliest_windows",
    "evidence_sha256",
    "max_total_windows",
    "select_windows",
    "window_amount",
]
