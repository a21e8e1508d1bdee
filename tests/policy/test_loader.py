"""Loading policy files: every problem is reported with its file, line and YAML path."""

from __future__ import annotations

import hashlib
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from consentry.errors import BadInput, Problem
from consentry.policy import Choice, load_policy, parse_policy

PURPOSE = """\
      - key: ai_training
        title: AI training
        description: Others train AI models on your posts.
        default: allow
        minors: deny
        unknown_age: deny
        gpc: true
"""


def _doc(purposes: str = PURPOSE, extra: str = "", start: str = "2024-01-01T00:00:00Z") -> str:
    return (
        "versions:\n"
        "  - version: v1\n"
        f"    effective_from: {start}\n"
        "    purposes:\n" + purposes + textwrap.indent(textwrap.dedent(extra), "    ")
    )


def _problems(text: str, name: str = "p.yaml") -> list[Problem]:
    with pytest.raises(BadInput) as info:
        parse_policy(text, source=name)
    return info.value.problems


def _one(text: str) -> Problem:
    problems = _problems(text)
    assert len(problems) == 1, problems
    return problems[0]


def test_minimal_file_loads_with_defaults() -> None:
    policy = parse_policy(_doc(), source="p.yaml")
    (version,) = policy.versions
    purpose = version.purposes[0]
    assert purpose.default is Choice.ALLOW
    assert purpose.region_defaults == {}
    assert version.scraping is None
    assert version.revocation_sla.describe() == "30 days"
    assert version.retention_gaps() == [
        "posts",
        "profile",
        "consent_evidence",
        "access_events",
        "deliveries",
        "audit",
    ]
    assert policy.content_sha256 == hashlib.sha256(_doc().encode()).hexdigest()


def test_bad_choice_names_line_and_path() -> None:
    problem = _one(_doc(PURPOSE.replace("default: allow", "default: maybe")))
    assert str(problem) == (
        "p.yaml:8: versions[0].purposes[0].default: Input should be 'allow' or 'deny'"
    )


def test_effective_from_needs_an_offset() -> None:
    problem = _one(_doc(start="2024-01-01T00:00:00"))
    assert (problem.row, problem.field) == (3, "versions[0].effective_from")
    assert "timezone" in problem.message
    problem = _one(_doc(start="2024-01-01"))
    assert (problem.row, problem.field) == (3, "versions[0].effective_from")


def test_offsets_are_converted_to_utc() -> None:
    policy = parse_policy(_doc(start="2024-01-01T01:00:00+01:00"), source="p.yaml")
    assert policy.versions[0].effective_from.isoformat() == "2024-01-01T00:00:00+00:00"


def test_missing_field_points_at_its_parent() -> None:
    problem = _one(_doc(PURPOSE.replace("        gpc: true\n", "")))
    assert str(problem) == "p.yaml:5: versions[0].purposes[0].gpc: required field is missing"


def test_unknown_retention_category_trigger_and_negative_duration() -> None:
    text = _doc(
        extra="""\
        retention:
          forever:
            max_age: 1 year
          posts:
            keep_for: 1 year
          profile:
            max_age: -P18M
        """
    )
    problems = _problems(text)
    assert [(p.row, p.field) for p in problems] == [
        (13, "versions[0].retention.forever"),
        (16, "versions[0].retention.posts.keep_for"),
        (18, "versions[0].retention.profile.max_age"),
    ]
    assert "'posts', 'profile'" in problems[0].message
    assert problems[1].message.startswith("unknown field 'keep_for'; expected one of: max_age,")
    assert "negative" in problems[2].message


def test_retention_rules_must_fit_their_category() -> None:
    problem = _one(_doc(extra="retention:\n  profile:\n    after_post_deleted: 30 days\n"))
    assert (problem.row, problem.field) == (14, "versions[0].retention.profile.after_post_deleted")
    assert "does not apply to profile" in problem.message
    problem = _one(_doc(extra="retention:\n  audit:\n    while_account_active: true\n"))
    assert problem.field == "versions[0].retention.audit.while_account_active"


