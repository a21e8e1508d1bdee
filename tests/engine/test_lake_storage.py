"""Snapshot folders of database sources: a process killed outright leaves its folder, and the
next read by any process removes it (`sweep_dead_snapshots`); live owners' folders stay.
The end-to-end case with a Mastodon server: tests/sources/test_mastodon.py."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from consentry.engine.lake_storage import SNAPSHOT_PREFIX, new_snapshot_folder, sweep_dead_snapshots


def _folder_of_a_killed_process(tmp_path: Path) -> Path:
    script = (
        "import os\n"
        "from consentry.engine.lake_storage import new_snapshot_folder\n"
        "folder, _ = new_snapshot_folder()\n"
        "(folder / 'posts.parquet').write_bytes(b'rows')\n"
        "print(folder, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == -9, done.stderr
    return Path(done.stdout.strip())


def test_the_folder_of_a_killed_process_is_swept_and_a_live_one_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = _folder_of_a_killed_process(tmp_path)
    assert dead.parent == tmp_path
    assert (dead / "posts.parquet").exists()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # tempfile's documented override
    live, fd = new_snapshot_folder()
    try:
        assert live.parent == tmp_path
        assert sweep_dead_snapshots() == [dead]
        assert not dead.exists()
        assert live.exists(), "this process still owns it"
    finally:
        os.close(fd)
    assert sweep_dead_snapshots() == [live], "its owner let go"


def test_a_folder_without_its_lock_is_swept_only_once_old(tmp_path: Path) -> None:
    young = tmp_path / f"{SNAPSHOT_PREFIX}young"
    old = tmp_path / f"{SNAPSHOT_PREFIX}old"
    other = tmp_path / "someone-else"
    for folder in (young, old, other):
        folder.mkdir()
    hour_ago = time.time() - 3600
    for folder in (old, other):
        os.utime(folder, (hour_ago, hour_ago))
    assert sweep_dead_snapshots(tmp_path) == [old]
    assert young.exists()
    assert other.exists()
