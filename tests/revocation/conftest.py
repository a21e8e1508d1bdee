"""Homes for revocation tests: the delivery tests' hand-built world, delivered, then changed.

The `open` licensee's delivery at AS_OF carries p01, p02, p06, p10, p12, p13, p19 and p20;
of those, p06 (deleted 2025-05-01) and p10 (author deactivated 2025-06-01) are no longer
eligible today, whatever a test changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from consentry.ledger.sync import ledger_for
from consentry.policy import Choice
from consentry.settings import Settings
from consentry.sources.importer import import_arrow
from tests.delivery.conftest import (
    AS_OF,
    THIRD,
    WORLD_POSTS,
    LakeHome,
    make_lake_home,
    world_posts,
    world_users,
)

__all__ = [
    "OPEN_DELIVERED",
    "RevocationHome",
    "delivered_home",
]

OPEN_DELIVERED = ("p01", "p02", "p06", "p10", "p12", "p13", "p19", "p20")
"""Posts the `open` licensee's delivery at AS_OF carries."""
ALWAYS_REVOKED = {"p06": "post_deleted", "p10": "author_deactivated"}


class RevocationHome(LakeHome):
    """A world home with helpers that change the platform after a delivery."""

    def opt_out(self, user_id: str, *, gpc: bool = False, at: datetime | None = None) -> datetime:
        ledger = ledger_for(self.settings)
        from consentry.ledger.service import Evidence

        try:
            if gpc:
                recorded = ledger.record_gpc(user_id, evidence=Evidence(origin="test"), at=at)
                return recorded[0].at
            return ledger.record(
                user_id, THIRD, Choice.DENY, source="settings", evidence=Evidence(origin="test"),
                at=at,
            ).at  # fmt: skip
        finally:
            ledger.store.close()

    def opt_in(self, user_id: str, at: datetime | None = None) -> datetime:
        from consentry.ledger.service import Evidence

        ledger = ledger_for(self.settings)
        try:
            return ledger.record(
                user_id, THIRD, Choice.ALLOW, source="settings", evidence=Evidence(origin="test"),
                at=at,
            ).at  # fmt: skip
        finally:
            ledger.store.close()

    def change_posts(self, **changes: dict[str, Any]) -> None:
        """Re-import posts with some fields changed (post_id -> field -> value)."""
        posts = [replace(p, **changes[p.post_id]) for p in WORLD_POSTS if p.post_id in changes]
        import_arrow(self.lake, "posts", world_posts(posts), origin="test:posts")

    def remove_posts(self, post_ids: Sequence[str]) -> None:
        """Take posts out of the lake (as a purge does)."""
        posts = self.lake.read_arrow("posts")
        keep = pc.invert(pc.is_in(posts.column("post_id"), pa.array(list(post_ids))))
        self.lake.write_arrow("posts", posts.filter(keep))

    def change_users(self, **changes: dict[str, Any]) -> None:
        """Re-import users with some fields changed (user_id -> column -> value)."""
        users = world_users()
        rows = [r for r in users.to_pylist() if r["user_id"] in changes]
        for row in rows:
            row.update(changes[row["user_id"]])
        import_arrow(
            self.lake, "users", pa.Table.from_pylist(rows, schema=users.schema), origin="test"
        )
        from consentry.ledger.sync import sync_ledger

        sync_ledger(self.settings, ["users"])


def delivered_home(settings: Settings) -> tuple[RevocationHome, dict[str, Any]]:
    """The world home with the `open` licensee's delivery at AS_OF made."""
    base = make_lake_home(settings)
    home = RevocationHome(base.settings)
    manifest = home.deliver("open", as_of=AS_OF)
    return home, manifest


@pytest.fixture
def revocation_home(settings: Settings) -> tuple[RevocationHome, dict[str, Any]]:
    return delivered_home(settings)


def now() -> datetime:
    return datetime.now(UTC)
