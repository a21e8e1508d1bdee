"""Failpoints: the named places where the fault-injection tests kill a job.

A failpoint does nothing unless the process was started with `CONSENTRY_FAILPOINTS` naming
it; then the process sends itself SIGKILL right there — no clean-up, no `finally`, exactly
what a power cut or the OOM killer does. `name@k` kills at the k-th time the process passes
`name` (a step a job repeats, such as one lake table after another). The tests use this to
kill every job at every step and check the invariants afterwards (docs/invariants.md). It is
never set in production; an unknown name in the variable is ignored.

It sits in the lowest layer so that the lake can have failpoints of its own (`lake.uploaded`,
between an object-storage upload and its commit), not only the jobs above it.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Final

__all__ = ["FAILPOINTS_ENV", "failpoint"]

FAILPOINTS_ENV: Final = "CONSENTRY_FAILPOINTS"
"""Comma-separated failpoint names at which the process kills itself (tests only)."""


_PASSED: Counter[str] = Counter()


def failpoint(name: str) -> None:
    """SIGKILL this process when CONSENTRY_FAILPOINTS lists `name` (or `name@k` and this is
    the k-th pass); else nothing."""
    wanted = os.environ.get(FAILPOINTS_ENV)
    if not wanted:
        return
    _PASSED[name] += 1
    listed = wanted.split(",")
    if name in listed or f"{name}@{_PASSED[name]}" in listed:
        os.kill(os.getpid(), signal.SIGKILL)
