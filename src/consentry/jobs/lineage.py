"""OpenLineage run events for every job: START when it starts, COMPLETE or FAIL when it ends.

Pinned to the OpenLineage 2-0-2 RunEvent (https://openlineage.io/spec/2-0-2/OpenLineage.json)
and its facets, built and sent with openlineage-python's own models and transports.

1. `consentry.jobs.run_job` calls `emit_run_event` once when a job starts (START) and once
   when it ends (`_finish`): COMPLETE when it ends `done`, FAIL when it is rolled back,
   refused, or recovered by rolling back. A job that raises after its commit ends later,
   when recovery rolls it forward: its COMPLETE comes from that process.
2. The run id is a UUID derived from the job id (`run_id_for`), so the process that starts a
   job and the one that recovers it name the same run.
3. Each job kind describes its run through a hook registered with `register_lineage` (as
   recoverers are): the job name, the input and output datasets, and, when the hook is
   asked for `detail` (the COMPLETE event), each dataset's schema and row count, which
   become the `schema` facet and the `inputStatistics` / `outputStatistics` facets. A kind
   without a hook is named by its kind and carries no datasets.
4. Where events go: `CONSENTRY_OPENLINEAGE_URL` set, an HTTP transport posts them to
   `<url>/api/v1/lineage` (Marquez's endpoint) from a background thread, in order, so a slow
   or dead endpoint never holds a job up (a process waits at most `EXIT_WAIT_SECONDS` at
   exit for events still queued); unset, a file transport appends one JSON line per event
   to `<home>/lineage/openlineage.jsonl`.
5. Emitting never breaks a job: a failing hook still yields the event (without datasets), a
   failing transport drops it; both are logged as warnings on `consentry.lineage` (printed
   on stderr when nothing else handles that logger).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import unquote, urlsplit

from consentry.settings import Settings

if TYPE_CHECKING:
    from openlineage.client.event_v2 import InputDataset, OutputDataset, RunEvent
    from openlineage.client.transport import Transport

    from consentry.jobs.runner import JobRecord

__all__ = [
    "EXIT_WAIT_SECONDS",
    "JOB_NAMESPACE",
    "LINEAGE_FILE",
    "PRODUCER",
    "LineageDataset",
    "LineageHook",
    "RunLineage",
    "emit_run_event",
    "flush",
    "lake_dataset",
    "parquet_dataset",
    "register_lineage",
    "run_event",
    "run_id_for",
    "store_dataset",
]

JOB_NAMESPACE: Final = "consentry"
"""The OpenLineage namespace of every Consentry job."""

LINEAGE_FILE: Final = Path("lineage") / "openlineage.jsonl"
"""Where the file transport appends events, relative to the home."""

PRODUCER: Final = f"urn:consentry:{version('consentry')}"
"""The `producer` URI of every event and facet."""

EXIT_WAIT_SECONDS: Final = 5.0
"""How long a process waits at exit for HTTP events still queued."""

_HTTP_TIMEOUT_SECONDS: Final = 5.0
_QUEUE_SIZE: Final = 1000
_RUN_NAMESPACE: Final = uuid.UUID("6f1d8c5e-4a0b-5c7e-9a51-0c6e6f6e7472")
_log = logging.getLogger("consentry.lineage")


@dataclass(frozen=True, slots=True)
class LineageDataset:
    """A dataset a job reads or writes, named by OpenLineage's naming conventions.

    `fields` (column, type) become the `schema` facet; `rows`, `size` (bytes) and `files`
    the statistics facet. None: not known, or not asked for (no `detail`)."""

    namespace: str
    name: str
    fields: tuple[tuple[str, str], ...] | None = None
    rows: int | None = None
    size: int | None = None
    files: int | None = None


@dataclass(frozen=True, slots=True)
class RunLineage:
    """What one job run reads and writes."""

    job: str
    inputs: tuple[LineageDataset, ...] = ()
    outputs: tuple[LineageDataset, ...] = ()


class LineageHook(Protocol):
    """How one job kind describes a run: `detail` asks for schemas and row counts (the
    COMPLETE event); without it, names are enough. May read the home and the store."""

    def __call__(self, settings: Settings, job: JobRecord, *, detail: bool) -> RunLineage: ...


_HOOKS: dict[str, LineageHook] = {}


def register_lineage(kind: str, hook: LineageHook) -> None:
    """Make `hook` describe the runs of `kind` (each capability registers its own)."""
    _HOOKS[kind] = hook


def run_id_for(job_id: str) -> str:
    """The OpenLineage run id of job `job_id` (a name-based UUID: stable across processes)."""
    return str(uuid.uuid5(_RUN_NAMESPACE, job_id))


# --- datasets -------------------------------------------------------------------------------


def parquet_dataset(path: Path, files: Sequence[Path], *, detail: bool) -> LineageDataset:
    """A directory of Parquet files (namespace `file`, name its absolute path); with
    `detail`, its schema (the first file's) and its rows, bytes and files (footers only)."""
    name = str(path.resolve())
    if not detail or not files:
        return LineageDataset("file", name)
    import pyarrow.parquet as pq

    schema = pq.read_schema(files[0])
    return LineageDataset(
        "file",
        name,
        fields=tuple((f.name, str(f.type)) for f in schema),
        rows=sum(pq.ParquetFile(f).metadata.num_rows for f in files),
        size=sum(f.stat().st_size for f in files),
        files=len(files),
    )


def lake_dataset(settings: Settings, table: str, *, detail: bool) -> LineageDataset:
    """A lake table: its latest version's data files (namespace `file`, name its absolute
    path; on object storage namespace `s3://bucket`, name the table's key prefix); with
    `detail`, the first file's schema and
    the rows (from the Delta log), bytes and files."""
    from consentry.engine.lake import Lake

    lake = Lake.of(settings)
    location = lake.location_of(table)  # an external source's own location, if registered
    if location.startswith("postgresql"):  # a Mastodon database: the server and the table
        url = urlsplit(location)
        namespace = f"postgres://{url.hostname or 'localhost'}:{url.port or 5432}"
        name = f"{unquote(url.path.lstrip('/')) or 'mastodon'}.mastodon.{table}"
    elif location.startswith("s3://"):  # OpenLineage's naming: namespace s3://bucket, name the key
        bucket, _, prefix = location.removeprefix("s3://").partition("/")
        namespace, name = f"s3://{bucket}", prefix
    else:
        namespace, name = "file", str(Path(location).resolve())
    parts = lake.parts(table) if detail and lake.exists(table) else []
    if not parts:
        return LineageDataset(namespace, name)
    schema = lake.parquet_file(parts[0].path).schema_arrow
    return LineageDataset(
        namespace,
        name,
        fields=tuple((f.name, str(f.type)) for f in schema),
        rows=sum(p.rows for p in parts),
        size=sum(p.size for p in parts),
        files=len(parts),
    )


def store_dataset(
    settings: Settings, table: str, *, detail: bool, rows: int | None = None
) -> LineageDataset:
    """A control-plane table: `postgres://host:port` and `database.schema.table` for
    PostgreSQL (OpenLineage's naming), `sqlite://<path>` and the table for SQLite; with
    `detail`, its columns (from the models) and `rows` as given."""
    from consentry.store.models import Base

    url = urlsplit(settings.resolved_database_url)
    if url.scheme.startswith("postgresql"):
        namespace = f"postgres://{url.hostname or 'localhost'}:{url.port or 5432}"
        name = f"{unquote(url.path.lstrip('/')) or 'postgres'}.public.{table}"
    else:
        namespace, name = f"sqlite://{unquote(url.path.removeprefix('/'))}", table
    if not detail:
        return LineageDataset(namespace, name)
    columns = Base.metadata.tables[table].columns
    return LineageDataset(
        namespace, name, fields=tuple((c.name, str(c.type)) for c in columns), rows=rows
    )


# --- events ---------------------------------------------------------------------------------


def _facets(dataset: LineageDataset) -> dict[str, Any]:
    from openlineage.client.facet_v2 import schema_dataset

    if dataset.fields is None:
        return {}
    fields = [schema_dataset.SchemaDatasetFacetFields(name=n, type=t) for n, t in dataset.fields]
    return {"schema": schema_dataset.SchemaDatasetFacet(fields=fields, producer=PRODUCER)}


def _statistics(dataset: LineageDataset) -> dict[str, Any] | None:
    if dataset.rows is None and dataset.size is None and dataset.files is None:
        return None
    return {"rowCount": dataset.rows, "size": dataset.size, "fileCount": dataset.files}


def _inputs(datasets: Sequence[LineageDataset]) -> list[InputDataset]:
    from openlineage.client.event_v2 import InputDataset
    from openlineage.client.facet_v2 import InputDatasetFacet
    from openlineage.client.facet_v2 import input_statistics_input_dataset as stats

    result = []
    for d in datasets:
        counts = _statistics(d)
        extra: dict[str, InputDatasetFacet] = {}
        if counts is not None:
            extra["inputStatistics"] = stats.InputStatisticsInputDatasetFacet(
                **counts, producer=PRODUCER
            )
        result.append(InputDataset(d.namespace, d.name, facets=_facets(d), inputFacets=extra))
    return result


def _outputs(datasets: Sequence[LineageDataset]) -> list[OutputDataset]:
    from openlineage.client.event_v2 import OutputDataset
    from openlineage.client.facet_v2 import OutputDatasetFacet
    from openlineage.client.facet_v2 import output_statistics_output_dataset as stats

    result = []
    for d in datasets:
        counts = _statistics(d)
        extra: dict[str, OutputDatasetFacet] = {}
        if counts is not None:
            extra["outputStatistics"] = stats.OutputStatisticsOutputDatasetFacet(
                **counts, producer=PRODUCER
            )
        result.append(OutputDataset(d.namespace, d.name, facets=_facets(d), outputFacets=extra))
    return result


def _describe(settings: Settings, job: JobRecord, *, detail: bool) -> RunLineage:
    hook = _HOOKS.get(job.kind)
    if hook is None:
        return RunLineage(job.kind)
    try:
        return hook(settings, job, detail=detail)
    except Exception as exc:
        _log.warning(
            "OpenLineage: the datasets of %s job %s are left out: %s: %s",
            job.kind,
            job.id,
            type(exc).__name__,
            exc,
        )
        return RunLineage(job.kind)


def run_event(
    settings: Settings, job: JobRecord, event_type: str, *, error: str | None = None
) -> RunEvent:
    """The RunEvent of `job` reaching `event_type` (START, COMPLETE or FAIL)."""
    from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import (
        JobFacet,
        error_message_run,
        job_type_job,
        processing_engine_run,
    )

    lineage = _describe(settings, job, detail=event_type == "COMPLETE")
    run_facets: dict[str, Any] = {
        "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
            version=version("consentry"),
            name="consentry",
            openlineageAdapterVersion=version("openlineage-python"),
            producer=PRODUCER,
        )
    }
    if error is not None:
        run_facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
            message=error, programmingLanguage="python", producer=PRODUCER
        )
    job_facets: dict[str, JobFacet] = {
        "jobType": job_type_job.JobTypeJobFacet(
            processingType="BATCH", integration="CONSENTRY", jobType="JOB", producer=PRODUCER
        )
    }
    return RunEvent(
        eventType=RunState[event_type],
        eventTime=datetime.now(UTC).isoformat(),
        run=Run(runId=run_id_for(job.id), facets=run_facets),
        job=Job(namespace=JOB_NAMESPACE, name=lineage.job, facets=job_facets),
        inputs=_inputs(lineage.inputs),
        outputs=_outputs(lineage.outputs),
        producer=PRODUCER,
    )


