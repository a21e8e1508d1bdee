"""Every boundary of tests/boundaries.py, on every engine that evaluates it, at the instant,
one microsecond before and one microsecond after (docs/boundaries.md).

One test per (interval, engine), generated from the table: each probe builds one small
input holding every end of the interval at the three offsets (so Spark runs one query per
interval), evaluates it on the engine and returns, per end, whether each instant is inside.
The expected answers come from the table alone (`expected`). Where one engine evaluates a
boundary with two functions, the probe checks that they agree at every offset.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import ibis
import numpy as np
import pyarrow as pa
import pytest

from consentry.delivery.eligibility import LicenceScope, eligibility
from consentry.engine import connect
from consentry.keys import Keyring
from consentry.ledger.bulk import resolve_consent_bulk
from consentry.ledger.rules import (
    ConsentRule,
    LatestChoice,
    SubjectFacts,
    is_minor,
    resolve_consent,
)
from consentry.ledger.service import ConsentLedger
from consentry.policy import Choice, Duration, load_policy
from consentry.retention.candidates import _due
from consentry.retention.holds import HoldRecord, hold_set
from consentry.retention.rules import Condition
from consentry.revocation.log import RevocationLog
from consentry.revocation.rules import RevocationStatus, status_of
from consentry.schema import arrow_schema
from consentry.scraping.assessment import _stats_window, exact_stats_numpy
from consentry.scraping.attribution import Owners, attribute, check_owners
from consentry.scraping.columnar import resolve_credentials
from consentry.scraping.meter import Attributor, Meter, RedisMeter
from consentry.scraping.reference import reference_assessment
from consentry.scraping.results import from_us
from consentry.scraping.rules import Terms, forward_counts
from consentry.settings import DEFAULT_POLICY_FILE
from consentry.store import Store, open_store
from consentry.store.models import Licensee, RevocationRow
from tests.boundaries import BOUNDARIES, OFFSETS_US, Boundary, expected
from tests.services import ensure_redis

POLICY = load_policy(DEFAULT_POLICY_FILE)
THIRD = "ai_training_third_party"
US = timedelta(microseconds=1)
MIN = 60_000_000
AS_OF = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)
T0 = 1_741_132_800_000_000  # 2025-03-05T00:00:00Z in µs
TERMS = Terms(100, 10 * MIN, Decimal("15000"), "USD", "pro_rata")
UTC_TS = pa.timestamp("us", tz="UTC")

Found = dict[str, list[bool]]
"""End name -> inside at each of OFFSETS_US."""


def _deltas() -> list[timedelta]:
    return [d * US for d in OFFSETS_US]


def _agree(*answers: list[bool]) -> list[bool]:
    """The one answer several functions of one engine give (they must agree)."""
    assert all(a == answers[0] for a in answers), answers
    return answers[0]


def _backend(engine: str, request: pytest.FixtureRequest) -> Any:
    if engine == "duckdb":
        return connect("duckdb")
    assert engine == "spark", engine
    return connect("spark", spark=request.getfixturevalue("spark_session"))


@contextmanager
def _store(engine: str, request: pytest.FixtureRequest) -> Iterator[Store]:
    if engine == "sqlite":
        tmp: Path = request.getfixturevalue("tmp_path")
        url = f"sqlite:///{tmp / 'boundaries.db'}"
    else:
        assert engine == "postgresql", engine
        url = request.getfixturevalue("postgres_url")
    store = open_store(url)
    store.migrate()
    try:
        yield store
    finally:
        store.close()


# -- consent ------------------------------------------------------------------------------


def _consent_tables(offsets: list[timedelta]) -> tuple[pa.Table, pa.Table]:
    """One DE user per offset (region default deny) who allowed at AS_OF + offset."""
    n = len(offsets)
    users = pa.table(
        {
            "user_id": [f"u{i}" for i in range(n)],
            "created_at": pa.array([datetime(2020, 1, 1, tzinfo=UTC)] * n, UTC_TS),
            "region": ["DE"] * n,
            "birth_date": pa.array([date(1990, 1, 1)] * n, pa.date32()),
            "protected": [False] * n,
            "deactivated_at": pa.array([None] * n, UTC_TS),
            "deleted_at": pa.array([None] * n, UTC_TS),
        },
        schema=arrow_schema("users"),
    )
    events = pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "user_id": [f"u{i}" for i in range(n)],
            "purpose": [THIRD] * n,
            "choice": ["allow"] * n,
            "at": pa.array([AS_OF + d for d in offsets], UTC_TS),
            "source": ["settings"] * n,
        },
        schema=arrow_schema("consent_events"),
    )
    return users, events


def probe_consent_as_of(engine: str, request: pytest.FixtureRequest) -> Found:
    deltas = _deltas()
    users, events = _consent_tables(deltas)
    explicit = ConsentRule.EXPLICIT.value
    if engine == "python":
        found = []
        for d in deltas:
            latest = LatestChoice(Choice.ALLOW, AS_OF + d, "settings", "e")
            subject = SubjectFacts("u", "DE", date(1990, 1, 1))
            try:
                rule = resolve_consent(POLICY, subject, THIRD, AS_OF, latest).rule
            except ValueError:  # an event after as_of is never the latest one
                found.append(False)
            else:
                found.append(rule is ConsentRule.EXPLICIT)
        return {"as_of": found}
    if engine in ("sqlite", "postgresql"):
        tmp: Path = request.getfixturevalue("tmp_path")
        with _store(engine, request) as store:
            ledger = ConsentLedger(store, POLICY, Keyring(tmp / "keys"))
            ledger.sync_subjects(users)
            ledger.import_events(events)
            users_ids = [f"u{i}" for i in range(len(deltas))]
            return {
                "as_of": _agree(
                    [
                        ledger.resolve(u, THIRD, AS_OF).rule is ConsentRule.EXPLICIT
                        for u in users_ids
                    ],
                    [THIRD in ledger.latest_choices(u, AS_OF) for u in users_ids],
                )
            }
    backend = _backend(engine, request)
    expr = resolve_consent_bulk(
        POLICY,
        ibis.memtable(users.select(["user_id", "region", "birth_date"])),
        ibis.memtable(events),
        THIRD,
        AS_OF,
    )
    got = {r["user_id"]: r["rule"] for r in backend.to_pyarrow(expr).to_pylist()}
    return {"as_of": [got[f"u{i}"] == explicit for i in range(len(deltas))]}


def probe_policy_version(engine: str, request: pytest.FixtureRequest) -> Found:
    assert engine == "python", engine
    last = POLICY.versions[-1]
    found = []
    for d in _deltas():
        version = POLICY.version_at(last.effective_from + d)
        found.append(version is not None and version.version == last.version)
    return {"effective_from": found}


BIRTH = date(2007, 3, 5)
ADULT = datetime(2025, 3, 5, tzinfo=UTC)
"""BIRTH + 18 years, 00:00 UTC: the policy's age of majority is 18."""