@pytest.mark.parametrize(
    ("rule", "field", "message"),
    [
        ("action: delete", "versions[0].retention.posts", "needs an end"),
        ("while_account_active: false", "versions[0].retention.posts.while_account_active", "true"),
        ("max_age: 0 days", "versions[0].retention.posts.max_age", "longer than 0"),
        (
            "max_age: 1 year\n    action: anonymise",
            "versions[0].retention.posts.fields",
            "needs the fields",
        ),
        ("max_age: 1 year\n    fields: [text]", "versions[0].retention.posts.fields", "only apply"),
        (
            "max_age: 1 year\n    action: anonymise\n    fields: [text, nickname]",
            "versions[0].retention.posts.fields[1]",
            "not a column of posts",
        ),
        ("max_age: 1 year\n    action: shred", "versions[0].retention.posts.action", "'delete'"),
    ],
)
def test_retention_rule_problems(rule: str, field: str, message: str) -> None:
    problem = _one(_doc(extra=f"retention:\n  posts:\n    {rule}\n"))
    assert problem.field == field
    assert message in problem.message


def test_triggers_may_combine_and_the_earliest_end_wins() -> None:
    text = _doc(
        extra="""\
        retention:
          posts:
            while_account_active: true
            after_account_deleted: 30 days
            after_post_deleted: 7 days
            max_age: 5 years
        """
    )
    rule = parse_policy(text, source="p.yaml").versions[0].retention["posts"]
    assert rule.triggers == (
        "max_age",
        "while_account_active",
        "after_account_deleted",
        "after_post_deleted",
    )
    from datetime import UTC, datetime

    created = datetime(2020, 1, 1, tzinfo=UTC)
    assert rule.expires_at(created) == datetime(2025, 1, 1, tzinfo=UTC)
    assert rule.expires_at(
        created, account_deleted_at=datetime(2021, 1, 1, tzinfo=UTC)
    ) == datetime(2021, 1, 31, tzinfo=UTC)
    assert rule.expires_at(
        created,
        account_deleted_at=datetime(2021, 1, 1, tzinfo=UTC),
        post_deleted_at=datetime(2020, 6, 1, tzinfo=UTC),
    ) == datetime(2020, 6, 8, tzinfo=UTC)


def test_region_codes_are_checked_and_norway_stays_norway() -> None:
    ok = (
        PURPOSE
        + "        region_defaults:\n          NO: deny\n          UK: deny\n          EU: deny\n"
    )
    purpose = parse_policy(_doc(ok), source="p.yaml").versions[0].purposes[0]
    assert purpose.region_defaults == {"NO": Choice.DENY, "UK": Choice.DENY, "EU": Choice.DENY}
    lower = _one(_doc(PURPOSE + "        region_defaults:\n          de: deny\n"))
    assert (lower.row, lower.field) == (13, "versions[0].purposes[0].region_defaults.de")
    assert "write 'DE'" in lower.message
    unknown = _one(_doc(PURPOSE + "        region_defaults:\n          EL: deny\n"))
    assert unknown.field == "versions[0].purposes[0].region_defaults.EL"
    assert "unknown region 'EL'" in unknown.message


def test_purpose_keys_are_snake_case_and_unique() -> None:
    problem = _one(_doc(PURPOSE + PURPOSE))
    assert str(problem) == (
        "p.yaml:12: versions[0].purposes[1].key: purpose key 'ai_training' is used twice"
    )
    problem = _one(_doc(PURPOSE.replace("key: ai_training", "key: AI-Training")))
    assert (problem.row, problem.field) == (5, "versions[0].purposes[0].key")
    assert "snake_case" in problem.message


def test_aipref_categories_are_checked() -> None:
    problem = _one(_doc(PURPOSE + "        aipref: [train-ai, crawl]\n"))
    assert problem.field == "versions[0].purposes[0].aipref[1]"
    assert "'train-ai', 'search' or 'ai-use'" in problem.message
    problem = _one(_doc(PURPOSE + "        aipref: [search, search]\n"))
    assert (problem.field, problem.message) == (
        "versions[0].purposes[0].aipref[1]",
        "'search' is listed twice",
    )


