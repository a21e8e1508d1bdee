"""The bulk form gives the scalar form's answers, user for user."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import ibis
import pyarrow as pa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consentry.ledger.bulk import DECISION_COLUMNS, resolve_consent_bulk
from consentry.ledger.rules import LatestChoice, SubjectFacts, resolve_consent
from consentry.policy import Choice, load_policy
from consentry.settings import DEFAULT_POLICY_FILE

POLICY = load_policy(DEFAULT_POLICY_FILE)
_US = timedelta(microseconds=1)
BACKEND = ibis.duckdb.connect()

THIRD = "ai_training_third_party"
AS_OF = datetime(2025, 3, 5, 12, 0, tzinfo=UTC)
"""An instant after the policy's last version: events placed exactly here test `at <= as of`."""
# A few fixed instants drawn often, so events collide with each other and with the as-of
# instant (random microseconds alone almost never do).
FIXED = [AS_OF, datetime(2024, 11, 15, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)]
instants = st.one_of(
    st.sampled_from(FIXED),
    st.datetimes(
        min_value=datetime(2023, 1, 1), max_value=datetime(2026, 6, 1), timezones=st.just(UTC)
    ),
)
users_strategy = st.lists(
    st.tuples(
        st.one_of(st.none(), st.sampled_from(["DE", "de", "GB", "IS", "US", "JP", "ZZ"])),
        st.one_of(st.none(), st.dates(min_value=date(1990, 1, 1), max_value=date(2015, 1, 1))),
    ),
    min_size=1,
    max_size=12,
)
events_strategy = st.lists(
    st.tuples(
        st.integers(0, 11),
        st.sampled_from(["ai_training_third_party", "business_partners"]),
        st.sampled_from(list(Choice)),
        instants,
        st.sampled_from(["settings", "gpc", "api", "support"]),
        st.integers(0, 3),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    users=users_strategy,
    events=events_strategy,
    at=instants,
    purpose=st.sampled_from(
        ["ai_training_third_party", "ai_training_first_party", "business_partners", "nope"]
    ),
)
@example(  # two events exactly at the as-of instant: both count, the larger event_id wins
    users=[("DE", date(1990, 1, 1))],
    events=[
        (0, THIRD, Choice.DENY, AS_OF, "settings", 0),
        (0, THIRD, Choice.ALLOW, AS_OF, "api", 0),
    ],
    at=AS_OF,
    purpose=THIRD,
).via("the as-of instant is closed; ties go to the larger event_id")
@example(  # the same pair in the other order of ids: the deny (larger id) wins
    users=[("DE", date(1990, 1, 1))],
    events=[(0, THIRD, Choice.ALLOW, AS_OF, "api", 0), (0, THIRD, Choice.DENY, AS_OF, "gpc", 0)],
    at=AS_OF,
    purpose=THIRD,
).via("ties go to the larger event_id, whichever choice it carries")
def test_bulk_agrees_with_scalar(
    users: list[tuple[str | None, date | None]],
    events: list[tuple[int, str, Choice, datetime, str, int]],
    at: datetime,
    purpose: str,
) -> None:
    subjects = [SubjectFacts(f"u{i}", r, b) for i, (r, b) in enumerate(users)]
    # Instants are often drawn from FIXED, so events collide in instant (with each other and
    # with `at`) and the event_id tie-break and the closed as-of end are exercised.
    rows = [
        (f"u{u}", p, c, when, s, f"e{n}-{k}")
        for k, (u, p, c, when, s, n) in enumerate(events)
        if u < len(users)
    ]
    users_table = pa.table(
        {
            "user_id": [s.user_id for s in subjects],
            "region": pa.array([s.region for s in subjects], pa.string()),
            "birth_date": pa.array([s.birth_date for s in subjects], pa.date32()),
        }
    )
    events_table = pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.string()),
            "purpose": pa.array([r[1] for r in rows], pa.string()),
            "choice": pa.array([r[2].value for r in rows], pa.string()),
            "at": pa.array([r[3] for r in rows], pa.timestamp("us", tz="UTC")),
            "source": pa.array([r[4] for r in rows], pa.string()),
            "event_id": pa.array([r[5] for r in rows], pa.string()),
        }
    )
    expr = resolve_consent_bulk(
        POLICY, ibis.memtable(users_table), ibis.memtable(events_table), purpose, at
    )
    assert tuple(expr.columns) == DECISION_COLUMNS
    bulk = {r["user_id"]: r for r in BACKEND.to_pyarrow(expr).to_pylist()}
    assert len(bulk) == len(subjects)
    for subject in subjects:
        candidates = [r for r in rows if r[0] == subject.user_id and r[1] == purpose and r[3] <= at]
        latest = None
        if candidates:
            best = max(candidates, key=lambda r: (r[3], r[5]))
            latest = LatestChoice(best[2], best[3], best[4], best[5])
        # Region codes are compared upper-case by both forms.
        expected = resolve_consent(POLICY, subject, purpose, at, latest)
        got = bulk[subject.user_id]
        assert got["decision"] == expected.decision.value, (subject, expected, got)
        assert got["rule"] == expected.rule.value
        assert got["policy_version"] == expected.policy_version
        assert got["since"] == expected.since


