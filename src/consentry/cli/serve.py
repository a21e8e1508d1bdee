"""`consentry serve`: run the HTTP service (API, pages, OpenAPI docs) with uvicorn."""

from __future__ import annotations

import os
from typing import Annotated

import typer
import uvicorn

from consentry.cli.common import err_console, exits_cleanly, settings_from

__all__ = ["register"]


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the API, the pages and the OpenAPI docs (http://HOST:PORT/docs)."""
    settings = settings_from(ctx)
    # Workers are separate processes that rebuild settings from the environment, so hand
    # them the resolved values rather than the command line.
    os.environ["CONSENTRY_HOME"] = str(settings.home)
    if settings.database_url:
        os.environ["CONSENTRY_DATABASE_URL"] = settings.database_url
    os.environ["CONSENTRY_POLICY_FILE"] = str(settings.policy_file)
    err_console.print(
        f"Consentry serving [bold]{settings.home}[/bold] on http://{host}:{port}/ "
        f"(API docs at http://{host}:{port}/docs)"
    )
    uvicorn.run(
        "consentry.api.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
    )


def register(app: typer.Typer) -> None:
    """Add `serve` to the root app."""
    app.command("serve")(exits_cleanly(serve))
