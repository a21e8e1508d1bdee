"""Policies the ledger tests share."""

from __future__ import annotations

from consentry.policy import parse_policy

__all__ = ["SWITCHES"]

# The default policy denies minors and allows unknown ages everywhere; this one does the
# opposite for one purpose, so both switches of the minor and unknown-age rules are exercised;
# and its age of majority is not the default 18.
SWITCHES = parse_policy(
    """\
versions:
  - version: v1
    effective_from: 2024-01-01T00:00:00Z
    age_of_majority: 16
    purposes:
      - key: strict
        title: Strict
        description: Denies minors and unknown ages.
        default: allow
        minors: deny
        unknown_age: deny
        gpc: true
      - key: open
        title: Open
        description: Allows minors and unknown ages.
        default: deny
        minors: allow
        unknown_age: allow
        gpc: true
""",
    source="switches.yaml",
)
