"""The revocation run: every trigger, reasons from the delivery's own checks, `since`, the log
that reports a record once unless it is delivered again, and lineage of crashed builds."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from consentry.audit import SqlAuditSink
from consentry.delivery.build import LINEAGE_TABLE
from consentry.engine.hmac import hmac_hex
from consentry.errors import BadInput
from consentry.revocation import revoke_purged, run_revocations
from consentry.store import open_store
from consentry.store.models import RevocationRow
from tests.delivery.conftest import AS_OF
from tests.lineage_events import check_run, dataset, read_events, runs
from tests.revocation.conftest import ALWAYS_REVOKED, OPEN_DELIVERED, RevocationHome


def by_post(home: RevocationHome, report: Any) -> dict[str, dict[str, Any]]:
    """The report's rows keyed by the post they stand for (via the licensee's secret)."""
    secret = home.secret("open")
    ids = {hmac_hex(secret, p): p for p in OPEN_DELIVERED}
    return {ids[r["record_id"]]: r for r in report.revocations}


def log_rows(home: RevocationHome) -> list[RevocationRow]:
    with open_store(home.settings.resolved_database_url) as store, store.session() as session:
        rows = list(session.scalars(sa.select(RevocationRow).order_by(RevocationRow.seq)))
        session.expunge_all()
        return rows


def test_a_fresh_delivery_revokes_only_what_changed_since_its_cut_off(
    revocation_home: tuple[RevocationHome, dict[str, Any]],
) -> None:
    home, manifest = revocation_home
    report = run_revocations(home.settings, "open")
    rows = by_post(home, report)
    assert {p: r["reason"] for p, r in rows.items()} == ALWAYS_REVOKED
    assert rows["p06"]["since"] == "2025-05-01T12:00:00Z"
    assert rows["p10"]["since"] == "2025-06-01T12:00:00Z"
    assert all(r["delivery_ids"] == [manifest["delivery_id"]] for r in rows.values())
    assert all(r["new"] and r["status"] == "pending" for r in rows.values())
    assert report.lineage_rows == len(OPEN_DELIVERED)
    assert report.new == 2
    (run,) = runs(read_events(home.settings.home), "revoke.open")
    done = check_run(run)
    logged = dataset(done["outputs"], "revocations")
    assert logged["outputFacets"]["outputStatistics"]["rowCount"] == report.new
    assert "delivery_lineage" in {d["name"].rsplit("/", 1)[-1] for d in done["inputs"]}


def test_explicit_opt_out_revokes_the_authors_posts_since_the_first_deny(
    revocation_home: tuple[RevocationHome, dict[str, Any]],
) -> None:
    home, _ = revocation_home
    first = home.opt_out("u-us", at=datetime.now(UTC) - timedelta(minutes=3))
    home.opt_out("u-us")  # a second deny does not move `since`
    rows = by_post(home, run_revocations(home.settings, "open"))
    assert {p for p, r in rows.items() if r["reason"] == "consent_denied"} == {"p01", "p20"}
    assert rows["p01"]["since"] == first.isoformat().replace("+00:00", "Z")


def test_gpc_revokes_like_an_opt_out(
    revocation_home: tuple[RevocationHome, dict[str, Any]],
) -> None:
    home, _ = revocation_home
    at = home.opt_out("u-jp", gpc=True)
    rows = by_post(home, run_revocations(home.settings, "open"))
    assert rows["p12"]["reason"] == "consent_denied"
    assert rows["p12"]["since"] == at.isoformat().replace("+00:00", "Z")


def test_post_deletion_account_deletion_deactivation_and_protection(
    revocation_home: tuple[RevocationHome, dict[str, Any]],
) -> None:
    home, _ = revocation_home
    gone = datetime(2025, 7, 1, tzinfo=UTC)
    home.change_posts(p02={"deleted_at": gone})
    home.change_users(
        **{
            "u-us": {"deleted_at": datetime(2025, 7, 2, tzinfo=UTC)},
            "u-jp": {"deactivated_at": datetime(2025, 7, 3, tzinfo=UTC)},
        }
    )
    before = datetime.now(UTC)
    home.change_users(**{"u-de-in": {"protected": True}})
    report = run_revocations(home.settings, "open")
    rows = by_post(home, report)
    reasons = {p: r["reason"] for p, r in rows.items()}
    # p02 is deleted and its author protected: the first failing check is the post's.
    assert reasons == {
        **ALWAYS_REVOKED,
        "p01": "author_deleted",
        "p20": "author_deleted",
        "p12": "author_deactivated",
        "p02": "post_deleted",
        "p13": "author_protected",
        "p19": "author_protected",
    }
    assert rows["p01"]["since"] == "2025-07-02T00:00:00Z"
    assert rows["p12"]["since"] == "2025-07-03T00:00:00Z"
    assert rows["p02"]["since"] == "2025-07-01T00:00:00Z"
    # Protection has no instant in the data: the run's instant, kept by the log after.
    protected_since = datetime.fromisoformat(rows["p13"]["since"])
    assert before <= protected_since <= datetime.now(UTC)
    again = by_post(home, run_revocations(home.settings, "open"))
    assert again["p13"]["since"] == rows["p13"]["since"]
    assert not any(r["new"] for r in again.values())


def test_a_record_is_logged_once_unless_delivered_again(
    revocation_home: tuple[RevocationHome, dict[str, Any]],
) -> None:
    home, manifest = revocation_home
    home.opt_out("u-us", at=datetime.now(UTC) - timedelta(minutes=4))
    first = run_revocations(home.settings, "open")
    second = run_revocations(home.settings, "open")
    assert first.new == 4
    assert second.new == 0
    assert len(second.revocations) == 4
    assert len(log_rows(home)) == 4
    # Back in, delivered again (a new delivery at an earlier cut-off carries them), out again:
    home.opt_in("u-us", at=datetime.now(UTC) - timedelta(minutes=2))
    later = home.deliver("open", as_of=AS_OF)
    home.opt_out("u-us")
    third = run_revocations(home.settings, "open")
    rows = by_post(home, third)
    assert rows["p01"]["new"]
    assert rows["p01"]["delivery_ids"] == [
        manifest["delivery_id"],
        later["delivery_id"],
    ]
    # p06 and p10 went out again in the later delivery too: logged again for it.
    assert third.new == 4
    assert len(log_rows(home)) == 8


def test_lineage_of_a_crashed_build_is_ignored(
    revocation_home: tuple[RevocationHome, dict[str, Any]],
) -> None:
    home, manifest = revocation_home
    orphan = home.deliver("open", as_of=AS_OF)
    shutil.rmtree(home.deliveries / orphan["delivery_id"])  # as if the rename never happened
    report = run_revocations(home.settings, "open")
    assert all(r["delivery_ids"] == [manifest["delivery_id"]] for r in report.revocations)
    assert report.lineage_rows == len(OPEN_DELIVERED)
    assert report.deliveries == 1


def test_at_only_sees_deliveries_made_by_then_and_rejects_the_future(
    revocation_home: tuple[RevocationHome, dict[str, Any]],
) -> None:
    home, _ = revocation_home
    report = run_revocations(home.settings, "open", at=datetime.now(UTC) - timedelta(days=1))
    assert report.revocations == []
    assert report.lineage_rows == 0
    with pytest.raises(BadInput, match="future"):
        run_revocations(home.settings, "open", at=datetime.now(UTC) + timedelta(days=1))
    with pytest.raises(BadInput, match="no licensee named"):
        run_revocations(home.settings, "nobody")


def test_a_retention_purge_is_logged_once_and_never_reported_as_anything_else(
    revocation_home: tuple[RevocationHome, dict[str, Any]],
) -> None:
    home, _ = revocation_home
    purged_at = datetime.now(UTC) - timedelta(minutes=1)
    posts = pa.array(["p13", "p19", "p-never-delivered"])
    assert revoke_purged(home.settings, post_ids=posts, purged_at=purged_at, purge_id="pg-1") == 2
    assert revoke_purged(home.settings, post_ids=posts, purged_at=purged_at, purge_id="pg-1") == 0
    home.remove_posts(["p13", "p19"])
    report = run_revocations(home.settings, "open")
    rows = by_post(home, report)
    assert rows["p13"]["reason"] == rows["p19"]["reason"] == "retention_purged"
    assert rows["p13"]["since"] == purged_at.isoformat().replace("+00:00", "Z")
    assert not rows["p13"]["new"]
    assert report.new == 2  # p06 and p10 only
    assert len(log_rows(home)) == 4


def test_a_post_removed_before_its_purge_is_recorded_is_relabelled(
    revocation_home: tuple[RevocationHome, dict[str, Any]],
) -> None:
    home, _ = revocation_home
    home.remove_posts(["p13"])
    rows = by_post(home, run_revocations(home.settings, "open"))
    assert rows["p13"]["reason"] == "post_removed"
    purged_at = datetime.now(UTC)
    assert (
        revoke_purged(home.settings, post_ids=pa.array(["p13"]), purged_at=purged_at, purge_id="x")
        == 0
    )
    rows = by_post(home, run_revocations(home.settings, "open"))
    assert rows["p13"]["reason"] == "retention_purged"


def test_each_run_appends_one_audit_event_without_personal_data(
    revocation_home: tuple[RevocationHome, dict[str, Any]],
) -> None:
    home, _ = revocation_home
    report = run_revocations(home.settings, "open")
    with open_store(home.settings.resolved_database_url) as store, store.session() as session:
        events = SqlAuditSink.read(session, event_type="revocation.issued")
    assert len(events) == 1
    payload = events[0].payload
    assert payload["run_id"] == report.run_id
    assert payload["new"] == 2
    assert payload["revoked"] == 2
    assert payload["lineage_rows"] == len(OPEN_DELIVERED)
    text = json.dumps(payload)
    assert not any(p in text for p in OPEN_DELIVERED)
    assert "u-" not in text
    assert not any(r["record_id"] in text for r in report.revocations)


def test_lineage_table_absent_means_nothing_to_revoke(settings: Any) -> None:
    from tests.delivery.conftest import make_lake_home

    home = make_lake_home(settings)
    assert not home.lake.exists(LINEAGE_TABLE)
    assert run_revocations(home.settings, "open").revocations == []
    assert (
        revoke_purged(home.settings, post_ids=pa.array(["p01"]), purged_at=AS_OF, purge_id="p") == 0
    )


def _listing(report: Any) -> list[tuple[Any, ...]]:
    return sorted(
        (r["record_id"], tuple(r["delivery_ids"]), r["reason"], r["since"])
        for r in report.revocations
    )


def test_lineage_parts_read_by_footer_or_by_rows_give_the_same_revocations(
    revocation_home: tuple[RevocationHome, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Per-delivery parts are picked by their footers and read without `delivery_id`; a part
    # whose footer proves no single delivery (here: every delivery, both licensees', in one
    # part) is read row by row with a join. Masks and rank lists give the same deliveries.
    home, _ = revocation_home
    home.deliver("eu", as_of=AS_OF)
    home.deliver("open", as_of=AS_OF)
    home.opt_out("u-us", at=datetime.now(UTC) - timedelta(minutes=1))
    from consentry.revocation import job

    parts = home.lake.files(LINEAGE_TABLE)
    assert len(parts) == 3
    assert all(job._single_delivery(home.lake, p)[0] for p in parts)
    by_part = run_revocations(home.settings, "open")
    assert by_part.new > 0
    assert by_part.deliveries == 2
    assert all(len(r["delivery_ids"]) == 2 for r in by_part.revocations)
    monkeypatch.setattr(job, "_MASK_LIMIT", 0)
    as_lists = run_revocations(home.settings, "open")
    monkeypatch.undo()
    home.lake.write_arrow(LINEAGE_TABLE, home.lake.read_arrow(LINEAGE_TABLE))
    (mixed,) = home.lake.files(LINEAGE_TABLE)
    assert job._single_delivery(home.lake, mixed)[0] is None
    by_rows = run_revocations(home.settings, "open")
    for other in (as_lists, by_rows):
        assert _listing(other) == _listing(by_part)
        assert other.lineage_rows == by_part.lineage_rows == 2 * len(OPEN_DELIVERED)
        assert other.new == 0
    # A lineage that lists each post twice per delivery (never written by a build) still
    # gives one revocation per record.
    doubled = home.lake.read_arrow(LINEAGE_TABLE)
    home.lake.write_arrow(LINEAGE_TABLE, pa.concat_tables([doubled, doubled]))
    twice = run_revocations(home.settings, "open")
    assert _listing(twice) == _listing(by_part)
    assert twice.lineage_rows == 2 * by_part.lineage_rows


def test_one_per_post_keeps_the_first_row_of_each_post() -> None:
    from consentry.revocation.job import _one_per_post

    table = pa.table({"post_id": ["b", "a", "b", "c", "a"], "n": [0, 1, 2, 3, 4]})
    assert _one_per_post(table).to_pydict() == {"post_id": ["b", "a", "c"], "n": [0, 1, 3]}
    distinct = table.slice(1, 3)
    assert _one_per_post(distinct) is distinct
