"""Documentation is part of the product: every command, option, setting, policy field and
table field must be mentioned in docs/*.md, or this test names what is missing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer.main

from consentry.cli.main import app
from consentry.policy import POLICY_FIELDS
from consentry.schema import TABLES
from consentry.settings import ENVIRONMENT_VARIABLES

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _docs_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(DOCS.rglob("*.md")))


# typer vendors its own click, so walk commands by shape rather than by click's classes.
def _commands(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for name, sub in subcommands.items():
            if sub.hidden:
                continue
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def _all_commands() -> list[tuple[str, Any]]:
    return list(_commands(typer.main.get_command(app), ("consentry",)))


def test_there_are_commands_to_check() -> None:
    paths = {p for p, _ in _all_commands()}
    assert {"consentry init", "consentry serve", "consentry policy validate"} <= paths


def test_every_cli_command_is_documented() -> None:
    text = _docs_text()
    missing = [path for path, _ in _all_commands() if path not in text]
    assert not missing, f"undocumented CLI commands: {missing}"


def test_every_cli_option_is_documented() -> None:
    text = _docs_text()
    missing = []
    for path, command in _all_commands():
        for param in command.params:
            if param.param_type_name != "option" or getattr(param, "hidden", False):
                continue
            longs = [o for o in param.opts if o.startswith("--")]
            if longs and not any(re.search(re.escape(o) + r"\b", text) for o in longs):
                missing.append(f"{path} {longs[0]}")
    assert not missing, f"undocumented CLI options: {missing}"


def test_every_setting_is_documented() -> None:
    text = (DOCS / "settings.md").read_text(encoding="utf-8")
    missing = [name for name in ENVIRONMENT_VARIABLES if name not in text]
    assert not missing, f"undocumented settings in docs/settings.md: {missing}"


def test_every_policy_field_is_documented() -> None:
    text = (DOCS / "policy.md").read_text(encoding="utf-8")
    missing = [f for f in sorted(POLICY_FIELDS) if f"`{f}`" not in text]
    assert not missing, f"undocumented policy fields in docs/policy.md: {missing}"


def test_every_table_field_is_documented() -> None:
    text = (DOCS / "tables.md").read_text(encoding="utf-8")
    missing = []
    for table in TABLES.values():
        section = re.search(
            rf"^#+ [^\n]*`{table.name}`[^\n]*$(.*?)(?=^#+ |\Z)",
            text,
            flags=re.MULTILINE | re.DOTALL,
        )
        if section is None:
            missing.append(table.name)
            continue
        missing += [
            f"{table.name}.{c.name}" for c in table.columns if f"`{c.name}`" not in section.group(1)
        ]
    assert not missing, f"undocumented tables or fields in docs/tables.md: {missing}"


def test_every_audit_event_type_and_field_is_documented() -> None:
    """docs/audit.md's event sections are exactly what the event classes generate: every
    type has a section, every field a typed, explained line, and nothing else is there."""
    from consentry.audit.event_types import AUDIT_EVENT_CLASSES, field_meanings, markdown

    text = (DOCS / "audit.md").read_text(encoding="utf-8")
    found = re.search(
        r"<!-- BEGIN event types.*?-->\n\n(.*?)\n<!-- END event types -->", text, re.S
    )
    assert found is not None, "docs/audit.md lost its generated event types section"
    assert found.group(1) == markdown(), (
        "docs/audit.md differs from consentry.audit.event_types: regenerate the section with "
        "`python -m consentry.audit.event_types`"
    )
    for event_type, cls in AUDIT_EVENT_CLASSES.items():
        assert cls.__doc__, f"{event_type} has no docstring"
        assert all(meaning for _, meaning in field_meanings(cls)), event_type
