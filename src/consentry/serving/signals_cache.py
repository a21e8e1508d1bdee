"""The process's cache of public signals answers: each author's resolved signals, reused
for a short while instead of reading the ledger on every request.

A platform asks for the same authors again and again (every view of a post page through an
edge's `auth_request`), so one process keeps what it resolved:

1. An entry holds an author's `AuthorSignals` and the `max-age` its answer carries, and is
   used until its own deadline (`reuse_seconds`: at most `CONSENTRY_SIGNALS_CACHE_MS`,
   never longer than the answer's max-age, and never so long that a cache in front could
   then keep it past the revocation SLA). Past it, the ledger is read again.
2. A consent change this process commits is seen at once: before answering, the cache drops
   every author noted in `CONSENT_CHANGES` since it last looked (everyone, for bulk
   writes). A change made by another process (another worker, a CLI import) is seen when
   the entry's deadline passes.
3. At most `max_entries` authors are kept, the least recently used dropped first: a flood
   of made-up ids cannot grow the process.
The key `None` holds the site default (a post the lake does not hold).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final, NamedTuple

from consentry.ledger.changes import CONSENT_CHANGES, ConsentChanges
from consentry.ledger.signals import AuthorSignals

__all__ = ["MAX_ENTRIES", "CachedSignals", "Mark", "SignalsCache"]

MAX_ENTRIES: Final = 16_384
"""Authors one process keeps: at the endpoint's rate, about every author asked for within a
second (an entry older than its deadline is of no use anyway)."""


@dataclass(frozen=True, slots=True)
class CachedSignals:
    """An author's signals as answered, until `expires` (`time.monotonic()` seconds)."""

    signals: AuthorSignals
    max_age: int
    """The answer's `Cache-Control: max-age`, computed with the signals."""
    expires: float


class Mark(NamedTuple):
    """Taken just before the ledger is read (`SignalsCache.mark`)."""

    position: int
    """The journal's position."""
    at: float
    """`time.monotonic()`: an entry's reuse is counted from here, the read's own start."""


class SignalsCache:
    """See the module docstring."""

    def __init__(
        self, *, max_entries: int = MAX_ENTRIES, changes: ConsentChanges = CONSENT_CHANGES
    ) -> None:
        self.max_entries = max_entries
        self._changes = changes
        self._seen = changes.position
        self._entries: OrderedDict[str | None, CachedSignals] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, author_id: str | None) -> CachedSignals | None:
        """The author's entry while it may be reused; None when there is none (or no more)."""
        with self._lock:
            if self._changes.position != self._seen:
                self._forget_changed()
            found = self._entries.get(author_id)
            if found is None:
                return None
            if time.monotonic() >= found.expires:
                del self._entries[author_id]
                return None
            self._entries.move_to_end(author_id)
            return found

    def mark(self) -> Mark:
        """Where the journal and the clock stand: take it before reading the ledger, and
        give it to `put` with what was read."""
        return Mark(self._changes.position, time.monotonic())

    def put(
        self,
        author_id: str | None,
        signals: AuthorSignals,
        max_age: int,
        reuse: float,
        *,
        mark: Mark,
    ) -> CachedSignals:
        """Keep the author's signals, read after `mark`, until `reuse` seconds after it;
        the entry.

        Not kept when `reuse` is 0, nor when the journal noted a change of the author after
        `mark`: the read may have missed it (a change committed while it ran).
        """
        entry = CachedSignals(signals, max_age, mark.at + reuse)
        if reuse <= 0:
            return entry
        with self._lock:
            if self._changes.position != mark.position:
                _, changed = self._changes.since(mark.position)
                if changed is None or author_id in changed:
                    return entry
            self._entries[author_id] = entry
            self._entries.move_to_end(author_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def _forget_changed(self) -> None:
        """Drop the authors the journal noted since the last look (all, for `None`)."""
        self._seen, changed = self._changes.since(self._seen)
        if changed is None:
            self._entries.clear()
            return
        for author_id in changed:
            self._entries.pop(author_id, None)
