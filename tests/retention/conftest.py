"""Homes for retention tests, a policy file writer, and a digest of every store."""

from __future__ import annotations

import atexit
import hashlib
import shutil
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from consentry.cli.admin import init_home
from consentry.settings import Settings
from tests.delivery.conftest import LakeHome, make_lake_home

__all__ = ["POLICY_HEAD", "initialised_home", "store_digest", "write_policy"]

POLICY_HEAD = """\
versions:
  - version: v1
    effective_from: 2000-01-01T00:00:00Z
    purposes:
      - key: ai_training_third_party
        title: Third-party AI training
        description: Others train AI models on your posts.
        default: allow
        minors: deny
        unknown_age: allow
        gpc: true
"""


def write_policy(path: Path, retention: str) -> Path:
    """A one-version policy file whose `retention` block is `retention` (YAML)."""
    body = POLICY_HEAD
    if retention.strip():
        body += "    retention:\n" + textwrap.indent(textwrap.dedent(retention), "      ")
    path.write_text(body, encoding="utf-8")
    return path


def store_digest(settings: Settings) -> dict[str, str]:
    """SHA-256 of every file of every store: the lake (all snapshots, CURRENT pointers), the
    SQLite database and its write-ahead log, and the delivery directories. The `-shm` file
    is SQLite's shared-memory index (readers record read marks in it), not stored data."""
    found: dict[str, str] = {}
    roots = [settings.lake_dir, settings.home / "deliveries"]
    for root in roots:
        if root.exists():
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    found[str(path.relative_to(settings.home))] = hashlib.sha256(
                        path.read_bytes()
                    ).hexdigest()
                else:
                    found[str(path.relative_to(settings.home)) + "/"] = "dir"
    for name in ("consentry.db", "consentry.db-wal"):
        path = settings.home / name
        if path.exists():
            found[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


_TEMPLATE: dict[str, Path] = {}


def initialised_home(target: Path, policy: Path | None = None) -> Settings:
    """A freshly initialised, empty home at `target` (copied from one made per session, so
    property tests can afford a home per example)."""
    template = _TEMPLATE.get("empty")
    if template is None:
        import tempfile

        template = Path(tempfile.mkdtemp(prefix="retention-template-")) / "home"
        atexit.register(shutil.rmtree, template.parent, True)
        init_home(Settings(home=template))
        _TEMPLATE["empty"] = template
    shutil.copytree(template, target)
    if policy is None:
        return Settings(home=target)
    return Settings(home=target, policy_file=policy)


@pytest.fixture
def world(settings: Settings) -> LakeHome:
    """The delivery tests' world (users, posts, consent events, licensees `open` and `eu`)
    with one delivery to `open`."""
    home = make_lake_home(settings)
    home.deliver("open")
    return home


@pytest.fixture(scope="module")
def shared_world(tmp_path_factory: pytest.TempPathFactory) -> LakeHome:
    """The same world, shared by read-only tests of one module."""
    home = make_lake_home(Settings(home=tmp_path_factory.mktemp("retention") / "home"))
    home.deliver("open")
    return home


AT = datetime(2026, 1, 1, tzinfo=UTC)
"""An instant after everything in the world, under the 2024-11-15 version."""
