"""Errors shared by every capability, and the exit codes the CLI maps them to.

Exit codes: 0 ok, 1 failure, 2 bad input.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EXIT_BAD_INPUT", "EXIT_FAILURE", "EXIT_OK", "BadInput", "ConsentryError", "Problem"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class ConsentryError(Exception):
    """A failure the user can act on; the CLI prints the message and exits 1."""

    exit_code = EXIT_FAILURE


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in one input: where it is (file, row or line) and what is wrong."""

    location: str
    """The input's name: a file path, a YAML file, a request body."""
    row: int | None
    """1-based row (data row for tables, line for YAML); None when the whole input is wrong."""
    field: str | None
    """The column, YAML path or argument at fault; None when no single field is."""
    message: str

    def __str__(self) -> str:
        where = self.location if self.row is None else f"{self.location}:{self.row}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class BadInput(ConsentryError):  # noqa: N818 - reads as the condition, like KeyError
    """Input that cannot be accepted; nothing was written. The CLI exits 2."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(location="input", row=None, field=None, message=problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = problems
        super().__init__("\n".join(str(p) for p in problems))
