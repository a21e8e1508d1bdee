"""Purges that stay purged: a delete that time travel can undo is not a delete.

Until the purge's vacuum, the versions before the rewrite still return the purged rows;
after it, no version does, no data file under the table holds them (read with delta-rs and
with plain Parquet, not through the lake's own listing), and the audit log names the
versions that went. On a local lake and on S3 (SeaweedFS).
"""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from consentry.audit import SqlAuditSink
from consentry.engine import Lake
from consentry.keys import Keyring
from consentry.retention import add_hold, apply_plan, compute_plan, finish_awaiting_purges
from consentry.settings import Settings
from consentry.store import open_store
from tests.delivery.conftest import LakeHome, make_lake_home
from tests.retention.conftest import AT

PURGED = {"p05", "p06", "p08", "p18"}
"""The posts the world's plan deletes at AT (tests/retention/test_apply.py)."""


def _revoke_all(settings: Any, *, post_ids: Any, purged_at: Any, purge_id: str) -> int:
    return len(post_ids)


@pytest.fixture(params=["local", "s3"])
def world(request: pytest.FixtureRequest, settings: Settings) -> LakeHome:
    """The retention world (tests/retention/conftest.py) with its lake on a local folder or
    on S3."""
    if request.param == "s3":
        uri = request.getfixturevalue("s3_lake_uri")
        settings = Settings(home=settings.home, lake_uri=uri)
    home = make_lake_home(settings)
    home.deliver("open")
    return home


def _post_ids_in_every_file(lake: Lake, table: str) -> set[str]:
    """post_id of every Parquet file under the table's folder, whatever lists it."""
    base = lake.uri.removeprefix("s3://") if lake.remote else str(lake.root.absolute())
    selector = pafs.FileSelector(f"{base}/{table}", recursive=True)
    found: set[str] = set()
    for info in lake.filesystem.get_file_info(selector):
        if info.path.endswith(".parquet"):
            data = pq.read_table(info.path, columns=["post_id"], filesystem=lake.filesystem)
            found |= set(data.column("post_id").to_pylist())
    return found


def _delta(lake: Lake, table: str, version: int) -> DeltaTable:
    return DeltaTable(f"{lake.uri}/{table}", version=version, storage_options=lake.storage_options)


def test_time_travel_returns_a_purged_row_until_the_vacuum_and_never_after(
    world: LakeHome,
) -> None:
    settings = world.settings
    lake = Lake.of(settings)
    before = lake.version("posts")
    assert before is not None
    assert set(lake.read_arrow("posts")["post_id"].to_pylist()) >= PURGED
    seen: dict[str, Any] = {}

    def watch(step: str) -> None:
        # Called as each step starts: posts is rewritten and published, not yet vacuumed.
        if step == "vacuuming posts":
            old = _delta(lake, "posts", before).to_pyarrow_table()
            seen["old"] = set(old["post_id"].to_pylist())
            seen["latest"] = set(lake.read_arrow("posts")["post_id"].to_pylist())

    purge = apply_plan(
        settings, compute_plan(settings, at=AT), revoker=_revoke_all, on_progress=watch
    )
    assert purge["state"] == "verified"
    assert seen["old"] >= PURGED, "before the vacuum, time travel still returns purged rows"
    assert not PURGED & seen["latest"]
    # After it, the old version cannot be read, by delta-rs or by us.
    with pytest.raises(FileNotFoundError, match="not found"):
        _delta(lake, "posts", before).to_pyarrow_table()
    history = {v.version: v.readable for v in lake.history("posts")}
    latest = lake.version("posts")
    assert latest is not None
    assert history[before] is False
    assert history[latest] is True
    assert not PURGED & _post_ids_in_every_file(lake, "posts")
    vacuumed = purge["results"]["versions_vacuumed"]["posts"]
    assert before in vacuumed
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        (applied,) = SqlAuditSink.read(session, event_type="retention.applied")
    assert applied.payload["versions_vacuumed"]["lake.posts"] == vacuumed


def test_a_held_row_survives_the_vacuum_in_the_latest_version(world: LakeHome) -> None:
    settings = world.settings
    lake = Lake.of(settings)
    posts = lake.read_arrow("posts")
    author = posts.filter(pc.equal(posts["post_id"], "p05"))["author_id"][0].as_py()
    with open_store(settings.resolved_database_url) as store:
        add_hold(
            store,
            Keyring.for_settings(settings),
            matter="case 7",
            reason="litigation",
            scope="user",
            target=author,
        )
    purge = apply_plan(settings, compute_plan(settings, at=AT), revoker=_revoke_all)
    assert purge["state"] == "verified"
    latest = set(lake.read_arrow("posts")["post_id"].to_pylist())
    assert "p05" in latest
    assert "p05" in _post_ids_in_every_file(lake, "posts")
    assert all(v.readable is False for v in lake.history("posts")[1:])


def test_a_grace_period_keeps_old_versions_until_a_later_vacuum_finishes_the_purge(
    world: LakeHome,
) -> None:
    """`CONSENTRY_PURGE_GRACE_HOURS`: readers of the replaced versions keep them for the
    grace period; the purge waits (`applied`, `awaiting_vacuum`), and the vacuum after the
    period (here: the period shortened to 0, as time passing would) verifies it."""
    graced = Settings(
        home=world.settings.home, lake_uri=world.settings.lake_uri, purge_grace_hours=1
    )
    lake = Lake.of(graced)
    before = lake.version("posts")
    assert before is not None
    purge = apply_plan(graced, compute_plan(graced, at=AT), revoker=_revoke_all)
    assert purge["state"] == "applied"
    waiting = purge["evidence"]["awaiting_vacuum"]
    assert waiting["grace_hours"] == 1
    assert "posts" in waiting["tables"]
    assert not any(purge["evidence"]["remaining"].values())
    assert set(_delta(lake, "posts", before).to_pyarrow_table()["post_id"].to_pylist()) >= PURGED
    assert not PURGED & set(lake.read_arrow("posts")["post_id"].to_pylist())
    # Within the grace period a vacuum leaves them; the purge keeps waiting.
    (still,) = finish_awaiting_purges(graced)
    assert still["state"] == "applied"
    assert still["keys_left"]["posts"] == len(PURGED)
    ended = Settings(home=graced.home, lake_uri=graced.lake_uri, purge_grace_hours=0)
    (done,) = finish_awaiting_purges(ended)
    assert done == {
        "purge_id": purge["purge_id"],
        "state": "verified",
        "keys_left": done["keys_left"],
    }
    assert not any(done["keys_left"].values())
    assert not PURGED & _post_ids_in_every_file(lake, "posts")
    with open_store(graced.resolved_database_url) as store, store.session() as session:
        verified = SqlAuditSink.read(session, event_type="retention.verified")
    assert [e.payload["ok"] for e in verified] == [False, True]
    assert finish_awaiting_purges(ended) == []
