"""The evidence pack of one entity: HTML report, PNG chart, Parquet of contributing events.

Layout of the pack directory (written to a staging directory, then renamed into place):

    report.html     the windows, amounts, credentials and IPs, the chart, how to check
    report.pdf      only when a converter (headless Chromium) is installed: A4, a title page,
                    numbered pages, no browser header or footer (`_print_pdf`)
    chart.png       rolling-window posts at every request vs the threshold, billed windows shaded
    events.parquet  every request of every billed window, with `window_start`; key-value
                    metadata `consentry.evidence_sha256.<window start>` holds each digest
    evidence.json   the entity's assessment (the `--json` entry) plus pack metadata (the
                    period of its accesses: `first_access`, `last_access`), with
                    `signals_served`: per billed window, the robots.txt in force and the share
                    of authors whose pages refused AI training at the window's start
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from consentry import __version__
from consentry.errors import ConsentryError
from consentry.instants import rfc3339
from consentry.ledger.sync import ledger_for
from consentry.policy import format_money
from consentry.scraping.attribution import ipv4_to_int
from consentry.scraping.canonical import canonical_order
from consentry.scraping.results import Assessment, EntityAssessment, from_us, to_us
from consentry.scraping.served import signals_served
from consentry.settings import Settings
from consentry.store import open_store

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "HEADLESS_CHROMIUM_ARGS",
    "PDF_PRINT_ARGS",
    "chart_figure",
    "chart_png",
    "find_pdf_converter",
    "safe_name",
    "write_evidence",
]

HEADLESS_CHROMIUM_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
)
"""How Chromium runs without a display or network chatter (PDF printing; browser tests)."""

PDF_PRINT_ARGS: tuple[str, ...] = (
    # Chromium prints its own header and footer (the date, the title, the file:// URL of
    # the staging directory, "1/3") unless told not to: the report's page numbers are its
    # own CSS margin boxes. Older Chromium spelled the switch --print-to-pdf-no-header; both
    # are passed (a switch a browser does not know is ignored).
    "--no-pdf-header-footer",
    "--print-to-pdf-no-header",
)
"""What `_print_pdf` adds to `HEADLESS_CHROMIUM_ARGS`."""

_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("consentry.scraping", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
)
# Amounts as the policy writes prices (`USD 70,500.00`), like every page and the CLI.
_TEMPLATES.filters["money"] = format_money
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(entity: str) -> str:
    """A directory name for `entity` (unsafe characters replaced, never empty or dotted)."""
    cleaned = _SAFE.sub("_", entity).strip("._") or "entity"
    return cleaned[:100]


def find_pdf_converter() -> str | None:
    """The headless browser used to print the report to PDF, if installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def chart_png(
    path: Path,
    ts_us: np.ndarray[Any, Any],
    posts: np.ndarray[Any, Any],
    entity: EntityAssessment,
    threshold: int,
    window_us: int,
) -> None:
    """Draw `chart_figure` and save it as a PNG at `path`."""
    import matplotlib.pyplot as plt

    fig = chart_figure(ts_us, posts, entity, threshold, window_us)
    try:
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def chart_figure(
    ts_us: np.ndarray[Any, Any],
    posts: np.ndarray[Any, Any],
    entity: EntityAssessment,
    threshold: int,
    window_us: int,
) -> Figure:
    """Plot posts in `(t - window, t]` at every request t (a step line), the threshold, and
    shade the billed windows.

    1. The y axis is in plain whole numbers with thousands separators (`1,200,000`), from
       zero, never matplotlib's scientific multiplier or offset (`1e6` above the axis),
       which a reader of a printed report would have to notice and apply.
    2. The x axis is in UTC, with the year.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    ts = np.asarray(ts_us, dtype=np.int64)
    cum = np.concatenate([[0], np.cumsum(np.asarray(posts, dtype=np.int64))])
    # Sampled at every request and every instant a request leaves the window, so the line
    # falls when it should instead of holding the last value.
    at = np.unique(np.concatenate([ts, ts + window_us]))
    hi = np.searchsorted(ts, at, side="right")
    lo = np.searchsorted(ts, at - window_us, side="right")
    rolling = cum[hi] - cum[lo]
    when = at.astype("datetime64[us]")
    fig, ax = plt.subplots(figsize=(11, 4), dpi=100)
    for window in entity.windows:
        ax.axvspan(
            mdates.date2num(window.start.replace(tzinfo=None)),  # type: ignore[no-untyped-call]
            mdates.date2num(window.end.replace(tzinfo=None)),  # type: ignore[no-untyped-call]
            color="#f4b400",
            alpha=0.25,
            label="billed window" if window is entity.windows[0] else None,
        )
    ax.step(when, rolling, where="post", color="#1a73e8", linewidth=1.2, label="posts in window")
    ax.axhline(threshold, color="#b3261e", linestyle="--", label=f"threshold {threshold:,}")
    ax.set_ylabel("posts in the preceding window")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # posts are whole: no 0.5 tick
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_ylim(bottom=0)  # a count: no tick below zero
    ax.set_xlabel("UTC")
    ax.set_title(f"{entity.entity}: rolling {window_us // 3_600_000_000} h count")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d %H:%M"))  # type: ignore[no-untyped-call]
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig


def _thousands(value: float, _position: int | None = None) -> str:
    """A y tick as a whole number with thousands separators (`1,200,000`)."""
    return f"{value:,.0f}"


def _ips(credentials: list[str]) -> list[str]:
    """The credentials that are IP addresses (dotted-quad IPv4, or anything with a `:`)."""
    if not credentials:
        return []
    is_v4, _ = ipv4_to_int(pa.array(credentials, pa.string()))
    return [
        credential
        for credential, v4 in zip(credentials, is_v4.tolist(), strict=True)
        if v4 or ":" in credential
    ]


def _signals_served(
    settings: Settings, starts: list[datetime]
) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(per window, what was served; why not, when the home has no initialised ledger)."""
    with open_store(settings.resolved_database_url) as store:
        if store.current_revision() != store.head_revision():
            return None, "this home has no initialised ledger (consentry init)"
    ledger = ledger_for(settings)
    try:
        served = signals_served(ledger, starts, settings.public_url or "")
    finally:
        ledger.store.close()
    return [s.to_json() for s in served], None