def probe_minor_age(engine: str, request: pytest.FixtureRequest) -> Found:
    deltas = _deltas()
    if engine == "python":
        return {"adult_from": [is_minor(BIRTH, ADULT + d, 18) for d in deltas]}
    backend = _backend(engine, request)
    parts = []
    for i, d in enumerate(deltas):
        users = pa.table(
            {
                "user_id": [f"m{i}"],
                "region": pa.array(["US"], pa.string()),
                "birth_date": pa.array([BIRTH], pa.date32()),
            }
        )
        events = _consent_tables([])[1].select(
            ["user_id", "purpose", "choice", "at", "source", "event_id"]
        )
        parts.append(
            resolve_consent_bulk(
                POLICY, ibis.memtable(users), ibis.memtable(events), THIRD, ADULT + d
            ).select("user_id", "rule")
        )
    expr = parts[0].union(parts[1]).union(parts[2])  # one query for all three instants
    got = {r["user_id"]: r["rule"] for r in backend.to_pyarrow(expr).to_pylist()}
    return {"adult_from": [got[f"m{i}"] == ConsentRule.MINOR.value for i in range(3)]}


# -- scraping -----------------------------------------------------------------------------

VALID_FROM = T0 + 60 * MIN
VALID_TO = T0 + 120 * MIN
_VALIDITY_ENDS = (("valid_from", VALID_FROM), ("valid_to", VALID_TO))


