"""The bulk form gives the scalar form's answers, user for user."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import ibis
import pyarrow as pa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consentry.ledger.bulk import DECISION_COLUMNS, resolve_consent_bulk
from consentry.ledger.rules import LatestChoice, SubjectFacts, minor_birth_cutoff, resolve_consent
from consentry.policy import Choice, PolicyFile, load_policy
from consentry.settings import DEFAULT_POLICY_FILE
from tests.ledger.policies import SWITCHES

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


def _resolve_both(
    users: list[SubjectFacts],
    events: list[tuple[str, str, Choice, datetime, str, str]],
    purpose: str,
    at: datetime,
    policy: PolicyFile = POLICY,
) -> dict[str, dict[str, object]]:
    """The bulk answers by user."""
    users_table = pa.table(
        {
            "user_id": [s.user_id for s in users],
            "region": pa.array([s.region for s in users], pa.string()),
            "birth_date": pa.array([s.birth_date for s in users], pa.date32()),
        }
    )
    events_table = pa.table(
        {
            "user_id": pa.array([e[0] for e in events], pa.string()),
            "purpose": pa.array([e[1] for e in events], pa.string()),
            "choice": pa.array([e[2].value for e in events], pa.string()),
            "at": pa.array([e[3] for e in events], pa.timestamp("us", tz="UTC")),
            "source": pa.array([e[4] for e in events], pa.string()),
            "event_id": pa.array([e[5] for e in events], pa.string()),
        }
    )
    expr = resolve_consent_bulk(
        policy, ibis.memtable(users_table), ibis.memtable(events_table), purpose, at
    )
    return {r["user_id"]: r for r in BACKEND.to_pyarrow(expr).to_pylist()}


def test_a_purpose_absent_from_the_version_in_force_names_that_version() -> None:
    users = [SubjectFacts("u0", "US", date(1990, 1, 1))]
    at = datetime(2025, 3, 1, tzinfo=UTC)
    for purpose, when, version in [
        ("nope", at, "2024-11-15"),
        ("ai_training_third_party", datetime(2024, 6, 1, tzinfo=UTC), "2023-09-29"),
    ]:
        got = _resolve_both(users, [], purpose, when)["u0"]
        assert got == {
            "user_id": "u0",
            "decision": "deny",
            "rule": "purpose_not_in_policy",
            "policy_version": version,
            "since": datetime.fromisoformat(version).replace(tzinfo=UTC),
        }


def test_a_purpose_without_region_defaults_falls_to_its_default() -> None:
    # ai_training_first_party had no region defaults in the 2023-09-29 version.
    at = datetime(2024, 6, 1, tzinfo=UTC)
    users = [SubjectFacts("u0", "DE", date(1990, 1, 1)), SubjectFacts("u1", None, None)]
    got = _resolve_both(users, [], "ai_training_first_party", at)
    for subject in users:
        expected = resolve_consent(POLICY, subject, "ai_training_first_party", at, None)
        assert (got[subject.user_id]["decision"], got[subject.user_id]["rule"]) == (
            expected.decision.value,
            expected.rule.value,
        )
    assert got["u0"]["rule"] == "default"


def test_the_latest_event_wins_whatever_the_order_rows_arrive_in() -> None:
    at = datetime(2025, 3, 1, tzinfo=UTC)
    third = "ai_training_third_party"
    users = [SubjectFacts("u0", "US", date(1990, 1, 1)), SubjectFacts("u1", "US", None)]
    events = [
        ("u0", third, Choice.DENY, datetime(2025, 1, 3, tzinfo=UTC), "settings", "e1"),
        ("u0", third, Choice.ALLOW, datetime(2025, 1, 1, tzinfo=UTC), "settings", "e2"),
        ("u0", third, Choice.ALLOW, datetime(2025, 1, 2, tzinfo=UTC), "gpc", "e3"),
        ("u1", third, Choice.ALLOW, datetime(2025, 1, 1, tzinfo=UTC), "api", "e4"),
        ("u1", third, Choice.DENY, datetime(2025, 1, 5, tzinfo=UTC), "gpc", "e5"),
        ("u1", third, Choice.ALLOW, datetime(2025, 1, 2, tzinfo=UTC), "api", "e6"),
    ]
    got = _resolve_both(users, events, third, at)
    assert (got["u0"]["decision"], got["u0"]["rule"]) == ("deny", "explicit")
    assert got["u0"]["since"] == datetime(2025, 1, 3, tzinfo=UTC)
    assert (got["u1"]["decision"], got["u1"]["rule"]) == ("deny", "gpc")
    assert got["u1"]["since"] == datetime(2025, 1, 5, tzinfo=UTC)


def test_minors_and_unknown_ages_follow_the_purpose_at_the_cutoff() -> None:
    at = datetime(2025, 6, 1, 12, tzinfo=UTC)
    cutoff = minor_birth_cutoff(at, 16)
    users = [
        SubjectFacts("adult-at-cutoff", None, cutoff),
        SubjectFacts("minor-after-cutoff", None, cutoff + timedelta(days=1)),
        SubjectFacts("unknown", None, None),
    ]
    expected = {
        "strict": {
            "adult-at-cutoff": ("allow", "default"),
            "minor-after-cutoff": ("deny", "minor"),
            "unknown": ("deny", "unknown_age"),
        },
        "open": {
            "adult-at-cutoff": ("deny", "default"),
            "minor-after-cutoff": ("deny", "default"),
            "unknown": ("deny", "default"),
        },
    }
    for purpose, answers in expected.items():
        got = _resolve_both(users, [], purpose, at, SWITCHES)
        for subject in users:
            scalar = resolve_consent(SWITCHES, subject, purpose, at, None)
            row = got[subject.user_id]
            assert (row["decision"], row["rule"]) == answers[subject.user_id]
            assert (row["decision"], row["rule"]) == (scalar.decision.value, scalar.rule.value)
    # An explicit allow stands for a minor where minors are allowed, not where they are not.
    events = [
        (u.user_id, p, Choice.ALLOW, datetime(2025, 1, 1, tzinfo=UTC), "settings", f"e-{p}-{i}")
        for i, u in enumerate(users)
        for p in ("strict", "open")
    ]
    opened = _resolve_both(users, events, "open", at, SWITCHES)
    assert {u: (r["decision"], r["rule"]) for u, r in opened.items()} == {
        u.user_id: ("allow", "explicit") for u in users
    }
    strict = _resolve_both(users, events, "strict", at, SWITCHES)
    assert (strict["minor-after-cutoff"]["decision"], strict["unknown"]["rule"]) == (
        "deny",
        "unknown_age",
    )
    # A blocked minor or unknown age is denied since the policy version took effect, not
    # since their own choice: the event does not decide, so it does not date the decision.
    effective = datetime(2024, 1, 1, tzinfo=UTC)
    assert strict["minor-after-cutoff"]["since"] == effective
    assert strict["unknown"]["since"] == effective
    assert strict["adult-at-cutoff"]["since"] == datetime(2025, 1, 1, tzinfo=UTC)
    latest = {
        u.user_id: LatestChoice(Choice.ALLOW, datetime(2025, 1, 1, tzinfo=UTC), "settings", "e")
        for u in users
    }
    for subject in users:
        scalar = resolve_consent(SWITCHES, subject, "strict", at, latest[subject.user_id])
        row = strict[subject.user_id]
        assert (row["decision"], row["rule"], row["since"]) == (
            scalar.decision.value,
            scalar.rule.value,
            scalar.since,
        )


def test_the_columns_have_one_type_whatever_rule_decides() -> None:
    """Before the first version, with a purpose absent, and in the full CASE: the same
    schema, so batches of different instants concatenate and write alike."""
    users = [SubjectFacts("u0", "DE", date(1990, 1, 1))]
    cases = [
        (POLICY, "ai_training_first_party", datetime(2022, 1, 1, tzinfo=UTC)),
        (POLICY, "nope", datetime(2025, 3, 1, tzinfo=UTC)),
        (POLICY, "ai_training_third_party", datetime(2025, 3, 1, tzinfo=UTC)),
        (POLICY, "ai_training_first_party", datetime(2024, 6, 1, tzinfo=UTC)),
    ]
    users_table = ibis.memtable(
        pa.table(
            {
                "user_id": ["u0"],
                "region": pa.array(["DE"], pa.string()),
                "birth_date": pa.array([users[0].birth_date], pa.date32()),
            }
        )
    )
    events_table = ibis.memtable(
        pa.table(
            {
                "user_id": pa.array([], pa.string()),
                "purpose": pa.array([], pa.string()),
                "choice": pa.array([], pa.string()),
                "at": pa.array([], pa.timestamp("us", tz="UTC")),
                "source": pa.array([], pa.string()),
                "event_id": pa.array([], pa.string()),
            }
        )
    )
    schemas = set()
    for policy, purpose, at in cases:
        table = BACKEND.to_pyarrow(
            resolve_consent_bulk(policy, users_table, events_table, purpose, at)
        )
        schemas.add(
            tuple(
                (f.name, str(f.type).replace("timestamp[us, tz=UTC]", "ts")) for f in table.schema
            )
        )
    assert schemas == {
        (
            ("user_id", "string"),
            ("decision", "string"),
            ("rule", "string"),
            ("policy_version", "string"),
            ("since", "ts"),
        )
    }