def write_evidence(
    settings: Settings, assessment: Assessment, entity: str, out: Path | None = None
) -> dict[str, Any]:
    """Write `entity`'s evidence pack (module doc) and return what was written.

    1. The pack is written to a staging directory next to its target: the chart, the
       events of every billed window (`_write_events`), the report (`_write_report`), its
       PDF when a converter is installed (`_print_pdf`) and `evidence.json`.
    2. The staging directory then replaces the target (`_move_into_place`); on any failure
       it is removed and the target is left as it was.
    """
    result = assessment.entity(entity)
    if result is None:
        raise ConsentryError(f"no accesses by entity {entity!r} in these events")
    events = assessment.events.get(entity)
    if events is None:
        raise ConsentryError(f"the accesses of {entity!r} were not kept by the assessment")
    terms = assessment.terms
    target = (
        Path(out)
        if out is not None
        else settings.home / "scraping" / "evidence" / safe_name(entity)
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        ordered = events.sort_by([("ts_us", "ascending"), ("request_id", "ascending")])
        ts = np.asarray(ordered["ts_us"].to_numpy(), dtype=np.int64)
        posts = np.asarray(ordered["posts"].to_numpy(), dtype=np.int64)
        chart_png(staging / "chart.png", ts, posts, result, terms.threshold, terms.window_us)
        _write_events(staging / "events.parquet", ordered, result, terms.window_us)
        document = _evidence_document(settings, assessment, result)
        document["first_access"] = rfc3339(from_us(int(ts[0]))) if len(ts) else None
        document["last_access"] = rfc3339(from_us(int(ts[-1]))) if len(ts) else None
        _write_report(staging / "report.html", document, assessment)
        pdf = _print_pdf(staging / "report.html", staging / "report.pdf")
        document["files"] = sorted(p.name for p in staging.iterdir())
        (staging / "evidence.json").write_text(
            json.dumps(document, indent=2, sort_keys=True), encoding="utf-8"
        )
        document["files"] = sorted(p.name for p in staging.iterdir())
        _move_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {**document, "directory": str(target), "pdf": pdf}


_EVENTS_SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("credential", pa.string()),
        ("posts", pa.int64()),
        ("window_start", pa.timestamp("us", tz="UTC")),
    ]
)
"""`events.parquet`: the requests of each billed window, with the window's start."""


