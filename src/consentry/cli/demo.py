"""CLI commands: `consentry demo generate`, `consentry demo load`, `consentry demo cycle`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from consentry.cli.common import (
    console,
    err_console,
    exits_cleanly,
    plural,
    print_json,
    progress,
    recover_first,
    settings_from,
)
from consentry.demo import generate, read_facts
from consentry.demo.cycle import run_cycle
from consentry.demo.loader import LoadedTable, demo_files, load
from consentry.errors import BadInput, ConsentryError, Problem
from consentry.settings import Settings
from consentry.store import open_store

__all__ = ["demo_app", "register"]

demo_app = typer.Typer(
    name="demo",
    help="Generate a realistic demo platform (users, posts, consent, access logs, scrapers) "
    "and load it into the lake.",
    no_args_is_help=True,
)


def _require_store(settings: Settings) -> None:
    """Fail before any work when the store has not been initialised (`consentry init`)."""
    with open_store(settings.resolved_database_url) as store:
        if store.current_revision() != store.head_revision():
            raise ConsentryError(
                f"the store at {store.describe()} is not initialised or not up to date; "
                "run `consentry init` first"
            )


def _load(settings: Settings, source: Path) -> list[LoadedTable]:
    demo_files(source)
    _require_store(settings)
    recover_first(settings)
    with progress() as bar:
        task = bar.add_task("loading", total=5)

        def advance(table: str) -> None:
            bar.update(task, description=f"importing {table}", advance=1)

        return load(settings, source, on_table=advance)


def _print_loaded(loaded: list[LoadedTable]) -> None:
    table = Table("table", "read", "new", "replaced", "total")
    for item in loaded:
        r = item.result
        table.add_row(r.table, f"{r.rows_read:,}", f"{r.rows_new:,}", f"{r.rows_replaced:,}",
                      f"{r.rows_total:,}")  # fmt: skip
    console.print(table)


@demo_app.command("generate")
@exits_cleanly
def generate_command(
    ctx: typer.Context,
    users: Annotated[int, typer.Option("--users", help="Number of accounts.")] = 20_000,
    posts: Annotated[int, typer.Option("--posts", help="Number of posts.")] = 200_000,
    access_events: Annotated[
        int,
        typer.Option("--access-events", help="Number of access-log requests (scrapers' included)."),
    ] = 60_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same bytes).")] = 7,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Directory to write into.", show_default="<home>/demo"),
    ] = None,
    load_lake: Annotated[
        bool,
        typer.Option("--load/--no-load", help="Load the files into the lake, or only write them."),
    ] = True,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing output directory.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Write the five canonical tables as Parquet plus demo.json, then load them.

    1. Refuse an existing, non-empty output directory unless --force.
    2. Unless --no-load, check the store is initialised before generating anything.
    3. Generate atomically (temporary directory, then rename), then load like `demo load`.
    """
    settings = settings_from(ctx)
    target = (out or settings.home / "demo").absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not force:
        raise BadInput(
            Problem(str(target), None, "--out", "already exists; pass --force to replace it")
        )
    if load_lake:
        _require_store(settings)
    started = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("generating", total=None)

        def report(step: str, done: int, total: int) -> None:
            bar.update(task, description=f"generated {step}", completed=done, total=total)

        files = generate(
            target,
            users=users,
            posts=posts,
            access_events=access_events,
            seed=seed,
            overwrite=force,
            on_progress=report,
        )
    seconds = time.perf_counter() - started
    facts = read_facts(target)
    loaded = _load(settings, target) if load_lake else []
    if as_json:
        print_json(
            {
                "out": target,
                "files": files,
                "seconds": round(seconds, 3),
                "facts": facts.to_json(),
                "loaded": [item.to_json() for item in loaded],
            }
        )
        return
    console.print(f"wrote {target} in {seconds:.1f} s", highlight=False, soft_wrap=True)
    rows = Table("table", "rows")
    for name, count in facts.rows.items():
        rows.add_row(name, f"{count:,}")
    console.print(rows)
    for s in facts.scrapers:
        verdict = "over 1M" if s.over_threshold else "under 1M"
        if s.straddles_midnight:
            verdict += " only across midnight"
        console.print(
            f"{s.entity}: max {s.max_24h_posts:,} posts in 24 h from "
            f"{s.window_start:%Y-%m-%d %H:%M} UTC ({verdict})",
            highlight=False,
            soft_wrap=True,
        )
    if loaded:
        _print_loaded(loaded)


@demo_app.command("load")
@exits_cleanly
def load_command(
    ctx: typer.Context,
    source: Annotated[
        Path | None,
        typer.Option(
            "--from", help="Directory written by `demo generate`.", show_default="<home>/demo"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Import a generated demo's five tables into the lake and record each import."""
    settings = settings_from(ctx)
    loaded = _load(settings, (source or settings.home / "demo").absolute())
    if as_json:
        report: list[dict[str, Any]] = [item.to_json() for item in loaded]
        print_json(report)
        return
    _print_loaded(loaded)


@demo_app.command("cycle")
@exits_cleanly
def cycle_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Deliver to a demo licensee, opt some authors out, revoke, confirm, assess scrapers.

    Every step is skipped when an earlier run did it, so running it again changes nothing.
    """
    settings = settings_from(ctx)
    recover_first(settings)
    with progress() as bar:
        task = bar.add_task("demo cycle", total=None)
        report = run_cycle(settings, on_step=lambda s: bar.update(task, description=s))
    if as_json:
        print_json(report.to_json())
        return

    def line(text: str) -> None:
        console.print(text, highlight=False, soft_wrap=True, markup=False)

    line(
        f"licensee {report.licensee}: " + ("added" if report.licensee_created else "already there")
    )
    if report.api_key:
        line(f"  API key {report.api_key}")
        err_console.print(
            "This API key is shown only now; it lets you try the licensee API.", highlight=False
        )
    line(
        f"delivery {report.delivery_id}: {plural(report.delivered_posts, 'post')}"
        + ("" if report.delivery_created else " (already there)")
    )
    line(
        f"opt-outs: {plural(len(report.opted_out), 'author')} opted out now, "
        f"{len(report.opt_out_authors) - len(report.opted_out):,} already"
    )
    line(
        f"revocations: {report.revocations_new:,} new, "
        f"{plural(report.revocations_total, 'revocation')} in the log"
    )
    if report.receipt_id:
        line(f"receipt {report.receipt_id}: {plural(report.confirmed, 'record')} confirmed deleted")
    if report.assessment_created:
        line(f"scraping assessment {report.assessment_id} recorded")


def register(app: typer.Typer) -> None:
    """Add the `demo` group to the root app."""
    app.add_typer(demo_app, name="demo")