def _validity_inputs() -> tuple[Owners, pa.Table]:
    """Per end and offset one credential, owned by `org-<credential>` during
    [VALID_FROM, VALID_TO), with one access at that end + offset."""
    rows, accesses = [], []
    for name, at in _VALIDITY_ENDS:
        for i, off in enumerate(OFFSETS_US):
            cred = f"k-{name}-{i}"
            rows.append(
                {
                    "credential": cred,
                    "entity": f"org-{cred}",
                    "valid_from": from_us(VALID_FROM),
                    "valid_to": from_us(VALID_TO),
                }
            )
            accesses.append((f"r-{cred}", at + off, cred))
    owners = check_owners(pa.Table.from_pylist(rows, schema=arrow_schema("entities")), location="e")
    events = pa.table(
        {
            "request_id": [r for r, _, _ in accesses],
            "ts": pa.array([t for _, t, _ in accesses], UTC_TS),
            "credential": [c for _, _, c in accesses],
            "posts": pa.array([1] * len(accesses), pa.int64()),
            "endpoint": pa.array([None] * len(accesses), pa.string()),
        },
        schema=arrow_schema("access_events"),
    )
    return owners, events


def probe_credential_validity(engine: str, request: pytest.FixtureRequest) -> Found:
    owners, events = _validity_inputs()
    creds = events["credential"].combine_chunks()
    ts = np.asarray(events["ts"].cast(pa.int64()).to_numpy(), dtype=np.int64)
    owner_of: dict[str, str] = {}
    if engine == "python":
        entities = pa.Table.from_pylist(
            [
                {
                    "credential": c,
                    "entity": f"org-{c}",
                    "valid_from": from_us(VALID_FROM),
                    "valid_to": from_us(VALID_TO),
                }
                for c in creds.to_pylist()
            ],
            schema=arrow_schema("entities"),
        )
        doc = reference_assessment(events, entities, TERMS, mode="earliest", policy_version="-")
        named = {e["entity"] for e in doc["entities"]}
        owner_of = {c: f"org-{c}" if f"org-{c}" in named else c for c in creds.to_pylist()}
    elif engine == "numpy":
        attributor = Attributor(owners)
        ids = attributor.entities(creds, ts)
        owner_of = dict(zip(creds.to_pylist(), [attributor.names[i] for i in ids], strict=True))
    elif engine == "numpy-columnar":
        resolved = resolve_credentials(creds, ts, ts, owners)
        codes = resolved.codes_at(resolved.code, ts)
        names = resolved.names.to_pylist()
        owner_of = dict(zip(creds.to_pylist(), [names[c] for c in codes], strict=True))
    elif engine == "lua":
        store = RedisMeter(TERMS, MIN, ensure_redis(), f"bounds:{uuid.uuid4().hex}")
        try:
            Meter(TERMS, owners, store).ingest(ts, creds, np.ones(len(ts), np.int64))
            for c in creds.to_pylist():
                owned = store.bounds(f"org-{c}")
                owner_of[c] = f"org-{c}" if owned is not None and owned.upper == 1 else c
        finally:
            store.clear()
    else:
        backend = _backend(engine, request)
        table = backend.to_pyarrow(attribute(backend, ibis.memtable(events), owners))
        owner_of = dict(
            zip(table["credential"].to_pylist(), table["entity"].to_pylist(), strict=True)
        )
    return {
        name: [owner_of[f"k-{name}-{i}"] == f"org-k-{name}-{i}" for i in range(3)]
        for name, _ in _VALIDITY_ENDS
    }


