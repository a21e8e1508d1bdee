"""The `consentry` process ends with its command's status, whatever native threads are doing.

`consent resolve --engine spark` once ended with SIGABRT after printing its result: an Arrow
worker thread was still releasing a batch of Spark's (Python bytes) when the interpreter
finalized, asked for the GIL, was ended by `pthread_exit`, and the unwinding through a
`noexcept` frame called `std::terminate`. The entry point now ends the process without
finalizing (`consentry.cli.main._end_process`); these tests run it in real processes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from consentry import __version__

# An Arrow read-ahead thread that is inside Python (a slow file's `readinto`) when the
# command ends: at finalization it needs the GIL back, as the thread releasing Spark's
# batch did. Plain `sys.exit` here aborts (status 134) or hangs.
BUSY_ARROW_THREAD = """
import io, sys, time
import pyarrow.csv as csv

class Slow(io.RawIOBase):
    def readable(self):
        return True

    def readinto(self, buffer):
        time.sleep(0.3)
        buffer[:2] = b"1\\n"
        return 2

reader = csv.open_csv(
    io.BufferedReader(Slow(), 2),
    read_options=csv.ReadOptions(block_size=2, use_threads=True),
)
"""


def _run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_native_thread_busy_at_exit_does_not_change_the_status(tmp_path: Path) -> None:
    script = BUSY_ARROW_THREAD + (
        "sys.argv = ['consentry', '--version']\nfrom consentry.cli.main import main\nmain()\n"
    )
    for _ in range(3):
        done = _run(script, cwd=tmp_path)
        assert (done.returncode, done.stdout) == (0, f"consentry {__version__}\n"), done.stderr
        assert "Fatal Python error" not in done.stderr
        assert "terminate called" not in done.stderr


def test_the_busy_thread_does_abort_a_plain_exit(tmp_path: Path) -> None:
    """The scenario above is a real hazard: without `_end_process`, the interpreter's own
    exit does not survive it (it aborts, or hangs until the timeout)."""
    script = BUSY_ARROW_THREAD + "print('done', flush=True)\n"
    failures = 0
    for _ in range(3):
        try:
            done = subprocess.run(
                [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, timeout=20
            )
        except subprocess.TimeoutExpired:
            failures += 1
            continue
        failures += done.returncode != 0
    assert failures >= 1


def test_statuses_output_and_atexit_handlers_are_a_normal_exit(tmp_path: Path) -> None:
    marker = tmp_path / "atexit-ran"
    script = (
        "import atexit, pathlib, sys\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
        "sys.argv = ['consentry', *sys.argv[1:]]\n"
        "from consentry.cli.main import main\n"
        "main()\n"
    )
    home = tmp_path / "home"
    created = _run(script, "--home", str(home), "init", "--json", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert created.stdout.lstrip().startswith("{")  # flushed before the process ended
    assert marker.read_text() == "yes"
    marker.unlink()

    unknown = _run(script, "--home", str(home), "no-such-command", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "No such command" in unknown.stderr
    assert marker.read_text() == "yes"

    missing = _run(script, "--home", str(tmp_path / "absent"), "audit", "verify", cwd=tmp_path)
    assert missing.returncode == 2, missing.stderr
    assert "Traceback" not in missing.stderr