def _write_events(path: Path, ordered: pa.Table, result: EntityAssessment, window_us: int) -> None:
    """`events.parquet` (module doc): per billed window, in window order, the entity's
    requests inside it (`ordered`: its events by instant) in canonical order with the
    window's start; each window's evidence digest in the key-value metadata."""
    parts = []
    metadata: dict[bytes, bytes] = {}
    for window in result.windows:
        start_us = to_us(window.start)
        mask = pc.and_(
            pc.greater_equal(ordered["ts_us"], start_us),
            pc.less(ordered["ts_us"], start_us + window_us),
        )
        part = canonical_order(
            ordered.filter(mask).select(["request_id", "ts", "credential", "posts"])
        )
        parts.append(
            part.append_column(
                "window_start",
                pa.array([window.start] * part.num_rows, pa.timestamp("us", tz="UTC")),
            )
        )
        metadata[f"consentry.evidence_sha256.{rfc3339(window.start)}".encode()] = (
            window.evidence_sha256.encode()
        )
    table = (
        pa.concat_tables([p.cast(_EVENTS_SCHEMA) for p in parts])
        if parts
        else _EVENTS_SCHEMA.empty_table()
    )
    table = table.replace_schema_metadata(metadata)
    pq.write_table(table, path, compression="zstd")


def _evidence_document(
    settings: Settings, assessment: Assessment, result: EntityAssessment
) -> dict[str, Any]:
    """`evidence.json` but for its file list: the entity's assessment entry, the terms it
    was assessed under, its credentials and IPs, the signals served at each billed window's
    start (`_signals_served`) and when the pack was generated."""
    terms = assessment.terms
    credentials = sorted({c for w in result.windows for c in w.credentials})
    document = {
        **result.to_json(),
        "policy_version": assessment.policy_version,
        "threshold_posts": terms.threshold,
        "window_seconds": terms.window_us // 1_000_000,
        "rounding": terms.rounding,
        "mode": assessment.mode,
        "currency": terms.currency,
        "credentials": credentials,
        "ips": _ips(credentials),
        "generated_at": rfc3339(datetime.now(UTC).replace(microsecond=0)),
    }
    served, unserved = _signals_served(settings, [w.start for w in result.windows])
    document["signals_served"] = served
    document["signals_served_unknown"] = unserved
    return document


def _write_report(path: Path, document: dict[str, Any], assessment: Assessment) -> None:
    """`report.html`: the evidence document rendered with the `evidence.html` template."""
    terms = assessment.terms
    html = _TEMPLATES.get_template("evidence.html").render(
        **document,
        window_hours=terms.window_us // 3_600_000_000,
        amount_per_million=terms.amount_per_million,
        version=__version__,
    )
    path.write_text(html, encoding="utf-8")


def _print_pdf(html: Path, pdf: Path) -> bool:
    """Print `html` to `pdf` with headless Chromium; whether a PDF was written (False
    when no converter is installed or it failed).

    1. No header or footer of the browser's (`PDF_PRINT_ARGS`): nothing of the machine that
       printed it (the staging directory's path) is on the pages.
    2. The pages are A4 with their numbers ("Page 2 of 4") from the template's `@page`
       margin boxes, and the title page stands alone (`break-after: page`).
    """
    converter = find_pdf_converter()
    if not converter:
        return False
    done = subprocess.run(
        [
            converter,
            *HEADLESS_CHROMIUM_ARGS,
            *PDF_PRINT_ARGS,
            f"--print-to-pdf={pdf}",
            html.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    return done.returncode == 0 and pdf.is_file()


def _move_into_place(staging: Path, target: Path) -> None:
    """Put the staging directory at `target`: a previous pack there is first renamed aside
    (so the target is never half written), then removed."""
    old = None
    if target.exists():
        old = target.parent / f".old-{uuid.uuid4().hex}"
        os.rename(target, old)
    os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
