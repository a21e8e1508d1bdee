"""OpenLineage run events from `run_job`: START then COMPLETE or FAIL, one run id across a
recovery, every event valid against the RunEvent schema; the file transport by default, the
HTTP transport posting to a real receiver on loopback; a failing hook or endpoint never fails
or holds up a job."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from consentry.cli.admin import init_home
from consentry.intake import import_table
from consentry.jobs import lineage, recover_jobs, run_job
from consentry.jobs.lineage import LINEAGE_FILE, RunLineage, register_lineage, run_id_for
from consentry.jobs.runner import JobRecord
from consentry.settings import Settings
from tests.factories import users_table
from tests.lineage_events import check_run, dataset, problems, read_events, runs

USERS = [("u1", "US", date(1990, 1, 1)), ("u2", "DE", date(1985, 5, 5)), ("u3", "FR", None)]


@pytest.fixture
def ready(settings: Settings) -> Settings:
    init_home(settings)
    return settings


def test_an_import_is_one_run_start_then_complete_with_its_schema_and_rows(
    ready: Settings,
) -> None:
    import_table(ready, "users", data=users_table(USERS), origin="test")
    (run,) = runs(read_events(ready.home), "import.users")
    done = check_run(run)
    assert done["job"]["namespace"] == "consentry"
    assert done["run"]["facets"]["processing_engine"]["name"] == "consentry"
    users = dataset(done["outputs"], "/lake/users")
    assert users["namespace"] == "file"
    assert users["outputFacets"]["outputStatistics"]["rowCount"] == 3
    assert users["outputFacets"]["outputStatistics"]["fileCount"] >= 1
    fields = [f["name"] for f in users["facets"]["schema"]["fields"]]
    assert fields[:3] == ["user_id", "created_at", "region"]
    runs_table = dataset(done["outputs"], "import_runs")
    assert runs_table["namespace"] == f"sqlite://{ready.home / 'consentry.db'}"
    assert runs_table["outputFacets"]["outputStatistics"]["rowCount"] == 1
    assert {e["producer"] for e in run} == {lineage.PRODUCER}
    assert runs_table["outputFacets"]["outputStatistics"]["_producer"] == lineage.PRODUCER
    start = run[0]
    assert all("outputFacets" not in d or not d["outputFacets"] for d in start["outputs"])


def test_a_failing_job_ends_its_run_with_fail_and_the_error(ready: Settings) -> None:
    with (
        pytest.raises(RuntimeError, match="boom"),
        run_job(ready, "import", "users", intent={"table": "users", "token": "ab" * 4}),
    ):
        raise RuntimeError("boom")
    (run,) = runs(read_events(ready.home), "import.users")
    failed = check_run(run, "FAIL")
    error = failed["run"]["facets"]["errorMessage"]
    assert error["message"] == "failed: RuntimeError: boom"
    assert error["programmingLanguage"] == "python"


def test_recovery_ends_the_run_the_dead_job_started(ready: Settings) -> None:
    def commit_then_fail() -> str:
        with run_job(ready, "import", "users", intent={"table": "users", "token": "cd" * 4}) as job:
            with job.transaction("import.committed", commit=True):
                pass
            raise RuntimeError(f"{job.id} failed after the commit")

    with pytest.raises(RuntimeError, match="after the commit") as failure:
        commit_then_fail()
    job_id = str(failure.value).split()[0]
    (started,) = runs(read_events(ready.home), "import.users")
    assert [e["eventType"] for e in started] == ["START"]
    (recovered,) = recover_jobs(ready)
    (run,) = runs(read_events(ready.home), "import.users")
    check_run(run)
    assert run[0]["run"]["runId"] == run_id_for(recovered.id) == run_id_for(job_id)


def test_a_failing_hook_leaves_the_datasets_out_not_the_event(
    ready: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(settings: Settings, job: JobRecord, *, detail: bool) -> RunLineage:
        raise OSError("unreadable")

    original = lineage._HOOKS["import"]
    register_lineage("import", broken)
    try:
        with (
            caplog.at_level(logging.WARNING, "consentry.lineage"),
            run_job(ready, "import", "users", intent={"table": "users", "token": "ef" * 4}),
        ):
            pass
    finally:
        register_lineage("import", original)
    (run,) = runs(read_events(ready.home), "import")
    check_run(run)
    assert [e["outputs"] for e in run] == [[], []]
    assert "the datasets of import job" in caplog.text
    assert "OSError: unreadable" in caplog.text


# --- the HTTP transport -------------------------------------------------------------------


class _Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, str, dict[str, Any]]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, str, dict[str, Any]]]]]:
    received: list[tuple[str, str, dict[str, Any]]] = []
    handler = type("Receiver", (_Receiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_the_http_transport_posts_each_event_to_the_receiver(
    ready: Settings, receiver: tuple[str, list[tuple[str, str, dict[str, Any]]]]
) -> None:
    url, received = receiver
    http = Settings(home=ready.home, openlineage_url=url)
    import_table(http, "users", data=users_table(USERS), origin="test")
    assert lineage.flush(http, 10)
    assert [(path, kind) for path, kind, _ in received] == [
        ("/api/v1/lineage", "application/json"),
        ("/api/v1/lineage", "application/json"),
    ]
    done = check_run([event for _, _, event in received])
    assert dataset(done["outputs"], "/lake/users")["outputFacets"]["outputStatistics"][
        "rowCount"
    ] == len(USERS)
    assert not (ready.home / LINEAGE_FILE).exists()


def test_a_dead_or_silent_endpoint_neither_fails_nor_holds_up_a_job(
    ready: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    try:
        for port in (dead_port, silent.getsockname()[1]):
            target = Settings(home=ready.home, openlineage_url=f"http://127.0.0.1:{port}")
            began = time.monotonic()
            with (
                caplog.at_level(logging.WARNING, "consentry.lineage"),
                run_job(target, "import", "users", intent={"table": "users", "token": "ab" * 4}),
            ):
                pass
            assert time.monotonic() - began < 2.0  # the endpoint's 5 s timeout is not waited
    finally:
        silent.close()
    assert lineage.flush(Settings(home=ready.home, openlineage_url=f"http://127.0.0.1:{dead_port}"))
    assert "OpenLineage START event of run" in caplog.text
    assert "not sent" in caplog.text


def test_events_are_valid_only_when_they_should_be(ready: Settings) -> None:
    """The schema the tests use rejects what the spec rejects."""
    import_table(ready, "users", data=users_table(USERS), origin="test")
    event = read_events(ready.home)[-1]
    assert problems(event) == []
    broken = json.loads(json.dumps(event))
    broken["run"]["runId"] = "job-1"
    broken["eventTime"] = "yesterday"
    broken["eventType"] = "DONE"
    del broken["job"]["facets"]["jobType"]["processingType"]
    broken["outputs"][0]["outputFacets"]["outputStatistics"]["rowCount"] = "3"
    assert len(problems(broken)) == 5
