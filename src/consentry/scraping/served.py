"""Which signals a scraper was served during its billed windows: the site's robots.txt
rules and the share of authors whose pages refused AI training, from the ledger's history.

A claim is stronger when the scraper was told: the evidence pack states, per billed
window, what every page and robots.txt said at the window's start.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from consentry.instants import rfc3339
from consentry.ledger.export import signal_purposes, signal_table
from consentry.ledger.service import ConsentLedger
from consentry.ledger.signals import robots_txt

__all__ = ["MAX_SIGNAL_INSTANTS", "SignalsServed", "signals_served"]

MAX_SIGNAL_INSTANTS = 32
"""At most this many distinct window starts are resolved (one bulk resolution each); an
entity billed for more windows has the later ones marked as not computed."""


@dataclass(frozen=True, slots=True)
class SignalsServed:
    """What was served at one window start."""

    window_start: datetime
    policy_version: str | None
    """The policy version in force at the window start (its robots.txt rules applied)."""
    robots_txt: str | None
    authors: int | None
    """Authors with an account at the window start (created by then, not deleted)."""
    refused: int | None
    """Of those, the authors whose pages carried `train-ai=n` (and `X-Robots-Tag: noai`)."""

    @property
    def share(self) -> float | None:
        """`refused / authors` (None when not computed or no author)."""
        if self.refused is None or not self.authors:
            return None
        return self.refused / self.authors

    def to_json(self) -> dict[str, object]:
        return {
            "window_start": rfc3339(self.window_start),
            "policy_version": self.policy_version,
            "robots_txt": self.robots_txt,
            "authors": self.authors,
            "refused_ai_training": self.refused,
            "share_refused": self.share,
        }


def signals_served(
    ledger: ConsentLedger, starts: Sequence[datetime], base_url: str
) -> list[SignalsServed]:
    """The signals served at each window start in `starts`.

    1. The instant is the window's start: what the scraper was told when the window it is
       billed for began (a later opt-out does not count for it).
    2. The distinct starts are taken in order; the first `MAX_SIGNAL_INSTANTS` are
       resolved, the rest reported with nothing computed.
    3. Subjects are read once, and the events of every AIPREF-mapped purpose of the versions
       in force at those instants once (up to the latest); each instant is then one
       `signal_table` (one bulk resolution, the header rule of `consentry.ledger.signals`).
    4. `refused` counts the authors whose header set has `train-ai=n`; robots.txt is
       `robots_txt` for the version in force.
    """
    distinct = sorted(set(starts))
    computed = distinct[:MAX_SIGNAL_INSTANTS]
    results: dict[datetime, SignalsServed] = {
        at: SignalsServed(at, None, None, None, None) for at in distinct[MAX_SIGNAL_INSTANTS:]
    }
    if computed:
        policy = ledger.policy
        purposes = sorted(
            {key for at in computed for key in signal_purposes(policy.version_at(at))}
        )
        subjects = ledger.subjects_arrow()
        events = ledger.events_arrow(purposes, computed[-1])
        for at in computed:
            table = signal_table(policy, subjects, events, at, base_url)
            refused = sum(
                n
                for hs, n in zip(table.header_sets, table.counts(), strict=True)
                if hs.train_ai == "n"
            )
            results[at] = SignalsServed(
                window_start=at,
                policy_version=table.policy_version,
                robots_txt=robots_txt(base_url, policy.version_at(at)),
                authors=table.authors.num_rows,
                refused=refused,
            )
    return [results[at] for at in starts]