def test_scraping_terms() -> None:
    good = """\
        scraping:
          threshold_posts: 1_000_000
          amount_per_million: 15000.10
          currency: EUR
        """
    terms = parse_policy(_doc(extra=good), source="p.yaml").versions[0].scraping
    assert terms is not None
    assert terms.threshold_posts == 1_000_000
    assert terms.amount_per_million == Decimal("15000.10")
    assert (terms.window.total_seconds(), terms.rounding, terms.count) == (
        86_400,
        "pro_rata",
        "accesses",
    )
    bad = """\
        scraping:
          threshold_posts: 0
          window: 1 month
          amount_per_million: 15000
          currency: usd
          rounding: nearest
        """
    problems = _problems(_doc(extra=bad))
    assert [(p.row, p.field) for p in problems] == [
        (13, "versions[0].scraping.threshold_posts"),
        (14, "versions[0].scraping.window"),
        (16, "versions[0].scraping.currency"),
        (17, "versions[0].scraping.rounding"),
    ]
    assert "fixed, positive" in problems[1].message
    assert "ISO 4217" in problems[2].message


def test_versions_are_unique_and_sorted() -> None:
    second = _doc(start="2023-01-01T00:00:00Z").removeprefix("versions:\n").replace("v1", "v0")
    policy = parse_policy(_doc() + second, source="p.yaml")
    assert [v.version for v in policy.versions] == ["v0", "v1"]
    same_name = _doc() + _doc(start="2025-01-01T00:00:00Z").removeprefix("versions:\n")
    problem = _one(same_name)
    assert (problem.row, problem.field) == (12, "versions[1].version")
    same_start = _doc() + _doc().removeprefix("versions:\n").replace("v1", "v2")
    problem = _one(same_start)
    assert (problem.row, problem.field) == (13, "versions[1].effective_from")


def test_unknown_top_level_field() -> None:
    problem = _one("platfrom: X\n" + _doc())
    assert str(problem) == (
        "p.yaml:1: platfrom: unknown field 'platfrom'; expected one of: platform, versions"
    )


def test_yaml_syntax_errors_have_lines() -> None:
    problem = _one(_doc() + "    retention: [unclosed\n")
    assert problem.row is not None
    assert problem.row >= 12
    assert problem.message.startswith("YAML:")
    problem = _one("platform: X\nversions: x: y\n")
    assert str(problem) == "p.yaml:2: YAML: mapping values are not allowed here"


def test_duplicate_keys_and_self_aliases_are_refused() -> None:
    problem = _one(
        _doc(PURPOSE.replace("        gpc: true\n", "        gpc: true\n        gpc: false\n"))
    )
    assert (problem.row, problem.field, problem.message) == (
        12,
        "versions[0].purposes[0].gpc",
        "duplicate key",
    )
    problem = _one("versions: &a [*a]\n")
    assert "refers to itself" in problem.message


def test_empty_and_unreadable_files(tmp_path: Path) -> None:
    assert "empty" in _one("").message
    assert "versions" in _one("# only a comment\n").message
    with pytest.raises(BadInput, match="cannot read"):
        load_policy(tmp_path / "missing.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"platform: \xe9\n")
    with pytest.raises(BadInput, match="not UTF-8"):
        load_policy(tmp_path / "latin1.yaml")


def test_several_problems_are_reported_together_in_line_order(tmp_path: Path) -> None:
    text = _doc(
        PURPOSE.replace("default: allow", "default: maybe").replace("gpc: true", "gpc: 7"),
        extra="revocation_sla: soon\n",
    )
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BadInput) as info:
        load_policy(path)
    lines = str(info.value).splitlines()
    assert [line.split(": ")[0] for line in lines] == [f"{path}:8", f"{path}:11", f"{path}:12"]
    assert lines[2].startswith(f"{path}:12: versions[0].revocation_sla: not a duration")
