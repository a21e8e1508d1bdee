"""What every CLI command shares: settings from `--home`, JSON output, error handling,
the choices options offer, and how counts and money read.

Exit codes: 0 ok, 1 failure, 2 bad input (see `consentry.errors`).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

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

from consentry.errors import EXIT_BAD_INPUT, EXIT_FAILURE, BadInput, ConsentryError, Problem
from consentry.jsonable import to_jsonable
from consentry.settings import Settings

__all__ = [
    "HOME_SOURCE",
    "Engine",
    "EngineOption",
    "LogFormat",
    "LogLevel",
    "OldOutputOption",
    "console",
    "err_console",
    "exits_cleanly",
    "out_path",
    "plural",
    "print_json",
    "progress",
    "recover_first",
    "require_home",
    "settings_from",
    "start_invocation",
]

P = ParamSpec("P")
R = TypeVar("R")

console = Console()
err_console = Console(stderr=True)

HOME_SOURCE = "consentry.home_source"
"""`ctx.meta` key: where the root callback's `--home` came from (the command line, the
environment, or the default `./.consentry`)."""


# Choices of options shared by several commands: an enum makes `--help` list them
# (`<duckdb|spark>`) and click refuse anything else with exit 2 before the command runs.
class Engine(StrEnum):
    """`--engine`: the data-plane engine (`consentry.engine.ENGINES`)."""

    duckdb = "duckdb"
    spark = "spark"


EngineOption = Annotated[
    Engine | None,
    typer.Option(
        "--engine", help="Data-plane engine.", show_default="CONSENTRY_ENGINE, else duckdb"
    ),
]
"""`--engine` as every command that runs the data plane takes it."""


class LogFormat(StrEnum):
    """`--log-format` (`consentry.observe.logs.LOG_FORMATS`)."""

    text = "text"
    json = "json"


class LogLevel(StrEnum):
    """`serve --log-level`: the lowest level logged."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


OldOutputOption = Annotated[
    Path | None, typer.Option("--output", hidden=True, help="Deprecated spelling of --out.")
]
"""`--output`, the earlier name of `--out` in `audit checkpoint` and `report transparency`:
still accepted (hidden from --help, with a warning) so existing scripts keep working."""


def out_path(out: Path | None, output: Path | None) -> Path | None:
    """The output file from `--out`, or from the deprecated `--output` (with a warning on
    stderr); both at once is bad input unless they agree."""
    if output is None:
        return out
    err_console.print(
        "[yellow]warning:[/yellow] --output is deprecated; use --out (or -o)", highlight=False
    )
    if out is not None and out != output:
        raise BadInput(Problem("command line", None, "--out", "give --out or --output, not both"))
    return output


def settings_from(ctx: typer.Context, *, home: bool = True) -> Settings:
    """The settings the root callback stored for this invocation; unless `home` is False
    (commands that create a home or need none), the home must exist (`require_home`)."""
    obj = ctx.find_root().obj
    settings = obj if isinstance(obj, Settings) else Settings.from_env()
    if home:
        require_home(settings, ctx.meta.get(HOME_SOURCE))
    return settings


def require_home(settings: Settings, source: str | None = None) -> None:
    """Stop (exit 2) when the home directory does not exist, saying how to point at one.

    1. An existing directory is a home (an uninitialised one is met later by "run
       `consentry init`", exit 1); nothing here creates anything.
    2. A missing default home (`./.consentry`, no --home, no CONSENTRY_HOME): the command
       is being run outside a home; name --home, CONSENTRY_HOME and `consentry init`.
    3. A missing home given by --home or CONSENTRY_HOME: name the path and where it came
       from, and how to create it there.
    """
    if settings.home.is_dir():
        return
    if source == "commandline":
        message = (
            f"no Consentry home at {settings.home} (from --home); check the path, or "
            f"create a home there with `consentry --home {settings.home} init`"
        )
    elif source == "environment":
        message = (
            f"no Consentry home at {settings.home} (from CONSENTRY_HOME); check the path, "
            "or create a home there with `consentry init`"
        )
    else:
        message = (
            f"no Consentry home here ({settings.home} does not exist); point at one with "
            "--home DIR or CONSENTRY_HOME=DIR, or create one here with `consentry init`"
        )
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """`1 delivery`, `2 deliveries`, `1,204 posts`: the count (with thousands separators)
    and the noun in the number it needs. The plural is `singular + "s"` unless given."""
    noun = singular if count == 1 else (plural_form or singular + "s")
    return f"{count:,} {noun}"


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
    """A Rich progress bar on stderr (so `--json` output on stdout stays clean), drawn only
    when stderr is a terminal: piped or captured, it would leave nothing but blank lines."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=transient,
        disable=not err_console.is_terminal,
    ) as bar:
        yield bar
