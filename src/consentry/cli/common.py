"""What every CLI command shares: settings from `--home`, JSON output, error handling.

Exit codes: 0 ok, 1 failure, 2 bad input (see `consentry.errors`).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from consentry.errors import EXIT_BAD_INPUT, EXIT_FAILURE, BadInput, ConsentryError
from consentry.jsonable import to_jsonable
from consentry.settings import Settings

__all__ = [
    "console",
    "err_console",
    "exits_cleanly",
    "print_json",
    "progress",
    "recover_first",
    "settings_from",
    "start_invocation",
]

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)


def settings_from(ctx: typer.Context) -> Settings:
    """The settings the root callback stored for this invocation."""
    obj = ctx.find_root().obj
    if isinstance(obj, Settings):
        return obj
    return Settings.from_env()


def start_invocation(ctx: typer.Context, settings: Settings) -> None:
    """What every command does first: set up logging (`--log-format`, warning and above
    unless CONSENTRY_LOG_LEVEL says otherwise) and give the invocation a request id
    (CONSENTRY_REQUEST_ID when a caller passes its own, else a new one), which its job logs
    and audit events carry. Both end with the command."""
    from consentry.observe.context import request_id_from, using_request_id
    from consentry.observe.logs import LOG_FORMATS, configure_logging

    if settings.log_format not in LOG_FORMATS:
        err_console.print(
            f"[red]error:[/red] --log-format: must be one of {', '.join(LOG_FORMATS)} "
            f"(got {settings.log_format!r})",
            highlight=False,
        )
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        configure_logging(settings.log_format, settings.log_level or "warning")
    except ValueError as exc:
        err_console.print(f"[red]error:[/red] CONSENTRY_LOG_LEVEL: {exc}", highlight=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    scope = using_request_id(request_id_from(os.environ.get("CONSENTRY_REQUEST_ID")))
    scope.__enter__()
    ctx.call_on_close(lambda: scope.__exit__(None, None, None))


def recover_first(settings: Settings, *, store_required: bool = True) -> None:
    """Before a job starts: require an initialised store (unless not `store_required`: then
    an uninitialised home has nothing to recover) and recover interrupted jobs, saying on
    stderr what was recovered (docs/invariants.md, "Jobs")."""
    from consentry.recovery import recover, store_ready  # imports every capability

    if not store_required and not store_ready(settings):
        return
    for job in recover(settings):
        err_console.print(
            f"recovered {job.kind} job {job.id} ({job.subject}), interrupted at {job.step}",
            highlight=False,
            soft_wrap=True,
        )


def print_json(value: Any) -> None:
    """Write `value` as indented JSON to stdout (plain text, no Rich markup)."""
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def exits_cleanly(fn: Callable[P, R]) -> Callable[P, R]:
    """Map Consentry errors to a message on stderr and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except BadInput as exc:
            for problem in exc.problems:
                err_console.print(
                    f"[red]error:[/red] {problem}", markup=True, highlight=False, soft_wrap=True
                )
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except ConsentryError as exc:
            err_console.print(
                f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True
            )
            raise typer.Exit(EXIT_FAILURE) from None

    return wrapper


@contextmanager
def progress(*, transient: bool = True) -> Iterator[Progress]:
    """A Rich progress bar on stderr (so `--json` output on stdout stays clean)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=transient,
    ) as bar:
        yield bar
