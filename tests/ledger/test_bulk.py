"""The bulk form gives the scalar form's answers, user for user."""

from __future__ import annotations

from datetime import UTC, date, datetime

import ibis
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentry.ledger.bulk import DECISION_COLUMNS, resolve_consent_bulk
from consentry.ledger.rules import LatestChoice, SubjectFacts, resolve_consent
from consentry.policy import Choice, load_policy
from consentry.settings import DEFAULT_POLICY_FILE

POLICY = load_policy(DEFAULT_POLICY_FILE)
BACKEND = ibis.duckdb.connect()

instants = st.datetimes(
    min_value=datetime(2023, 1, 1), max_value=datetime(2026, 6, 1), timezones=st.just(UTC)
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
def test_bulk_agrees_with_scalar(
    users: list[tuple[str | None, date | None]],
    events: list[tuple[int, str, Choice, datetime, str, int]],
    at: datetime,
    purpose: str,
) -> None:
    subjects = [SubjectFacts(f"u{i}", r, b) for i, (r, b) in enumerate(users)]
    # Event ids deliberately collide in instant so the event_id tie-break is exercised.
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