def _resolve_one(
    region: str, events: list[tuple[Choice, datetime, str, str]], at: datetime
) -> dict[str, object]:
    users = pa.table(
        {
            "user_id": ["u0"],
            "region": pa.array([region], pa.string()),
            "birth_date": pa.array([date(1990, 1, 1)], pa.date32()),
        }
    )
    table = pa.table(
        {
            "user_id": pa.array(["u0"] * len(events), pa.string()),
            "purpose": pa.array([THIRD] * len(events), pa.string()),
            "choice": pa.array([c.value for c, _, _, _ in events], pa.string()),
            "at": pa.array([w for _, w, _, _ in events], pa.timestamp("us", tz="UTC")),
            "source": pa.array([s for _, _, s, _ in events], pa.string()),
            "event_id": pa.array([e for _, _, _, e in events], pa.string()),
        }
    )
    expr = resolve_consent_bulk(POLICY, ibis.memtable(users), ibis.memtable(table), THIRD, at)
    rows: list[dict[str, object]] = BACKEND.to_pyarrow(expr).to_pylist()
    return rows[0]


def test_an_event_exactly_at_the_as_of_instant_decides() -> None:
    """Step 3's `at <= as of` is closed at the as-of end: a DE user (region default deny)
    who allowed exactly at the instant asked about is allowed, explicitly, since then."""
    got = _resolve_one("DE", [(Choice.ALLOW, AS_OF, "settings", "e1")], AS_OF)
    assert (got["decision"], got["rule"], got["since"]) == ("allow", "explicit", AS_OF)
    later = _resolve_one("DE", [(Choice.ALLOW, AS_OF, "settings", "e1")], AS_OF - _US)
    assert (later["decision"], later["rule"]) == ("deny", "region_default")


def test_of_two_events_at_one_instant_the_larger_event_id_wins() -> None:
    """Step 3's tie-break: same instant, the larger event_id decides, whatever the order of
    the rows or the choices."""
    pair = [(Choice.DENY, AS_OF, "settings", "e1"), (Choice.ALLOW, AS_OF, "gpc", "e2")]
    for events in (pair, pair[::-1]):
        got = _resolve_one("DE", events, AS_OF)
        assert (got["decision"], got["rule"]) == ("allow", "gpc")
    swapped = [(Choice.ALLOW, AS_OF, "settings", "e1"), (Choice.DENY, AS_OF, "api", "e2")]
    got = _resolve_one("US", swapped, AS_OF)
    assert (got["decision"], got["rule"]) == ("deny", "explicit")