WINDOW_START = T0 + 60 * MIN


def _window_rows() -> list[tuple[str, int, int]]:
    """(entity, ts, posts). `s<i>`: x at start + offset (10 posts), y at start (1), z at
    start + window - 1 µs (100): some window holds 111 iff x is in y's window (a window
    starting at x before y cannot also hold z). `e<i>`: y at start (1), z at start + window
    + offset (10): the most is 11 iff z is in y's window."""
    w, s = TERMS.window_us, WINDOW_START
    rows = []
    for i, off in enumerate(OFFSETS_US):
        rows += [(f"s{i}", s + off, 10), (f"s{i}", s, 1), (f"s{i}", s + w - 1, 100)]
        rows += [(f"e{i}", s, 1), (f"e{i}", s + w + off, 10)]
    return rows


def probe_scraping_window(engine: str, request: pytest.FixtureRequest) -> Found:
    rows = sorted(_window_rows())
    names = sorted({e for e, _, _ in rows})
    maxima: dict[str, int] = {}
    if engine == "python":
        for name in names:
            ts = np.array([t for e, t, _ in rows if e == name], np.int64)
            posts = np.array([p for e, t, p in rows if e == name], np.int64)
            counts, _, _ = forward_counts(ts, posts, TERMS.window_us)
            maxima[name] = int(counts.max())
    elif engine == "numpy":
        codes = np.array([names.index(e) for e, _, _ in rows], np.int64)
        ts = np.array([t for _, t, _ in rows], np.int64)
        posts = np.array([p for _, _, p in rows], np.int64)
        code, _, _, most, _, _ = exact_stats_numpy(codes, ts, posts, TERMS.window_us)
        maxima = {names[c]: int(m) for c, m in zip(code.tolist(), most.tolist(), strict=True)}
    else:
        backend = _backend(engine, request)
        att = pa.table(
            {
                "entity": [e for e, _, _ in rows],
                "ts_us": pa.array([t for _, t, _ in rows], pa.int64()),
                "posts": pa.array([p for _, _, p in rows], pa.int64()),
            }
        )
        stats = _stats_window(backend, ibis.memtable(att), TERMS.window_us)
        maxima = dict(zip(stats["entity"].to_pylist(), stats["max_posts"].to_pylist(), strict=True))
    return {
        "start": [maxima[f"s{i}"] == 111 for i in range(3)],
        "start + window": [maxima[f"e{i}"] == 11 for i in range(3)],
    }


LATEST = 20 * MIN + 30_000_000
"""The latest access: bucket 20 of a 10-minute window in 1-minute buckets (span 10)."""