# --- transports -----------------------------------------------------------------------------


class _Sender(Protocol):
    def send(self, event: RunEvent) -> None: ...

    def flush(self, timeout: float) -> bool: ...


def _report(event: RunEvent, exc: BaseException) -> None:
    _log.warning(
        "OpenLineage %s event of run %s (%s) not sent: %s: %s",
        event.eventType.value if event.eventType else "?",
        event.run.runId,
        event.job.name,
        type(exc).__name__,
        exc,
    )


class _InPlace:
    """Sends each event at once (the file transport: one appended line)."""

    def __init__(self, transport: Transport, before: Callable[[], None]) -> None:
        self._transport, self._before = transport, before

    def send(self, event: RunEvent) -> None:
        try:
            self._before()
            self._transport.emit(event)
        except Exception as exc:
            _report(event, exc)

    def flush(self, timeout: float) -> bool:
        return True


class _Background:
    """Sends events in order from one daemon thread (the HTTP transport): a job only queues.

    A full queue drops the event (reported); at exit the process waits at most
    `EXIT_WAIT_SECONDS` for the queue to drain."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._queue: queue.Queue[RunEvent] = queue.Queue(maxsize=_QUEUE_SIZE)
        threading.Thread(target=self._run, name="consentry-openlineage", daemon=True).start()
        atexit.register(self.flush, EXIT_WAIT_SECONDS)

    def send(self, event: RunEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except queue.Full as exc:
            _report(event, exc)

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                self._transport.emit(event)
            except Exception as exc:
                _report(event, exc)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float) -> bool:
        """Wait until every queued event was sent or failed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True


