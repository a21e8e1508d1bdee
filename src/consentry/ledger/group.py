"""Group commit: the consent changes of concurrent requests go into one transaction.

One PUT, one transaction costs a commit (an fsync on SQLite, a WAL flush and round trips on
PostgreSQL) and a turn at the audit log's lock per change, which bounds a server to a few
hundred changes per second. A `GroupCommitter` serves a whole process:

1. Requests `submit` their change (checked with `ConsentLedger.check_change` first, so a
   bad change never joins a batch) and wait for its future.
2. One writer thread takes every change waiting (up to `max_batch`) and records them with
   one `ConsentLedger.record_many` (`known_users_only`): one transaction, one turn at the
   log's lock, one commit. While it commits, new changes queue up and form the next batch,
   so batches grow with the load and a lone change is written at once.
3. A future is resolved only after that commit: an answer still means "stored and on the
   audit log". If a batch fails, its changes are retried one by one, so one change's
   failure is only its own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Final

from consentry.ledger.service import ConsentChange, ConsentEventRecord, ConsentLedger

__all__ = ["MAX_BATCH", "GroupCommitter"]

MAX_BATCH: Final = 512
"""Most changes one transaction takes (it holds the audit log's lock while it commits)."""

_Waiting = tuple[ConsentChange, "Future[ConsentEventRecord | None]"]


class GroupCommitter:
    """See the module docstring."""

    def __init__(self, ledger: ConsentLedger, *, max_batch: int = MAX_BATCH) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self._waiting: list[_Waiting] = []
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, change: ConsentChange) -> Future[ConsentEventRecord | None]:
        """Queue `change`; the future gives its record once committed (None: the platform
        does not know the user, nothing was recorded), or the error that stopped it."""
        future: Future[ConsentEventRecord | None] = Future()
        with self._ready:
            self._waiting.append((change, future))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="consentry-group-commit", daemon=True
                )
                self._thread.start()
            self._ready.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._waiting:
                    self._ready.wait()
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
            self._commit(batch)

    def _commit(self, batch: Sequence[_Waiting]) -> None:
        try:
            found = self.ledger.record_many([c for c, _ in batch], known_users_only=True)
        except Exception as exc:
            if len(batch) == 1:
                batch[0][1].set_exception(exc)
                return
            for one in batch:
                self._commit([one])
            return
        for (_, future), record in zip(batch, found, strict=True):
            future.set_result(record)
