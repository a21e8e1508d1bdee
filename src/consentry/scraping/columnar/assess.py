"""The columnar path end to end: `assess_columnar` runs steps 1-5 (package doc)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from consentry.scraping.attribution import Owners
from consentry.scraping.columnar.credentials import CredentialMap, resolve_credentials
from consentry.scraping.columnar.evidence import window_evidence
from consentry.scraping.columnar.exact import ExactResult, exact_pass
from consentry.scraping.columnar.session import (
    Layout,
    Session,
    column,
    dedup_source,
    fetch_entity_events,
    fetch_sorted,
)
from consentry.scraping.results import (
    Assessment,
    BilledWindow,
    assemble_assessment,
    from_us,
    rolling_series,
)
from consentry.scraping.rules import I64, Terms, window_amount

if TYPE_CHECKING:
    import ibis
    import ibis.expr.types as ir


def assess_columnar(
    backend: ibis.BaseBackend,
    events: ir.Table,
    owners: Owners,
    terms: Terms,
    *,
    mode: str,
    policy_version: str,
    sparklines: int,
    only: Sequence[str] | None,
    step: Callable[[str], None],
) -> Assessment:
    """The assessment on DuckDB by the columnar path (module doc)."""
    session = Session(backend)
    view = session.name("events")
    backend.create_view(
        view, events.select("request_id", "ts", "credential", "posts"), overwrite=True
    )
    session.views.append(view)
    try:
        return _assess(session, view, owners, terms, mode, policy_version, sparklines, only, step)
    finally:
        session.close()


def _assess(
    session: Session,
    view: str,
    owners: Owners,
    terms: Terms,
    mode: str,
    policy_version: str,
    sparklines: int,
    only: Sequence[str] | None,
    step: Callable[[str], None],
) -> Assessment:
    """Steps 1-5 of the package doc, then one `assemble_assessment`."""
    step("attributing accesses")
    credential_map, layout, keep_codes, creds = _attribute(session, view, owners, only)
    src = dedup_source(session, view)
    step("exact pass")
    code, ts, posts = fetch_sorted(session, src, creds, credential_map, layout, keep_codes)
    res = exact_pass(code, ts, posts, terms, mode)
    series, series_from = _sparklines(res, ts, posts, credential_map, terms, sparklines)
    del code, ts, posts  # the evidence fetch needs the memory
    step("billing")
    entity_names = credential_map.names.take(pa.array(res.codes)).to_pylist()
    windows = _billed_windows(session, src, credential_map, res, terms, entity_names)
    events_kept: dict[str, pa.Table] = {}
    if only is not None:
        events_kept = fetch_entity_events(session, src, creds, credential_map, list(only))
    return assemble_assessment(
        policy_version=policy_version,
        terms=terms,
        mode=mode,
        engine="duckdb",
        method="numpy",
        entities=entity_names,
        posts_total=res.totals.tolist(),
        accesses=res.accesses.tolist(),
        max_posts=res.maxima.tolist(),
        max_start_us=res.max_start.tolist(),
        windows=windows,
        sparklines=series,
        sparkline_from=series_from,
        events=events_kept,
    )


def _attribute(
    session: Session, view: str, owners: Owners, only: Sequence[str] | None
) -> tuple[CredentialMap, Layout, I64 | None, str]:
    """Step 1: every distinct credential resolved once; returns the map, the packing
    layout, the entity codes kept when only some entities are asked for, and the name of
    the registered (credential, code) table."""
    spans = session.arrow(
        f"SELECT credential, min(epoch_us(ts)) AS lo, max(epoch_us(ts)) AS hi, "
        f"count(*) AS n, min(posts) AS pmin, max(posts) AS pmax "
        f"FROM {view} GROUP BY credential"
    )
    credential_map = resolve_credentials(
        spans["credential"].combine_chunks(),
        column(spans, "lo", np.int64),
        column(spans, "hi", np.int64),
        owners,
    )
    layout = Layout.of(spans)
    keep_codes: I64 | None = None
    if only is not None:
        wanted = pc.is_in(credential_map.names, value_set=pa.array(list(only), pa.string()))
        keep_codes = np.flatnonzero(np.asarray(wanted.to_numpy(zero_copy_only=False), dtype=bool))
    creds = session.register(
        "creds",
        pa.table(
            {
                "credential": credential_map.credentials,
                "code": pa.array(credential_map.code, pa.int32()),
            }
        ),
    )
    return credential_map, layout, keep_codes, creds


def _sparklines(
    res: ExactResult,
    ts: I64,
    posts: I64,
    credential_map: CredentialMap,
    terms: Terms,
    sparklines: int,
) -> tuple[dict[str, list[int]], datetime | None]:
    """Console series: the top entities by maximum, hourly, over the span of the entities
    the billing looked at (over-line and top ones), as the Ibis path does."""
    series: dict[str, list[int]] = {}
    maxima = res.maxima
    if not len(maxima):
        return series, None
    over = np.flatnonzero(maxima > terms.threshold)
    top = np.argsort(-maxima, kind="stable")[:sparklines]
    looked = np.union1d(over, top)
    if not len(looked):
        return series, None
    ends = res.first_row + res.accesses
    hour = 3_600_000_000
    t_min = int(ts[res.first_row[looked]].min())
    t_max = int(ts[ends[looked] - 1].max())
    t_from = t_min // hour * hour + hour
    t_to = (t_max // hour + 1) * hour + terms.window_us
    names = credential_map.names.take(pa.array(res.codes[top])).to_pylist()
    for k, name in zip(top.tolist(), names, strict=True):
        a, b = int(res.first_row[k]), int(ends[k])
        series[name] = rolling_series(ts[a:b], posts[a:b], terms.window_us, t_from, t_to)
    return series, from_us(t_from)


def _billed_windows(
    session: Session,
    src: str,
    credential_map: CredentialMap,
    res: ExactResult,
    terms: Terms,
    entity_names: list[str],
) -> dict[str, list[BilledWindow]]:
    """Step 5 and the billed windows per entity, in start order (the exact pass gives them
    sorted by code, then start)."""
    digests, window_creds, window_accesses = window_evidence(
        session, src, credential_map, res, terms
    )
    order = np.lexsort((res.w_start, res.w_code))
    name_of = dict(zip(res.codes.tolist(), entity_names, strict=True))
    per_entity: dict[str, list[BilledWindow]] = {}
    for k, c, s, p, n in zip(
        order.tolist(),
        res.w_code[order].tolist(),
        res.w_start[order].tolist(),
        res.w_posts[order].tolist(),
        window_accesses[order].tolist(),
        strict=True,
    ):
        per_entity.setdefault(name_of[c], []).append(
            BilledWindow(
                start=from_us(s),
                end=from_us(s + terms.window_us),
                posts=int(p),
                amount=window_amount(int(p), terms),
                credentials=window_creds[k],
                evidence_sha256=digests[k],
                accesses=int(n),
            )
        )
    return per_entity