_SENDERS: dict[str, _Sender] = {}
_SENDERS_LOCK = threading.Lock()


def _sender(settings: Settings) -> _Sender:
    url = settings.openlineage_url
    key = f"http {url}" if url else f"file {settings.home / LINEAGE_FILE}"
    with _SENDERS_LOCK:
        found = _SENDERS.get(key)
        if found is None:
            found = _SENDERS[key] = _new_sender(settings)
        return found


def _new_sender(settings: Settings) -> _Sender:
    if settings.openlineage_url:
        from openlineage.client.transport.http import HttpConfig, HttpTransport

        config = HttpConfig.from_dict(
            {
                "url": settings.openlineage_url,
                "timeout": _HTTP_TIMEOUT_SECONDS,
                "retry": {"total": 2, "connect": 2, "read": 2},
            }
        )
        return _Background(HttpTransport(config))
    from openlineage.client.transport.file import FileConfig, FileTransport

    path = settings.home / LINEAGE_FILE
    transport = FileTransport(FileConfig(log_file_path=str(path), append=True))
    return _InPlace(transport, lambda: path.parent.mkdir(parents=True, exist_ok=True))


def emit_run_event(
    settings: Settings, job: JobRecord, event_type: str, *, error: str | None = None
) -> None:
    """Build and send the event of `job` reaching `event_type`; never raises (module doc)."""
    try:
        event = run_event(settings, job, event_type, error=error)
        sender = _sender(settings)
    except Exception as exc:
        _log.warning(
            "OpenLineage %s event of %s job %s not sent: %s: %s",
            event_type,
            job.kind,
            job.id,
            type(exc).__name__,
            exc,
        )
        return
    sender.send(event)


def flush(settings: Settings, timeout: float = EXIT_WAIT_SECONDS) -> bool:
    """Wait until the events queued for `settings`' transport were sent (or failed)."""
    with contextlib.suppress(Exception):
        return _sender(settings).flush(timeout)
    return False