def _meter_bounds(engine: str) -> dict[str, tuple[int, int]]:
    """Per entity (lower, upper) at LATEST with one more access of 5 posts at the start of
    bucket 10 (the oldest kept) or 11 (the oldest whole) + offset: fed before LATEST
    (`u<i>`, `l<i>`), or after it (`a<i>`, bucket 10: an access that arrives late is counted
    iff it is in a kept bucket)."""
    names = [f"{kind}{i}" for kind in ("u", "l", "a") for i in range(3)]
    old = [b * MIN + off for b in (10, 11, 10) for off in OFFSETS_US]
    store = None
    if engine == "lua":
        store = RedisMeter(TERMS, MIN, ensure_redis(), f"bounds:{uuid.uuid4().hex}")
    else:
        assert engine == "numpy", engine
    no_owners = check_owners(arrow_schema("entities").empty_table(), location="entities")
    try:
        meter = Meter(TERMS, no_owners, store)
        first = np.array([LATEST if n[0] == "a" else t for n, t in zip(names, old, strict=True)])
        second = np.array([t if n[0] == "a" else LATEST for n, t in zip(names, old, strict=True)])
        posts = [np.array([1 if (n[0] == "a") == (k == 0) else 5 for n in names]) for k in (0, 1)]
        meter.ingest(first.astype(np.int64), names, posts[0].astype(np.int64))
        batch, _ = meter.ingest(second.astype(np.int64), names, posts[1].astype(np.int64))
        # The bounds the batch returns (computed with the update: in Lua by the script) and
        # those read back afterwards (in Python from the stored state) must agree.
        returned = {b.entity: (b.lower, b.upper) for b in batch}
        found = {}
        for name in names:
            b = meter.bounds(name)
            assert b is not None
            assert b.latest_us == LATEST
            found[name] = (b.lower, b.upper)
        late = [n for n in names if n[0] == "a" and n not in returned]  # a late row reports none
        assert returned == {n: v for n, v in found.items() if n not in late}
        return found
    finally:
        if store is not None:
            store.clear()


def probe_meter_upper_bound(engine: str, request: pytest.FixtureRequest) -> Found:
    got = _meter_bounds(engine)
    return {
        "oldest kept bucket start": _agree(
            [got[f"u{i}"][1] == 6 for i in range(3)], [got[f"a{i}"][1] == 6 for i in range(3)]
        )
    }


def probe_meter_lower_bound(engine: str, request: pytest.FixtureRequest) -> Found:
    got = _meter_bounds(engine)
    return {"second kept bucket start": [got[f"l{i}"][0] == 6 for i in range(3)]}


# -- holds, revocations, retention --------------------------------------------------------

HOLD_AT = datetime(2026, 1, 10, tzinfo=UTC)


def probe_legal_hold(engine: str, request: pytest.FixtureRequest) -> Found:
    assert engine == "python", engine
    earlier = HOLD_AT - timedelta(days=5)
    holds = {
        "created_at": HoldRecord("hold-1", "m", "r", "user", "a", HOLD_AT, None, None),
        "until": HoldRecord("hold-2", "m", "r", "user", "a", earlier, HOLD_AT, None),
        "released_at": HoldRecord("hold-3", "m", "r", "user", "a", earlier, None, HOLD_AT),
    }
    return {
        name: _agree(
            [hold.active_at(HOLD_AT + d) for d in _deltas()],
            [hold_set([hold], HOLD_AT + d).users == {"a": hold.id} for d in _deltas()],
        )
        for name, hold in holds.items()
    }


DUE = datetime(2025, 4, 4, 12, 0, tzinfo=UTC)


def probe_revocation_deadline(engine: str, request: pytest.FixtureRequest) -> Found:
    deltas = _deltas()
    if engine == "python":
        return {
            "due_at": [status_of(None, DUE, DUE + d) is RevocationStatus.PENDING for d in deltas]
        }
    revoked = DUE - timedelta(days=30)
    with _store(engine, request) as store:
        with store.session() as session:
            session.add(
                Licensee(
                    id="lic-b",
                    name="boundaries",
                    purpose=THIRD,
                    regions=[],
                    exclude_regions=[],
                    languages=[],
                    minimise=[],
                    period_from=None,
                    period_to=None,
                    created_at=revoked - timedelta(days=1),
                    disabled_at=None,
                    sealed_secret=b"\0" * 60,
                    master_key_id="0" * 16,
                    api_key_hash="0" * 64,
                    api_key_prefix="ck_",
                )
            )
            session.flush()
            session.add(
                RevocationRow(
                    licensee_id="lic-b",
                    record_id="0" * 64,
                    delivery_id="dlv-1",
                    delivery_ids=["dlv-1"],
                    author_id="a",
                    reason="consent_denied",
                    since=revoked,
                    revoked_at=revoked,
                    due_at=DUE,
                    run_id="run-1",
                    confirmed_at=None,
                    receipt_id=None,
                )
            )
        log = RevocationLog(store, POLICY)
        pending = _agree(
            [not log.overdue(DUE + d) for d in deltas],
            [log.counts("lic-b", DUE + d)["pending"] == 1 for d in deltas],
        )
    return {"due_at": pending}


