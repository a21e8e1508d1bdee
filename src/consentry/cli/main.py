"""The `consentry` command: a Typer app with one sub-command module per capability."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

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


def main() -> None:
    """Console-script entry point."""
    app()
