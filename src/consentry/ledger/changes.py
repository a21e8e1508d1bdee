"""Whose consent this process changed: how a cache of resolved consent in the same process
learns of a change at once, without asking the store.

`CONSENT_CHANGES` is the process's journal. The ledger notes every committed change in it
(`ConsentLedger.record_many`: the users of the events; `sync_subjects` and `import_events`:
anyone). A cache remembers the journal's `position` when it last looked and, before it
answers, asks `since(position)` who changed after that:

1. Nothing noted since: the position is unchanged (one integer comparison, no lock).
2. Else the users noted after it, or None — "anyone, drop everything" — when a note named
   no users or the journal no longer reaches that far back (it keeps the last `keep`
   notes).

A note is made after its transaction commits: a reader that sees it reads the new state.
A reader that read the old state just before the commit and caches it after the note is
caught by its next `since`. Changes made by other processes are not in the journal; a
cache of them must bound how long it keeps an answer (`consentry.api.public_signals`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from typing import Final

__all__ = ["CONSENT_CHANGES", "ConsentChanges"]


class ConsentChanges:
    """See the module docstring."""

    def __init__(self, keep: int = 1024) -> None:
        self._lock = threading.Lock()
        self._position = 0
        self._notes: deque[tuple[int, frozenset[str] | None]] = deque(maxlen=keep)

    @property
    def position(self) -> int:
        """How many notes were made so far (read without the lock: an int is read whole)."""
        return self._position

    def note(self, user_ids: Iterable[str] | None) -> None:
        """Record that the consent of `user_ids` changed (None: of anyone); call it once the
        change is committed."""
        who = None if user_ids is None else frozenset(user_ids)
        with self._lock:
            self._position += 1
            self._notes.append((self._position, who))

    def since(self, position: int) -> tuple[int, frozenset[str] | None]:
        """(the current position, the users noted after `position`); None instead of the
        users when anyone may have changed (see the module docstring)."""
        with self._lock:
            current = self._position
            if current == position:
                return current, frozenset()
            if not self._notes or self._notes[0][0] > position + 1:
                return current, None
            changed: set[str] = set()
            for at, who in self._notes:
                if at <= position:
                    continue
                if who is None:
                    return current, None
                changed |= who
            return current, frozenset(changed)


CONSENT_CHANGES: Final = ConsentChanges()
"""The journal of this process."""
