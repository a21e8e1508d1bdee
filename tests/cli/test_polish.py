"""What every command shares: choices in --help, flags, one output option, completion,
counts and money in words, and refusing to run outside a home (docs/cli.md)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from rich.console import Console
from typer.testing import CliRunner

from consentry.cli import common
from consentry.cli.common import Engine, LogFormat, plural
from consentry.cli.keys import KeyKind
from consentry.cli.main import app
from consentry.cli.scraping import Mode, Rounding
from consentry.delivery.keyset import ROTATABLE_KINDS
from consentry.engine import ENGINES
from consentry.observe.logs import LOG_FORMATS
from consentry.scraping.rules import MODES, ROUNDINGS

runner = CliRunner()


def _commands(command: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in (getattr(command, "commands", None) or {}).items():
        if not sub.hidden:
            yield from _commands(sub, (*path, name))


ALL = list(_commands(typer.main.get_command(app), ()))
LEAVES = [(p, c) for p, c in ALL if not getattr(c, "commands", None)]


def _help(path: tuple[str, ...]) -> str:
    result = runner.invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return result.output


# --- choices and flags -----------------------------------------------------------------------


def test_the_choice_enums_are_the_rules_own_lists() -> None:
    assert tuple(Engine) == ENGINES
    assert tuple(Mode) == MODES
    assert tuple(Rounding) == ROUNDINGS
    assert tuple(LogFormat) == LOG_FORMATS
    assert tuple(KeyKind) == ROTATABLE_KINDS


def _option(path: tuple[str, ...], name: str) -> Any:
    command = dict(ALL)[path]
    [param] = [p for p in command.params if name in p.opts]
    return param


@pytest.mark.parametrize(
    ("path", "name", "choices"),
    [
        (("deliver",), "--engine", ENGINES),
        (("explain",), "--engine", ENGINES),
        (("consent", "resolve"), "--engine", ENGINES),
        (("retention", "plan"), "--engine", ENGINES),
        (("scraping", "assess"), "--engine", ENGINES),
        (("scraping", "assess"), "--mode", MODES),
        (("scraping", "evidence"), "--rounding", ROUNDINGS),
        (("scraping", "meter-replay"), "--backend", ("memory", "redis")),
        (("report", "transparency"), "--format", ("md", "html", "json")),
        (("report", "processing"), "--format", ("md", "json", "html")),
        (("serve",), "--log-level", ("debug", "info", "warning", "error")),
        (("serve",), "--log-format", LOG_FORMATS),
        (("keys", "rotate"), "--kind", ROTATABLE_KINDS),
        ((), "--log-format", LOG_FORMATS),
    ],
)
def test_options_with_choices_offer_exactly_them(
    path: tuple[str, ...], name: str, choices: tuple[str, ...]
) -> None:
    assert tuple(_option(path, name).type.choices) == choices


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        (("deliver",), "<duckdb|spark>"),
        (("scraping", "assess"), "<earliest|max_total>"),
        ((), "<text|json>"),
    ],
)
def test_help_lists_the_choices(path: tuple[str, ...], shown: str) -> None:
    assert shown in _help(path)


def test_a_value_outside_the_choices_is_refused_with_exit_2(home: Path) -> None:
    result = runner.invoke(app, ["--home", str(home), "scraping", "assess", "--mode", "densest"])
    assert result.exit_code == 2
    assert "'densest' is not one of 'earliest', 'max_total'" in " ".join(result.stderr.split())


def test_no_help_shows_a_boolean_metavar() -> None:
    """Flags are flags: `--json`, not `--json <bool>` (nor BOOLEAN, the plain-click spelling)."""
    for path, _ in ALL:
        text = _help(path)
        assert not re.search(r"<bool|BOOLEAN|\bbool\b", text), (path, text)


def test_a_flag_on_by_default_has_its_no_form() -> None:
    text = _help(("demo", "generate"))
    assert "--load" in text
    assert "--no-load" in text


# --- one output option -----------------------------------------------------------------------

OUTPUT_NAMES = {"--out", "--output", "--dest", "--destination", "--out-file", "-o"}


def test_every_output_option_is_out_or_o() -> None:
    """Every visible option that names an output is exactly `--out` / `-o`; the old
    `--output` survives only hidden."""
    found = []
    for path, command in LEAVES:
        for param in command.params:
            names = set(param.opts) | set(getattr(param, "secondary_opts", []))
            if param.param_type_name != "option" or not names & OUTPUT_NAMES:
                continue
            if param.hidden:
                assert names == {"--output"}, (path, names)
                continue
            assert names == {"--out", "-o"}, (path, names)
            found.append(" ".join(path))
    assert {
        "demo generate",
        "consent resolve",
        "retention plan",
        "report processing",
        "report transparency",
        "audit checkpoint",
        "scraping evidence",
        "signals export",
    } <= set(found)


def test_the_old_output_spelling_still_works_with_a_warning(home: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["--home", str(home), "init"]).exit_code == 0
    saved = tmp_path / "cp.txt"
    result = runner.invoke(
        app, ["--home", str(home), "audit", "checkpoint", "--output", str(saved)]
    )
    assert result.exit_code == 0, result.output
    assert saved.read_text() == result.stdout
    assert "--output is deprecated; use --out" in result.stderr
    both = runner.invoke(
        app,
        ["--home", str(home), "audit", "checkpoint", "-o", str(saved), "--output", "other"],
    )
    assert both.exit_code == 2
    assert "give --out or --output, not both" in both.stderr


# --- progress ---------------------------------------------------------------------------------


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """stderr as a terminal, so progress bars are drawn (into the returned buffer)."""
    screen = io.StringIO()
    monkeypatch.setattr(common, "err_console", Console(file=screen, force_terminal=True))
    return screen


def test_long_commands_draw_progress_on_a_terminal(
    home: Path, tmp_path: Path, terminal: io.StringIO
) -> None:
    def cli(*args: str) -> str:
        result = runner.invoke(app, ["--home", str(home), *args])
        assert result.exit_code == 0, result.output
        return result.stdout

    cli("init")
    assert cli("audit", "verify").startswith("ok: 2 leaves")  # no blank line from the bar
    assert "verifying the audit log" in terminal.getvalue()
    plan = tmp_path / "plan.json"
    cli("retention", "plan", "-o", str(plan))
    assert "verification: 0 records left to purge" in cli("retention", "apply", str(plan))
    assert "re-deriving the plan's candidates" in terminal.getvalue()


def test_no_progress_is_drawn_when_stderr_is_not_a_terminal(home: Path) -> None:
    assert runner.invoke(app, ["--home", str(home), "init"]).exit_code == 0
    result = runner.invoke(app, ["--home", str(home), "audit", "verify"])
    assert result.exit_code == 0
    assert result.stderr == ""


# --- shell completion ------------------------------------------------------------------------


def test_completion_can_be_installed_and_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _help(())
    assert "--install-completion" in text
    assert "--show-completion" in text
    # Typer detects the shell from the process tree; name it instead, so the test does not
    # depend on what runs pytest.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    shown = runner.invoke(app, ["--show-completion", "bash"])
    assert shown.exit_code == 0
    assert "_CONSENTRY_COMPLETE=complete_bash" in shown.output


def test_completion_offers_the_choices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [],
        env={
            "_CONSENTRY_COMPLETE": "complete_bash",
            "COMP_WORDS": "consentry scraping assess --engine ",
            "COMP_CWORD": "4",
        },
        prog_name="consentry",
    )
    assert result.exit_code == 0
    assert result.output.split() == ["duckdb", "spark"]
    assert list(tmp_path.iterdir()) == []  # completing needs no home and makes none


# --- counts and money ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "words"),
    [
        (0, "0 deliveries"),
        (1, "1 delivery"),
        (2, "2 deliveries"),
        (1_204, "1,204 deliveries"),
    ],
)
def test_plural_with_an_irregular_plural(count: int, words: str) -> None:
    assert plural(count, "delivery", "deliveries") == words


def test_plural_adds_an_s_by_default() -> None:
    assert (plural(1, "post"), plural(3, "post")) == ("1 post", "3 posts")


# --- outside a home --------------------------------------------------------------------------


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with no home in it and no CONSENTRY_HOME."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("CONSENTRY_HOME", raising=False)
    return cwd


@pytest.mark.parametrize(
    "args",
    [
        ["keys", "list"],
        ["licensee", "list"],
        ["doctor"],
        ["audit", "verify"],
        ["retention", "status"],
        ["demo", "cycle"],
        ["scraping", "assess", "--events", "x.csv", "--entities", "y.csv"],
    ],
)
def test_outside_a_home_a_command_says_how_to_point_at_one(
    elsewhere: Path, args: list[str]
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert f"no Consentry home here ({elsewhere / '.consentry'} does not exist)" in message
    assert "--home DIR or CONSENTRY_HOME=DIR" in message
    assert "`consentry init`" in message
    assert list(elsewhere.iterdir()) == []  # no empty home was created


def test_a_missing_home_from_the_option_or_the_environment_is_named(
    elsewhere: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "typo"
    result = runner.invoke(app, ["--home", str(missing), "keys", "list"])
    assert result.exit_code == 2
    assert f"no Consentry home at {missing} (from --home)" in " ".join(result.stderr.split())
    result = runner.invoke(app, ["keys", "list"], env={"CONSENTRY_HOME": str(missing)})
    assert result.exit_code == 2
    assert f"no Consentry home at {missing} (from CONSENTRY_HOME)" in " ".join(
        result.stderr.split()
    )
    assert not missing.exists()


def test_init_is_the_command_that_creates_a_home(elsewhere: Path) -> None:
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert (elsewhere / ".consentry" / "consentry.db").is_file()
    listed = runner.invoke(app, ["keys", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout)["keys"]


def test_commands_that_need_no_home_run_anywhere(elsewhere: Path, tmp_path: Path) -> None:
    shown = runner.invoke(app, ["policy", "show", "--at", "2025-01-01", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["version"]["version"] == "2024-11-15"
    assert runner.invoke(app, ["policy", "diff", "2023-09-29", "2024-11-15"]).exit_code == 0
    # A licensee checks a delivery with the published keys, without a home of its own.
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": []}))
    checked = runner.invoke(
        app, ["verify-delivery", str(tmp_path / "nothing"), "--keys", str(keys)]
    )
    assert "no Consentry home" not in checked.output
    assert list(elsewhere.iterdir()) == []
