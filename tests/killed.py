"""A `consentry` command run in a process of its own and killed (SIGKILL) at a failpoint
(`consentry.faults`), for the tests that check what recovery makes of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from consentry.faults import FAILPOINTS_ENV


def cli_killed_at(point: str, home: Path, *args: str) -> None:
    """Run `consentry --home HOME ARGS` with the failpoint `point` (`name` or `name@k`) set;
    fail unless the process died there, by SIGKILL."""
    killed = subprocess.run(
        [sys.executable, "-m", "consentry.cli", "--home", str(home), *args],
        env={**os.environ, FAILPOINTS_ENV: point},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, (
        f"not killed at {point} (exit {killed.returncode})\n" + (killed.stderr[-3000:])
    )
