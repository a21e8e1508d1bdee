"""Alert webhooks against a receiver on loopback: every kind is pushed by what raises it,
signed (the receiver checks each signature as a receiver would), retried on 5xx, given up
on other refusals, and a webhooks file that is not right is refused by file and field."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from consentry.api.app import create_app
from consentry.cli.admin import init_home
from consentry.cli.main import app as cli
from consentry.errors import BadInput
from consentry.jobs import run_job
from consentry.observe.alerts import (
    ALERT_KINDS,
    flush_alerts,
    load_webhooks,
    new_secret,
    sign,
    verify_signature,
)
from consentry.observe.context import using_request_id
from consentry.scraping.meter import MemoryMeter, Meter
from consentry.settings import Settings
from consentry.store import open_store
from consentry.store.models import RevocationRow
from tests.api.conftest import make_api
from tests.api.test_meter_limits import MIN, NO_OWNERS, TERMS
from tests.observe.test_metrics import _admin


@dataclass
class Receiver:
    """An HTTP receiver on 127.0.0.1 answering `statuses` in turn (then 200)."""

    secret: str
    statuses: list[int] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    def kinds(self) -> list[str]:
        return [r["body"]["kind"] for r in self.received if r["status"] == 200]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver(secret=new_secret())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            status = found.statuses.pop(0) if found.statuses else 200
            found.received.append(
                {
                    "status": status,
                    "headers": dict(self.headers.items()),
                    "body": json.loads(body),
                    "verified": verify_signature(found.secret, dict(self.headers.items()), body),
                }
            )
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    found.url = f"http://127.0.0.1:{server.server_port}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        server.shutdown()
        server.server_close()


def _configure(home: Path, receiver: Receiver, kinds: list[str] | None = None) -> Settings:
    (home / "keys").mkdir(parents=True, exist_ok=True)
    (home / "keys" / "ops.webhook").write_text(receiver.secret + "\n")
    (home / "webhooks.yaml").write_text(
        json.dumps(
            {
                "webhooks": [
                    {
                        "name": "ops",
                        "url": receiver.url,
                        "kinds": kinds or list(ALERT_KINDS),
                        "secret_file": "keys/ops.webhook",
                    }
                ]
            }
        )
    )
    return Settings(home=home)


def _delivered(receiver: Receiver, kind: str) -> dict[str, Any]:
    assert flush_alerts(30)
    found = [r for r in receiver.received if r["body"]["kind"] == kind and r["status"] == 200]
    assert found, receiver.received
    assert all(r["verified"] for r in receiver.received), receiver.received
    body: dict[str, Any] = found[-1]["body"]
    return body


def test_a_failed_job_is_pushed_signed_and_retried_after_a_5xx(
    tmp_path: Path, receiver: Receiver
) -> None:
    settings = _configure(tmp_path / "home", receiver)
    init_home(settings)
    receiver.statuses = [503, 502]
    with (
        using_request_id("req-job-1"),
        pytest.raises(RuntimeError, match="boom"),
        run_job(settings, "revoke", "alpha"),
    ):
        raise RuntimeError("boom")
    alert = _delivered(receiver, "job.failed")
    assert alert["request_id"] == "req-job-1"
    assert alert["data"]["kind"] == "revoke"
    assert "RuntimeError: boom" in alert["data"]["outcome"]
    # The same alert three times: two refusals, then delivered; one id throughout.
    attempts = [r for r in receiver.received if r["body"]["kind"] == "job.failed"]
    assert [r["status"] for r in attempts] == [503, 502, 200]
    assert len({r["headers"]["webhook-id"] for r in attempts}) == 1
    assert all(r["verified"] for r in attempts)


def test_a_refusal_other_than_5xx_is_not_retried(tmp_path: Path, receiver: Receiver) -> None:
    settings = _configure(tmp_path / "home", receiver)
    init_home(settings)
    receiver.statuses = [400]
    with pytest.raises(RuntimeError), run_job(settings, "revoke", "beta"):
        raise RuntimeError("refused")
    assert flush_alerts(30)
    assert [r["status"] for r in receiver.received] == [400]


def test_meter_levels_are_pushed(tmp_path: Path, receiver: Receiver) -> None:
    settings = _configure(tmp_path / "home", receiver, ["meter.level"])
    init_home(settings)
    app = create_app(settings)
    app.state.scraping_meter = Meter(TERMS, NO_OWNERS, MemoryMeter(TERMS, MIN))
    event = {"request_id": "r1", "ts": "2025-03-05T00:00:00Z", "credential": "ak_big"}
    answer = TestClient(app).post(
        "/v1/meter/events",
        json={"events": [{**event, "posts": 810_000}]},
        headers={**_admin(settings.home), "X-Request-Id": "req-meter-1"},
    )
    assert answer.status_code == 200, answer.text
    assert flush_alerts(30)
    pushed = [r["body"] for r in receiver.received]
    assert sorted(a["data"]["level"] for a in pushed) == sorted(
        a["level"] for a in answer.json()["alerts"]
    )
    assert {a["request_id"] for a in pushed} == {"req-meter-1"}
    assert {a["data"]["threshold_posts"] for a in pushed} == {1_000_000}
    assert all(r["verified"] for r in receiver.received)


def test_an_audit_log_that_fails_verification_is_pushed(tmp_path: Path, receiver: Receiver) -> None:
    settings = _configure(tmp_path / "home", receiver, ["audit.verify_failed"])
    home = str(settings.home)
    assert CliRunner().invoke(cli, ["--home", home, "init"]).exit_code == 0
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        session.execute(sa.text("UPDATE audit_events SET payload = '{}' WHERE seq = 1"))
    result = CliRunner().invoke(cli, ["--home", home, "audit", "verify"])
    assert result.exit_code == 1, result.output
    alert = _delivered(receiver, "audit.verify_failed")
    assert alert["data"]["first_bad_leaf"] == 0


def test_overdue_revocations_are_pushed_once_per_change(tmp_path: Path, receiver: Receiver) -> None:
    home = tmp_path / "home"
    home.mkdir()
    api = make_api(Settings(home=home))
    settings = _configure(api.home.settings.home, receiver, ["revocations.overdue"])
    overdue = CliRunner()

    def run() -> None:
        result = overdue.invoke(cli, ["--home", str(settings.home), "revocations", "overdue"])
        assert result.exit_code == 0, result.output
        assert flush_alerts(30)

    run()
    assert receiver.received == []  # nothing is overdue yet
    with open_store(settings.resolved_database_url) as store:
        seqs = _seqs(store)
        _make_overdue(store, seqs[:1])
        run()
        first = _delivered(receiver, "revocations.overdue")
        assert [(e["licensee"], e["overdue"]) for e in first["data"]["licensees"]] == [
            (_name(store, seqs[0]), 1)
        ]
        run()  # the same overdue revocation: no second alert
        assert len(receiver.received) == 1
        _make_overdue(store, seqs[1:2])
        run()
        assert len(receiver.received) == 2


def _seqs(store: Any) -> list[int]:
    with store.session() as session:
        return list(session.scalars(sa.select(RevocationRow.seq).order_by(RevocationRow.seq)))


def _name(store: Any, seq: int) -> str:
    with store.session() as session:
        return str(
            session.scalar(
                sa.text(
                    "SELECT l.name FROM licensees l JOIN revocations r "
                    "ON r.licensee_id = l.id WHERE r.seq = :s"
                ),
                {"s": seq},
            )
        )


def _make_overdue(store: Any, seqs: list[int]) -> None:
    now = datetime.now(UTC)
    with store.session() as session:
        session.execute(
            sa.update(RevocationRow)
            .where(RevocationRow.seq.in_(seqs))
            .values(revoked_at=now - timedelta(days=40), due_at=now - timedelta(days=1))
        )


def test_the_signature_is_what_the_receiver_recomputes(receiver: Receiver) -> None:
    from consentry.observe.alerts import _key

    body = b'{"kind":"job.failed"}'
    now = int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": "alert_1",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(_key(receiver.secret, "test"), "alert_1", now, body),
    }
    assert verify_signature(receiver.secret, headers, body)
    assert not verify_signature(receiver.secret, headers, body + b" ")
    assert not verify_signature(new_secret(), headers, body)
    stale = {**headers, "webhook-timestamp": str(now - 3600)}
    assert not verify_signature(receiver.secret, stale, body)


def test_a_webhooks_file_that_is_not_right_names_the_file_and_field(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "webhooks.yaml").write_text(
        "webhooks:\n  - name: ops\n    url: ftp://nope\n    kinds: [job.failed, nope]\n"
        "    secret_file: keys/missing\n"
    )
    with pytest.raises(BadInput) as refused:
        load_webhooks(Settings(home=home))
    fields = {p.field for p in refused.value.problems}
    assert {"webhooks.0.url", "webhooks.0.kinds"} <= fields
    assert all(p.location == str(home / "webhooks.yaml") for p in refused.value.problems)
