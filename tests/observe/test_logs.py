"""Structured logs and the request id: one JSON (or text) line per request and per job step,
the id returned in `X-Request-Id` and carried into job logs and audit events (which still
verify, old and new)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from consentry.keys import Keyring
from consentry.observe.logs import TextFormatter, configure_logging, log_event
from consentry.serving.auth import issue_token
from consentry.settings import Settings
from consentry.store import open_store
from consentry.store.models import AuditEventRow
from tests.api.conftest import make_api
from tests.services import serving

PURPOSE = "ai_training_third_party"


def _lines(path: Path) -> list[dict[str, Any]]:
    found = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            found.append(json.loads(line))
    return found


def _payloads(settings: Settings, event_type: str) -> list[dict[str, Any]]:
    with open_store(settings.resolved_database_url) as store, store.session() as session:
        rows = session.scalars(
            sa.select(AuditEventRow.payload)
            .where(AuditEventRow.event_type == event_type)
            .order_by(AuditEventRow.seq)
        ).all()
    return [json.loads(p) for p in rows]


def _cli(home: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consentry.cli", *args],
        env={**os.environ, "CONSENTRY_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_request_is_one_json_line_and_its_id_reaches_the_audit_log(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    api = make_api(Settings(home=home))
    settings = api.home.settings
    token = issue_token(Keyring.for_home(home).platform_secret, "u-us", "user")
    log = tmp_path / "server.log"
    with serving(home, log_level="info", log_format="json", log=log) as url:
        answer = httpx.put(
            f"{url}/v1/users/u-us/consent/{PURPOSE}",
            json={"choice": "allow"},
            headers={"Authorization": f"Bearer {token}", "X-Request-Id": "req-put-1"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-request-id"] == "req-put-1"
        # An id that is not a sane token is replaced, never echoed.
        odd = httpx.get(f"{url}/healthz", headers={"X-Request-Id": "a b\tc"})
        assert odd.headers["x-request-id"] not in ("a b\tc", "")
        missing = httpx.get(f"{url}/v1/users/u-us/consent")
        assert missing.status_code == 401
    lines = _lines(log)
    requests = [line for line in lines if line["event"] == "http.request"]
    put = [line for line in requests if line.get("request_id") == "req-put-1"]
    assert len(put) == 1, requests
    assert put[0] | {"ts": "", "ms": 0} == {
        "ts": "",
        "level": "info",
        "logger": "consentry.http",
        "event": "http.request",
        "request_id": "req-put-1",
        "method": "PUT",
        "route": "/v1/users/{user_id}/consent/{purpose}",
        "status": 200,
        "ms": 0,
    }
    assert {line["request_id"] for line in requests} >= {
        odd.headers["x-request-id"],
        missing.headers["x-request-id"],
    }
    # Lines name routes, never paths: the user id is in none of them.
    assert "u-us" not in log.read_text()
    [changed] = [p for p in _payloads(settings, "consent.changed") if p.get("request_id")]
    assert changed["request_id"] == "req-put-1"
    # Events with and without the envelope field verify alike.
    assert _payloads(settings, "delivery.built")[0].keys() >= {"delivery_id"}
    verified = _cli(home, "audit", "verify", "--json", env={})
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert json.loads(verified.stdout)["ok"] is True


def test_every_job_step_is_a_line_with_the_commands_request_id(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    api = make_api(Settings(home=home))
    env = {"CONSENTRY_REQUEST_ID": "req-job-7", "CONSENTRY_LOG_LEVEL": "info"}
    done = _cli(home, "--log-format", "json", "revocations", "alpha", "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    steps = [line["step"] for line in lines if line["event"] == "job.step"]
    assert steps == ["revoke.started", "revoke.evaluated", "revoke.committed"]
    [finished] = [line for line in lines if line["event"] == "job.finished"]
    assert finished["state"] == "done"
    assert finished["seconds"] >= 0
    assert {line["request_id"] for line in lines} == {"req-job-7"}
    issued = _payloads(api.home.settings, "revocation.issued")
    assert issued[-1]["request_id"] == "req-job-7"


def test_text_lines_read_as_key_values(capsys: Any) -> None:
    import logging

    configure_logging("text", "info")
    try:
        log_event(logging.getLogger("consentry.test"), "demo.event", count=3, note="two words")
    finally:
        configure_logging("text", "warning")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    ts, level, event, *rest = line.split(" ", 3)
    assert (level, event) == ("info", "demo.event")
    assert ts.endswith("Z")
    assert rest == ['count=3 note="two words"']


def test_uvicorns_coloured_copy_of_its_message_is_not_a_field(capsys: Any) -> None:
    import logging

    configure_logging("text", "info")
    try:
        logging.getLogger("uvicorn.error").info(
            "Uvicorn running on %s",
            "http://127.0.0.1:8000",
            extra={"color_message": "Uvicorn running on \x1b[1m%s\x1b[0m"},
        )
    finally:
        configure_logging("text", "warning")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.endswith('message="Uvicorn running on http://127.0.0.1:8000"'), line
    assert "color_message" not in line
    assert "\x1b" not in line


@given(value=st.one_of(st.floats(), st.integers(), st.booleans(), st.none()))
def test_a_text_value_is_written_as_json_writes_it(value: object) -> None:
    import logging

    record = logging.LogRecord("consentry.test", logging.INFO, __file__, 1, "demo.event", (), None)
    record.__dict__.update(event="demo.event", fields={"v": value})
    line = TextFormatter().format(record)
    assert line.split(" ", 3)[3] == f"v={json.dumps(value)}"
