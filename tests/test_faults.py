"""Failpoints (`consentry.faults`): silent unless named in CONSENTRY_FAILPOINTS; `name@k`
fires at the k-th pass. The kills themselves: tests/jobs/test_faults.py and the lake's
`lake.uploaded` in tests/engine/test_s3_home.py."""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from consentry import faults
from consentry.faults import FAILPOINTS_ENV, failpoint


def test_failpoints_fire_only_when_named_and_count_passes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    killed: list[int] = []
    monkeypatch.setattr("consentry.faults.os.kill", lambda pid, sig: killed.append(sig))
    monkeypatch.setattr(faults, "_PASSED", Counter())
    monkeypatch.delenv(FAILPOINTS_ENV, raising=False)
    failpoint("a.step")
    assert killed == []
    monkeypatch.setenv(FAILPOINTS_ENV, "x.step,a.step@2")
    failpoint("a.step")
    assert killed == []
    failpoint("a.step")
    assert killed == [signal.SIGKILL]
    failpoint("x.step")
    assert killed == [signal.SIGKILL, signal.SIGKILL]
