"""`consentry report …`: documents generated for people outside engineering.

Each capability adds its own report command to `report_app` from its own CLI module
(records of processing from retention, the transparency report from audit), so this module
only owns the group.
"""

from __future__ import annotations

import typer

__all__ = ["register", "report_app"]

report_app = typer.Typer(
    help="Reports for regulators and the public: records of processing, transparency.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the `report` group to the root command."""
    app.add_typer(report_app, name="report")
