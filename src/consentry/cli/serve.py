"""`consentry serve`: run the HTTP service (API, pages, OpenAPI docs) with uvicorn."""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Annotated

import typer
import uvicorn

from consentry.cli.common import LogFormat, LogLevel, err_console, exits_cleanly, settings_from
from consentry.observe.logs import configure_logging
from consentry.observe.metrics import MULTIPROC_ENV

__all__ = ["register"]


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
    log_level: Annotated[
        LogLevel | None,
        typer.Option(
            help="Lowest level logged.",
            show_default="CONSENTRY_LOG_LEVEL, else info",
            case_sensitive=False,
        ),
    ] = None,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(help="Log lines as text or json.", show_default="the root --log-format"),
    ] = None,
) -> None:
    """Serve the API, the pages and the OpenAPI docs (http://HOST:PORT/docs).

    1. Logs: one line per request (and uvicorn's own lines) in `--log-format`, at
       `--log-level` (info by default); uvicorn's access log is off (our line replaces it).
    2. Metrics: the workers count into one multiprocess directory that `/metrics` sums (a
       new temporary directory, removed when the server stops, unless
       PROMETHEUS_MULTIPROC_DIR names one).
    """
    settings = settings_from(ctx)
    fmt = log_format.value if log_format is not None else settings.log_format
    level = (log_level.value if log_level is not None else settings.log_level or "info").lower()
    # Workers are separate processes that rebuild settings from the environment, so hand
    # them the resolved values rather than the command line.
    os.environ["CONSENTRY_HOME"] = str(settings.home)
    if settings.database_url:
        os.environ["CONSENTRY_DATABASE_URL"] = settings.database_url
    os.environ["CONSENTRY_POLICY_FILE"] = str(settings.policy_file)
    os.environ["CONSENTRY_LOG_FORMAT"] = fmt
    os.environ["CONSENTRY_LOG_LEVEL"] = level
    made = None
    if not os.environ.get(MULTIPROC_ENV):
        made = tempfile.mkdtemp(prefix="consentry-metrics-")
        os.environ[MULTIPROC_ENV] = made
    configure_logging(fmt, level)
    err_console.print(
        f"Consentry serving [bold]{settings.home}[/bold] on http://{host}:{port}/ "
        f"(API docs at http://{host}:{port}/docs)"
    )
    try:
        uvicorn.run(
            "consentry.api.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=level,
            log_config=None,
            access_log=False,
        )
    finally:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
            os.environ.pop(MULTIPROC_ENV, None)


def register(app: typer.Typer) -> None:
    """Add `serve` to the root app."""
    app.command("serve")(exits_cleanly(serve))
