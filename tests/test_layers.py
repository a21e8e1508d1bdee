"""The layers of docs/architecture.md hold: no module imports a higher layer.

The contracts live in pyproject.toml (`[tool.importlinter]`); `make lint` runs them too.
The second test shows the check bites: the same contracts over a copy of the package in
which one low module imports a high one are broken.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(src: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_every_layer_only_imports_layers_below_it() -> None:
    result = _lint(ROOT / "src", ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "upward"),
    [
        ("audit/merkle.py", "from consentry.ledger import service as _upward"),
        ("store/migrations/versions/v0006_audit_log.py", "from consentry.audit import merkle"),
        ("serving/problems.py", "from consentry.web import pages as _upward"),
    ],
)
def test_an_upward_import_breaks_the_contracts(tmp_path: Path, module: str, upward: str) -> None:
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "consentry",
        src / "consentry",
        ignore=shutil.ignore_patterns("__pycache__", "static", "templates", "policies"),
    )
    target = src / "consentry" / module
    target.write_text(target.read_text() + f"\n{upward}  # noqa\n")
    result = _lint(src, tmp_path)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout
