"""Errors shared by every capability, and the exit codes the CLI maps them to.

Exit codes: 0 ok, 1 failure, 2 bad input.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "EXIT_OK",
    "BadInput",
    "ConsentryError",
    "Problem",
    "did_you_mean",
]

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


def did_you_mean(name: str, known: Iterable[str], *, listed: int = 10) -> str:
    """The hint that ends an "unknown name" message.

    1. Known names close to `name` (difflib ratio >= 0.6), closest first: the closest and
       those nearly as close (within 0.1 of its ratio), at most three — `scraper-alpa`
       gets `did you mean 'scraper-alpha'?`, not every `scraper-…` as well.
    2. Else the known names, sorted, at most `listed` of them: `known: a, b and 3 more`.
    3. Else (nothing is known) the empty string.
    """
    names = sorted(set(known))
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        ratios = [difflib.SequenceMatcher(None, name, c).ratio() for c in close]
        best = [c for c, r in zip(close, ratios, strict=True) if r >= ratios[0] - 0.1]
        return "did you mean " + " or ".join(repr(c) for c in best) + "?"
    if not names:
        return ""
    more = len(names) - listed
    return "known: " + ", ".join(names[:listed]) + (f" and {more:,} more" if more > 0 else "")
