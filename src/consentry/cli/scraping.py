"""CLI commands: `consentry scraping assess`, `scraping evidence`, `scraping meter-replay`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pyarrow.compute as pc
import typer
from rich.table import Table

from consentry.cli.common import (
    EngineOption,
    console,
    exits_cleanly,
    plural,
    print_json,
    progress,
    recover_first,
    settings_from,
)
from consentry.errors import BadInput, Problem, did_you_mean
from consentry.policy import format_money
from consentry.scraping.evidence import write_evidence
from consentry.scraping.meter import meter_for, replay
from consentry.scraping.service import (
    AssessOptions,
    load_owners,
    record_assessment,
    run_assessment,
)
from consentry.settings import Settings

__all__ = ["MeterBackend", "Mode", "Rounding", "register", "scraping_app"]


class Rounding(StrEnum):
    """`--rounding` (`consentry.scraping.rules.ROUNDINGS`)."""

    pro_rata = "pro_rata"
    per_full_million = "per_full_million"
    per_started_million = "per_started_million"


class Mode(StrEnum):
    """`--mode` (`consentry.scraping.rules.MODES`)."""

    earliest = "earliest"
    max_total = "max_total"


class MeterBackend(StrEnum):
    """`meter-replay --backend`."""

    memory = "memory"
    redis = "redis"


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
    Rounding | None,
    typer.Option(
        "--rounding",
        help="How a window's posts become millions to bill.",
        show_default="the policy's",
    ),
]
ModeOption = Annotated[
    Mode,
    typer.Option(
        "--mode",
        help="Which windows to bill: the earliest over the line, or the "
        "set with the largest total.",
    ),
]


def _options(
    events: list[Path] | None,
    entities: Path | None,
    policy: Path | None,
    policy_version: str | None,
    rounding: Rounding | None,
    mode: Mode,
    engine: str | None,
    only: list[str] | None = None,
) -> AssessOptions:
    return AssessOptions(
        events=events or [],
        entities=entities,
        policy_file=policy,
        policy_version=policy_version,
        rounding=None if rounding is None else rounding.value,
        mode=mode.value,
        engine=None if engine is None else str(engine),
        only=only,
    )


def _entity_names(settings: Settings, entities: Path | None) -> set[str]:
    """Every entity the entities table (the file given, else the lake's) names."""
    owners = load_owners(settings, entities)
    return {
        str(name)
        for part in (owners.exact, owners.ranges)
        for name in pc.unique(part.column("entity")).to_pylist()
        if name is not None
    }


@exits_cleanly
def assess_command(
    ctx: typer.Context,
    events: EventsOption = None,
    entities: EntitiesOption = None,
    policy: PolicyOption = None,
    policy_version: VersionOption = None,
    rounding: RoundingOption = None,
    mode: ModeOption = Mode.earliest,
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
        f"{terms.window_us // 3_600_000_000} h, "
        f"{format_money(terms.amount_per_million, terms.currency)} "
        f"per million ({terms.rounding}, mode {assessment.mode}); "
        f"{plural(assessment.accesses, 'access', 'accesses')}, "
        f"{plural(len(assessment.entities), 'entity', 'entities')}",
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
            format_money(e.amount, terms.currency),
        )
    console.print(table)
    console.print(
        f"total {format_money(assessment.total_amount, terms.currency)}"
        + (f" (recorded as {assessment_id})" if assessment_id else " (not recorded: no store)"),
        highlight=False,
        soft_wrap=True,
    )


@exits_cleanly
def evidence_command(
    ctx: typer.Context,
    entity: Annotated[str, typer.Argument(help="The entity to build the evidence pack for.")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Directory to write.",
            show_default="<home>/scraping/evidence/ENTITY",
        ),
    ] = None,
    events: EventsOption = None,
    entities: EntitiesOption = None,
    policy: PolicyOption = None,
    policy_version: VersionOption = None,
    rounding: RoundingOption = None,
    mode: ModeOption = Mode.earliest,
    engine: EngineOption = None,
    as_json: JsonOption = False,
) -> None:
    """Write ENTITY's evidence pack: HTML report (PDF if possible), chart, events Parquet.

    An ENTITY that is neither named by the entities table nor has accesses of its own (an
    unattributed credential is its own entity) is bad input (exit 2), with the closest
    known names.
    """
    settings = settings_from(ctx)
    options = _options(
        events, entities, policy, policy_version, rounding, mode, engine, only=[entity]
    )
    with progress() as bar:
        task = bar.add_task("assessing", total=None)
        assessment = run_assessment(
            settings, options, on_progress=lambda s: bar.update(task, description=s)
        )
        if assessment.entity(entity) is None:
            known = _entity_names(settings, entities)
            if entity not in known:
                hint = did_you_mean(entity, known)
                raise BadInput(
                    Problem(
                        "command line",
                        None,
                        "ENTITY",
                        f"no entity named {entity!r}" + (f"; {hint}" if hint else ""),
                    )
                )
        bar.update(task, description="writing evidence")
        pack = write_evidence(settings, assessment, entity, out)
    if as_json:
        print_json(pack)
        return
    windows = len(pack["windows"])
    console.print(
        f"{entity}: {plural(windows, 'billed window')}, "
        f"{format_money(pack['amount'], pack['currency'])}; evidence in {pack['directory']}",
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
        MeterBackend,
        typer.Option(
            "--backend",
            help="Where the meter counts: in memory, or in Redis (CONSENTRY_REDIS_URL).",
        ),
    ] = MeterBackend.memory,
    prefix: Annotated[
        str, typer.Option("--prefix", help="Redis key prefix (several meters may share Redis).")
    ] = "consentry:meter",
    as_json: JsonOption = False,
) -> None:
    """Feed access-event files through the online meter; print bounds and alerts."""
    settings = settings_from(ctx)
    meter = meter_for(
        settings,
        backend=backend.value,
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
    console.print(
        f"{plural(report['events'], 'event')}, {plural(len(report['alerts']), 'alert')}",
        highlight=False,
    )


def register(app: typer.Typer) -> None:
    """Add the `scraping` group to the root command."""
    scraping_app.command("assess")(assess_command)
    scraping_app.command("evidence")(evidence_command)
    scraping_app.command("meter-replay")(meter_replay_command)
    app.add_typer(scraping_app, name="scraping")