RETAIN_AT = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)
_DURATIONS = (
    # (duration, created_at whose end is RETAIN_AT): exact (a cut-off) and calendar (added).
    (Duration.parse("30 days"), RETAIN_AT - timedelta(days=30)),
    (Duration.parse("1 month"), datetime(2025, 2, 5, 12, 0, tzinfo=UTC)),
)


def probe_retention_due(engine: str, request: pytest.FixtureRequest) -> Found:
    """The evaluation instant is RETAIN_AT; moving created_at by -offset puts RETAIN_AT at
    offset from the interval's end, for both kinds of duration."""
    deltas = _deltas()
    answers = []
    if engine == "python":
        for duration, created in _DURATIONS:
            condition = Condition(duration, RETAIN_AT)
            answers.append([not condition.holds_for(created - d) for d in deltas])
    else:
        backend = _backend(engine, request)
        table = pa.table(
            {
                "i": pa.array(range(3), pa.int64()),
                **{
                    f"c{k}": pa.array([created - d for d in deltas], UTC_TS)
                    for k, (_, created) in enumerate(_DURATIONS)
                },
            }
        )
        rows = ibis.memtable(table)
        expr = rows.select(
            "i",
            **{
                f"due{k}": _due(rows[f"c{k}"], Condition(duration, RETAIN_AT))
                for k, (duration, _) in enumerate(_DURATIONS)
            },
        ).order_by("i")
        got = backend.to_pyarrow(expr)
        answers = [[not v for v in got[f"due{k}"].to_pylist()] for k in range(len(_DURATIONS))]
    return {"created_at + duration": _agree(*answers)}


# -- deliveries ---------------------------------------------------------------------------


def _eligibility(
    engine: str,
    request: pytest.FixtureRequest,
    posts: list[tuple[str, str, datetime, datetime | None]],
    users: list[tuple[str, datetime | None, datetime | None]],
    scope: LicenceScope,
) -> dict[str, dict[str, Any]]:
    """post_id -> evaluated row; posts (id, author, created_at, deleted_at), users (id,
    deactivated_at, deleted_at), every user an adult in the US."""
    backend = _backend(engine, request)
    posts_table = pa.table(
        {
            "post_id": [p[0] for p in posts],
            "author_id": [p[1] for p in posts],
            "created_at": pa.array([p[2] for p in posts], UTC_TS),
            "text": ["hello"] * len(posts),
            "visibility": ["public"] * len(posts),
            "lang": ["en"] * len(posts),
            "deleted_at": pa.array([p[3] for p in posts], UTC_TS),
        },
        schema=arrow_schema("posts"),
    )
    users_table = pa.table(
        {
            "user_id": [u[0] for u in users],
            "created_at": pa.array([datetime(2020, 1, 1, tzinfo=UTC)] * len(users), UTC_TS),
            "region": ["US"] * len(users),
            "birth_date": pa.array([date(1980, 1, 1)] * len(users), pa.date32()),
            "protected": [False] * len(users),
            "deactivated_at": pa.array([u[1] for u in users], UTC_TS),
            "deleted_at": pa.array([u[2] for u in users], UTC_TS),
        },
        schema=arrow_schema("users"),
    )
    events = _consent_tables([])[1].select(
        ["user_id", "purpose", "choice", "at", "source", "event_id"]
    )
    expr = eligibility(
        POLICY,
        ibis.memtable(posts_table),
        ibis.memtable(users_table),
        ibis.memtable(events),
        scope,
        AS_OF,
    )
    return {r["post_id"]: r for r in backend.to_pyarrow(expr).to_pylist()}


