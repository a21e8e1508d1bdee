"""The `consentry` command: a Typer app with one sub-command module per capability."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from consentry import __version__
from consentry.cli import (
    admin,
    consent,
    deliver,
    demo,
    imports,
    licensee,
    policy,
    report,
    serve,
)
from consentry.cli.common import HOME_SOURCE, LogFormat, start_invocation
from consentry.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="consentry",
    help="Share a platform's posts with AI developers honestly: consent, deliveries, "
    "revocations, retention and scraping enforcement.",
    no_args_is_help=True,
    # `--install-completion` and `--show-completion` (bash, zsh, fish, PowerShell):
    # docs/cli.md, "Shell completion".
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"consentry {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar="CONSENTRY_HOME",
            help="The Consentry home: lake, store, keys, deliveries. Every command but "
            "`init` (which creates it) and `policy` needs an existing one.",
            show_default="./.consentry",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            "--log-format",
            help="Log lines as text or json (on stderr).",
            show_default="CONSENTRY_LOG_FORMAT, else text",
        ),
    ] = None,
) -> None:
    """Consentry command-line interface."""
    settings = Settings.from_env(home=home)
    if log_format is not None:
        settings = replace(settings, log_format=log_format.value)
    source = ctx.get_parameter_source("home")
    # Where the home came from decides how a missing one is explained (`require_home`).
    ctx.meta[HOME_SOURCE] = source.name.lower() if source is not None else "default"
    ctx.obj = settings
    start_invocation(ctx, settings)


for module in (admin, policy, imports, demo, consent, licensee, deliver, report, serve):
    module.register(app)

# --- capability command groups, one line each ---
# revocations
from consentry.cli import revocations  # noqa: E402

revocations.register(app)
# retention
from consentry.cli import retention  # noqa: E402

retention.register(app)
# scraping
from consentry.cli import scraping  # noqa: E402

scraping.register(app)
# audit
from consentry.cli import audit  # noqa: E402

audit.register(app)

from consentry.cli import doctor  # noqa: E402

doctor.register(app)
# signing keys and their rotation
from consentry.cli import keys  # noqa: E402

keys.register(app)
# per-author signals for CDNs and edge stores
from consentry.cli import signals  # noqa: E402

signals.register(app)
# the lake's Delta tables: history, optimize, vacuum
from consentry.cli import lake  # noqa: E402

lake.register(app)
# external sources: the platform's own tables read in place
from consentry.cli import sources  # noqa: E402

sources.register(app)


def main() -> NoReturn:
    """Console-script entry point (`consentry`, `python -m consentry.cli`).

    1. The command runs in Click's standalone mode, which ends every outcome but an
       unexpected exception in SystemExit carrying the exit status (an unexpected
       exception propagates: Python prints it and exits 1, as usual).
    2. The process then ends as Python ends one, minus the interpreter's finalization
       (`_end_process`).
    """
    try:
        app()
    except SystemExit as done:
        _end_process(_exit_status(done.code))
    _end_process(0)


def _exit_status(code: object) -> int:
    """The status `sys.exit(code)` gives: None is 0, an int is itself, anything else is
    printed on stderr and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _end_process(status: int) -> NoReturn:
    """End the process with `status` once a command is done.

    1. Run the atexit handlers (logging's flush, temporary folders' removal, PySpark's
       stop of its gateway JVM), as a normal exit would.
    2. Flush stdout and stderr (a reader that went away is no reason for another status).
    3. `os._exit(status)`: no interpreter finalization, no C++ static destructors.

    Why 3: a native worker thread (Arrow's thread pools) can still be dropping the last
    reference to memory a Python object owns when the interpreter finalizes (Spark's Arrow
    batches arrive as Python bytes); asking for the GIL then ends that thread with
    `pthread_exit`, whose unwinding through a `noexcept` C++ frame is `std::terminate`:
    SIGABRT, exit status 134 after a command that succeeded (once in about 15 runs of
    `consent resolve --engine spark`). Nothing of Consentry's needs finalization: every
    write that matters is committed or renamed before its command returns. The test:
    tests/cli/test_main.py.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)
