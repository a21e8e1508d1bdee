"""CLI commands: `consentry scraping assess`, `scraping evidence`, `scraping meter-replay`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from consentry.cli.common import (
    console,
    exits_cleanly,
    print_json,
    progress,
    recover_first,
    settings_from,
)
from consentry.scraping.evidence import write_evidence
from consentry.scraping.meter import meter_for, replay
from consentry.scraping.service import AssessOptions, record_assessment, run_assessment

__all__ = ["register", "scraping_app"]

scraping_app = typer.Typer(
    help="Scraping enforcement: exact 24-hour windows, damages, evidence, online meter.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
EventsOption = Annotated[
    list[Path] | None,
    typer.Option("--events", help="Access-event files (Parquet, CSV, JSONL); default: the lake."),
]
EntitiesOption = Annotated[
    Path | None, typer.Option("--entities", help="Entities file; default: the lake's table.")
]
PolicyOption = Annotated[
    Path | None, typer.Option("--policy", help="Policy file; default: CONSENTRY_POLICY_FILE.")
]
VersionOption = Annotated[
    str | None,
    typer.Option("--policy-version", help="Policy version; default: in force at the last access."),
]
RoundingOption = Annotated[
    str | None,
    typer.Option(
        "--rounding", help="pro_rata | per_full_million | per_started_million (default: policy)."
    ),
]
ModeOption = Annotated[str, typer.Option("--mode", help="earliest (default) or max_total.")]
EngineOption = Annotated[str | None, typer.Option("--engine", help="duckdb (default) or spark.")]


def _options(
    events: list[Path] | None,
    entities: Path | None,
    policy: Path | None,
    policy_version: str | None,
    rounding: str | None,
    mode: str,
    engine: str | None,
    only: list[str] | None = None,
) -> AssessOptions:
    return AssessOptions(
        events=events or [],
        entities=entities,
        policy_file=policy,
        policy_version=policy_version,
        rounding=rounding,
        mode=mode,
        engine=engine,
        only=only,
    )


@exits_cleanly
def assess_command(
    ctx: typer.Context,
    events: EventsOption = None,
    entities: EntitiesOption = None,
    policy: PolicyOption = None,
    policy_version: VersionOption = None,
    rounding: RoundingOption = None,
    mode: ModeOption = "earliest",
    engine: EngineOption = None,
    as_json: JsonOption = False,
) -> None:
    """Find every entity's densest 24 hours and bill the windows over the threshold."""
    settings = settings_from(ctx)
    options = _options(events, entities, policy, policy_version, rounding, mode, engine)
    recover_first(settings, store_required=False)
    with progress() as bar:
        task = bar.add_task("assessing", total=None)
        assessment = run_assessment(
            settings, options, on_progress=lambda s: bar.update(task, description=s)
        )
    assessment_id = record_assessment(
        settings, assessment, events=options.events, entities=options.entities
    )
    if as_json:
        print_json({**assessment.to_json(), "assessment_id": assessment_id})
        return
    terms = assessment.terms
    console.print(
        f"policy {assessment.policy_version}: more than {terms.threshold:,} posts in "
        f"{terms.window_us // 3_600_000_000} h, {terms.amount_per_million} {terms.currency} per "
        f"million ({terms.rounding}, mode {assessment.mode}); {assessment.accesses:,} accesses, "
        f"{len(assessment.entities):,} entities",
        highlight=False,
        soft_wrap=True,
    )
    table = Table("entity", "max posts in a window", "window start", "windows", "amount")
    for e in sorted(assessment.entities, key=lambda e: -e.max_posts_in_window)[:20]:
        table.add_row(
            e.entity,
            f"{e.max_posts_in_window:,}",
            e.max_window_start.isoformat().replace("+00:00", "Z"),
            str(len(e.windows)),
            f"{e.amount:,.2f}",
        )
    console.print(table)
    console.print(
        f"total {assessment.total_amount:,.2f} {terms.currency}"
        + (f" (recorded as {assessment_id})" if assessment_id else " (not recorded: no store)"),
        highlight=False,
    )


@exits_cleanly
def evidence_command(
    ctx: typer.Context,
    entity: Annotated[str, typer.Argument(help="The entity to build the evidence pack for.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Directory to write; default <home>/scraping/evidence/ENTITY."),
    ] = None,
    events: EventsOption = None,
    entities: EntitiesOption = None,
    policy: PolicyOption = None,
    policy_version: VersionOption = None,
    rounding: RoundingOption = None,
    mode: ModeOption = "earliest",
    engine: EngineOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write ENTITY's evidence pack: HTML report (PDF if possible), chart, events Parquet."""
    settings = settings_from(ctx)
    options = _options(
        events, entities, policy, policy_version, rounding, mode, engine, only=[entity]
    )
    with progress() as bar:
        task = bar.add_task("assessing", total=None)
        assessment = run_assessment(
            settings, options, on_progress=lambda s: bar.update(task, description=s)
        )
        bar.update(task, description="writing evidence")
        pack = write_evidence(settings, assessment, entity, out)
    if as_json:
        print_json(pack)
        return
    console.print(
        f"{entity}: {len(pack['windows'])} billed window(s), {pack['amount']} "
        f"{pack['currency']}; evidence in {pack['directory']}",
        highlight=False,
        soft_wrap=True,
    )


@exits_cleanly
def meter_replay_command(
    ctx: typer.Context,
    events: Annotated[list[Path], typer.Option("--events", help="Access-event files to feed.")],
    entities: EntitiesOption = None,
    policy: PolicyOption = None,
    policy_version: VersionOption = None,
    backend: Annotated[
        str, typer.Option("--backend", help="memory (default) or redis (CONSENTRY_REDIS_URL).")
    ] = "memory",
    prefix: Annotated[
        str, typer.Option("--prefix", help="Redis key prefix (several meters may share Redis).")
    ] = "consentry:meter",
    as_json: JsonOption = False,
) -> None:
    """Feed access-event files through the online meter; print bounds and alerts."""
    settings = settings_from(ctx)
    meter = meter_for(
        settings,
        backend=backend,
        policy_file=policy,
        policy_version=policy_version,
        prefix=prefix,
        entities=entities,
    )
    report = replay(meter, events)
    if as_json:
        print_json(report)
        return
    table = Table("entity", "lower bound", "upper bound", "alert level")
    for row in report["entities"][:20]:
        table.add_row(row["entity"], f"{row['lower']:,}", f"{row['upper']:,}", row["level"] or "")
    console.print(table)
    console.print(f"{report['events']:,} events, {len(report['alerts'])} alerts", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the `scraping` group to the root command."""
    scraping_app.command("assess")(assess_command)
    scraping_app.command("evidence")(evidence_command)
    scraping_app.command("meter-replay")(meter_replay_command)
    app.add_typer(scraping_app, name="scraping")