def probe_delivery_cutoff(engine: str, request: pytest.FixtureRequest) -> Found:
    old = datetime(2024, 1, 1, tzinfo=UTC)
    posts: list[tuple[str, str, datetime, datetime | None]] = []
    users: list[tuple[str, datetime | None, datetime | None]] = [("ok", None, None)]
    for i, d in enumerate(_deltas()):
        at = AS_OF + d
        posts += [(f"c{i}", "ok", at, None), (f"d{i}", "ok", old, at)]
        posts += [(f"x{i}", f"gone{i}", old, None), (f"z{i}", f"idle{i}", old, None)]
        users += [(f"gone{i}", None, at), (f"idle{i}", at, None)]
    rows = _eligibility(engine, request, posts, users, LicenceScope.build(THIRD))
    return {
        "created_at": [not rows[f"c{i}"]["fail_created_after_cutoff"] for i in range(3)],
        "deleted_at": [rows[f"d{i}"]["fail_post_deleted"] for i in range(3)],
        "author_deleted_at": [rows[f"x{i}"]["fail_author_deleted"] for i in range(3)],
        "author_deactivated_at": [rows[f"z{i}"]["fail_author_deactivated"] for i in range(3)],
    }


PERIOD_FROM = datetime(2024, 1, 1, tzinfo=UTC)
PERIOD_TO = datetime(2024, 7, 1, tzinfo=UTC)


def probe_licence_period(engine: str, request: pytest.FixtureRequest) -> Found:
    posts: list[tuple[str, str, datetime, datetime | None]] = []
    for i, d in enumerate(_deltas()):
        posts += [(f"f{i}", "ok", PERIOD_FROM + d, None), (f"t{i}", "ok", PERIOD_TO + d, None)]
    scope = LicenceScope.build(THIRD, period_from=PERIOD_FROM, period_to=PERIOD_TO)
    rows = _eligibility(engine, request, posts, [("ok", None, None)], scope)
    return {
        "period_from": [not rows[f"f{i}"]["fail_out_of_scope_period"] for i in range(3)],
        "period_to": [not rows[f"t{i}"]["fail_out_of_scope_period"] for i in range(3)],
    }


# -- the generated tests ------------------------------------------------------------------

PROBES: dict[str, Callable[[str, pytest.FixtureRequest], Found]] = {
    "consent_as_of": probe_consent_as_of,
    "policy_version": probe_policy_version,
    "minor_age": probe_minor_age,
    "credential_validity": probe_credential_validity,
    "legal_hold": probe_legal_hold,
    "scraping_window": probe_scraping_window,
    "meter_upper_bound": probe_meter_upper_bound,
    "meter_lower_bound": probe_meter_lower_bound,
    "revocation_deadline": probe_revocation_deadline,
    "retention_due": probe_retention_due,
    "delivery_cutoff": probe_delivery_cutoff,
    "licence_period": probe_licence_period,
}
_MARKS = {
    "spark": [pytest.mark.spark],
    "postgresql": [pytest.mark.postgres],
    "lua": [pytest.mark.redis],
}
CASES = [
    pytest.param(b, engine, id=f"{b.name}-{engine}", marks=_MARKS.get(engine, []))
    for b in BOUNDARIES
    for engine in b.engines
]


def test_every_interval_has_a_probe() -> None:
    assert sorted(PROBES) == sorted(b.name for b in BOUNDARIES)
    assert len({b.name for b in BOUNDARIES}) == len(BOUNDARIES)


@pytest.mark.parametrize(("boundary", "engine"), CASES)
def test_boundary(boundary: Boundary, engine: str, request: pytest.FixtureRequest) -> None:
    got = PROBES[boundary.name](engine, request)
    want = {end.name: expected(end) for end in boundary.ends}
    assert got == want, (boundary.interval, engine)
