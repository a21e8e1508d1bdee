"""Retention rules in policy files: bad rules are refused by `policy validate` with the YAML
path and line; the shipped X file states both versions' rules."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consentry.cli import common
from consentry.cli.main import app
from consentry.policy import Duration, load_policy
from consentry.policy.model import ANONYMISABLE_FIELDS
from consentry.retention import LAKE_CATEGORIES
from consentry.schema import TABLES

HEAD = """\
versions:
  - version: v1
    effective_from: 2024-01-01T00:00:00Z
    purposes:
      - key: ai_training
        title: AI training
        description: Others train AI models on your posts.
        default: allow
        minors: deny
        unknown_age: deny
        gpc: true
    retention:
"""


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common.console, "width", 250)
    monkeypatch.setattr(common.err_console, "width", 250)


def _validate(tmp_path: Path, rules: str) -> tuple[int, str]:
    path = tmp_path / "p.yaml"
    path.write_text(HEAD + textwrap.indent(textwrap.dedent(rules), "      "), encoding="utf-8")
    result = CliRunner().invoke(app, ["policy", "validate", str(path)])
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    ("rules", "where", "message"),
    [
        # unknown trigger
        (
            "posts:\n  keep_until_bored: 1 year\n",
            ":14: versions[0].retention.posts.keep_until_bored",
            "unknown field",
        ),
        # a trigger that exists but not for this category
        (
            "audit:\n  after_account_deleted: 1 year\n",
            ":14: versions[0].retention.audit.after_account_deleted",
            "does not apply to audit",
        ),
        # negative duration
        (
            "profile:\n  max_age: -18 months\n",
            ":14: versions[0].retention.profile.max_age",
            "negative",
        ),
        (
            "posts:\n  after_post_deleted: -P1D\n",
            ":14: versions[0].retention.posts.after_post_deleted",
            "negative",
        ),
        # unknown category
        ("dms:\n  max_age: 1 year\n", ":13: versions[0].retention.dms", "'posts', 'profile'"),
        # anonymising what cannot be anonymised
        (
            "posts:\n  max_age: 1 year\n  action: anonymise\n  fields: [post_id]\n",
            ":16: versions[0].retention.posts.fields[0]",
            "cannot be anonymised",
        ),
        (
            "audit:\n  max_age: 1 year\n  action: anonymise\n  fields: [payload]\n",
            ":15: versions[0].retention.audit.action",
            "only be deleted",
        ),
    ],
)
def test_bad_rules_are_refused_with_their_yaml_path(
    tmp_path: Path, rules: str, where: str, message: str
) -> None:
    code, err = _validate(tmp_path, rules)
    assert code == 2, err
    assert f"p.yaml{where}:" in err
    assert message in err


def test_good_rules_validate(tmp_path: Path) -> None:
    code, err = _validate(
        tmp_path,
        """\
        posts: {while_account_active: true, after_post_deleted: 0 days}
        profile: {max_age: 18 months, action: anonymise, fields: [birth_date, region]}
        consent_evidence: {after_account_deleted: 6 years, action: anonymise, fields: [user_id]}
        access_events: {max_age: 2 years, action: anonymise, fields: [credential, endpoint]}
        deliveries: {max_age: 6 years}
        audit: {max_age: 10 years}
        """,
    )
    assert code == 0, err


def test_every_anonymisable_field_is_a_column_of_its_table() -> None:
    for category, fields in ANONYMISABLE_FIELDS.items():
        columns = TABLES[LAKE_CATEGORIES[category]]
        for name, how in fields.items():
            assert name in columns.column_names
            assert how in ("null", "hash")
            # `null` only where the lake allows nulls; `hash` only for text.
            spec = columns.column(name)
            assert spec.nullable if how == "null" else spec.kind == "string"


def test_shipped_policy_states_both_versions_rules() -> None:
    policy = load_policy(Path(__file__).parents[2] / "src/consentry/policies/x-2024.yaml")
    old, new = policy.get("2023-09-29"), policy.get("2024-11-15")
    assert old.retention["profile"].max_age == Duration(months=18)
    assert old.retention["profile"].action == "delete"
    posts = new.retention["posts"]
    assert posts.while_account_active is True
    assert posts.after_post_deleted == Duration()
    assert new.retention["profile"].max_age is None
    assert new.retention["access_events"].fields == ["credential"]
