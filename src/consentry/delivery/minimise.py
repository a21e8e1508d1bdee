"""Minimisation: replace personal identifiers in post texts by typed placeholders.

Six kinds, each with a placeholder (see docs/minimisation.md for the full rules):
`url` `<URL>`, `handle` `<HANDLE>`, `email` `<EMAIL>`, `card` `<CARD>`, `ip` `<IP>`,
`phone` `<PHONE>`. They are applied in that order, so a URL's `@name` or an e-mail address
is never half-replaced by a later kind, and card numbers and IP addresses are gone before
the looser phone shapes look at the digits that are left.

The rules are written once, as data (`_RULES`), and run two ways that must agree:

- `minimise_expr`: an Ibis expression, vectorised in the engine (DuckDB or PySpark). The
  patterns use only the common subset of RE2 (DuckDB) and `java.util.regex` (Spark): no
  look-around, no back-references, explicit ASCII classes instead of `\\d`, `\\w`, `\\s`, `\\b`
  (whose meanings differ between the two), no `(?i)`.
- `minimise_text`: the same rules with Python's `re`, for `consentry explain` and as the
  oracle the tests compare the engine with.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from consentry.errors import BadInput, Problem

if TYPE_CHECKING:
    import ibis.expr.types as ir

__all__ = [
    "KINDS",
    "PLACEHOLDERS",
    "CorpusLine",
    "CorpusScores",
    "KindScore",
    "MinimisationConfig",
    "corpus_scores",
    "load_corpus",
    "minimise_expr",
    "minimise_text",
    "placeholder_counts",
]

KINDS: tuple[str, ...] = ("url", "handle", "email", "card", "ip", "phone")
"""Every kind of identifier, in the order the rules are applied."""

PLACEHOLDERS: Mapping[str, str] = {
    "url": "<URL>",
    "handle": "<HANDLE>",
    "email": "<EMAIL>",
    "card": "<CARD>",
    "ip": "<IP>",
    "phone": "<PHONE>",
}
"""The placeholder each kind is replaced by."""

# ---------------------------------------------------------------------------------------
# Patterns. Every one must mean the same in RE2, Java and Python `re` (see the module doc).
# The engine's markers: non-characters U+FDD0-U+FDDF, removed from every input first.
_START, _END, _AREA, _TWICE, _ONCE, _UNIT, _SHAPE = (chr(0xFDD0 + i) for i in range(7))
_MARKERS = f"[{_START}-{chr(0xFDD0 + 15)}]"
_REST = f"[^{_END}]*"  # the rest of a core, whatever it is (cores never hold a marker)

# Letters beyond ASCII: Latin-1 and Latin Extended-A/B, written as literal characters
# because the three engines disagree on `\x{..}`, `\u....` and `\p{L}`.
_LATIN = "À-ÖØ-öø-ɏ"

# URLs: only those with a query string or a user path are replaced.
_SCHEME = "(?:[Hh][Tt][Tt][Pp][Ss]?://|[Ww][Ww][Ww][.])"
_HOST = "[A-Za-z0-9-]+(?:[.][A-Za-z0-9-]+)*(?::[0-9]{1,5})?"
_SEGMENT = "[A-Za-z0-9._~!$&'()*+,;=:%-]*"
_URL_CHAR = "[A-Za-z0-9._~:/?#@!$&'()*+,;=%-]"
# A URL never ends on punctuation that usually closes the sentence around it.
_URL_END = "[A-Za-z0-9_~/#@$&*+=%-]"
_USER_PATH = "(?:[Uu]sers?/|[Uu]/|[Ii]n/|[Pp]rofiles?/|[Mm]embers?/|[Pp]eople/|@|~)"
_URL = (
    f"{_SCHEME}{_HOST}(?:(?:/{_SEGMENT})*[?]{_URL_CHAR}*{_URL_END}"
    f"|(?:/{_SEGMENT})*/{_USER_PATH}[A-Za-z0-9_](?:{_URL_CHAR}*{_URL_END})?)"
)

_DOMAIN = "[A-Za-z0-9-]+(?:[.][A-Za-z0-9-]+)*[.][A-Za-z]{2,}"
_EMAIL = f"[A-Za-z0-9{_LATIN}._%+-]+@{_DOMAIN}"
# A handle starts with a letter or `_` (so "@2pm" is a time); a fediverse handle may carry
# its server (`@name@server.example`).
_HANDLE = f"@[A-Za-z_{_LATIN}][A-Za-z0-9_{_LATIN}]*(?:@{_DOMAIN})?"

# Cards: the usual layouts (4-4-4-1..4, Amex/Diners 4-6-4..5, 13-19 digits in one run),
# bounded so that two cards one space apart stay two candidates; the check then wants a
# first digit 1-9, 13-19 digits and a valid Luhn sum.
_CARD = (
    "[0-9]{4}[ -][0-9]{4}[ -][0-9]{4}[ -][0-9]{1,4}|[0-9]{4}[ -][0-9]{6}[ -][0-9]{4,5}|[0-9]{13,19}"
)

_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = f"{_OCTET}(?:[.]{_OCTET}){{3}}"
_H = "[0-9A-Fa-f]{1,4}"
_IPV6 = (
    f"(?:(?:{_H}:){{7}}{_H}"
    f"|(?:{_H}:){{1,7}}:"
    f"|(?:{_H}:){{1,6}}:{_H}"
    f"|(?:{_H}:){{1,5}}(?::{_H}){{1,2}}"
    f"|(?:{_H}:){{1,4}}(?::{_H}){{1,3}}"
    f"|(?:{_H}:){{1,3}}(?::{_H}){{1,4}}"
    f"|(?:{_H}:){{1,2}}(?::{_H}){{1,5}}"
    f"|{_H}:(?::{_H}){{1,6}}"
    f"|:(?::{_H}){{1,7}}"
    f"|(?:{_H}:){{6}}{_IPV4}"
    f"|::(?:[Ff]{{4}}(?::0{{1,4}})?:)?{_IPV4})"
)
# Candidates are maximal runs, so the check sees the whole run: "1.2.3.4.5" is one
# candidate (not an IP), never "1.2.3.4" followed by ".5".
_IP_CANDIDATE = "[0-9]+(?:[.][0-9]+){3,}|[0-9A-Fa-f]*:[0-9A-Fa-f]*:(?:[0-9A-Fa-f:.]*[0-9A-Fa-f:])?"

# Phones: a run of digits joined by at most two of space . / - ( ); the shapes below decide.
_PHONE = "(?:[+]|[(])?[0-9](?:[ ./()-]{0,2}[0-9])*"
# Groups are separated by exactly one separator, so no digit run can be split two ways
# (Java and Python backtrack; an ambiguous shape would be exponential on long runs).
_PHONE_INTL = "[+][0-9]{1,3}(?:[ .-]?[(][0-9]{1,4}[)])?[ .-]?[0-9]+(?:[ .-][0-9]+)*"
_PHONE_NATIONAL = (
    "(?:[(][0-9]{2,5}[)][ -]?[0-9]{2,8}(?:[ ./-][0-9]{2,8})*"
    "|[0-9]{2,5}(?:[ ./-][0-9]{2,8})+"
    "|1[ .-][0-9]{3}[ .-][0-9]{3}[ .-][0-9]{4})"  # North American 1-800-555-0199
)
# Digit runs that have a phone's shape but are something else (whole-core shapes).
_NOT_PHONE = (
    f"[0-9]{{4}}[./-][0-9]{{1,2}}[./-][0-9]{{1,2}}(?:[ ]{_REST})?",  # ISO date [+ more]
    f"[0-9]{{1,2}}[./-][0-9]{{1,2}}[./-][0-9]{{2,4}}(?:[ ]{_REST})?",  # day-month-year
    "[0-9]{1,3}(?:[.][0-9]{3}){2,}",  # thousands separated by dots: 12.345.678
    f"(?:19|20)[0-9]{{2}}-{_REST}",  # a year, a dash and more: order 2024-000123
)
# A card: first digit 1-9, at most five groups, 13-19 digits (and a valid Luhn sum).
_CARD_SHAPE = "[1-9][0-9]*(?:[ -][0-9]+){0,4}"


@dataclass(frozen=True, slots=True)
class _Shape:
    """A core is of this shape if it fully matches `pattern` and has so many ASCII digits."""

    pattern: str
    min_digits: int = 0
    max_digits: int = 1_000_000


@dataclass(frozen=True, slots=True)
class _Rule:
    """One kind's rule.

    1. `pattern` finds candidates. Plain rules (`before` is None) replace every match.
    2. Checked rules find `(?:^|[^before])core`: the core must not follow a character of
       the class `before` (what look-behind would say, which RE2 lacks). The consumed
       character is kept. With `digit_after` False, a core followed by a digit is no
       candidate either (what look-ahead would say).
    3. The core is replaced when it has none of `not_shapes`, one of `shapes` (fully
       matching, digit count in range; no shapes: always) and, with `luhn`, a valid Luhn
       sum. Shapes of one rule must be disjoint (the engine retags a core by its shape).
    """

    kind: str
    pattern: str
    before: str | None = None
    shapes: tuple[_Shape, ...] = ()
    not_shapes: tuple[str, ...] = ()
    luhn: bool = False
    digit_after: bool = True
    """Whether a digit may follow the core (False: such a core is no candidate)."""

    @property
    def search(self) -> str:
        """The pattern run over whole texts; checked rules capture (kept char, core)."""
        if self.before is None:
            return self.pattern
        return f"(^|[^{self.before}])({self.pattern})"


_RULES: tuple[_Rule, ...] = (
    _Rule("url", _URL),
    # Not after a word, an address or a placeholder (">": "<EMAIL>@x" stays as it is, so
    # a second pass changes nothing).
    _Rule("handle", _HANDLE, before=f"A-Za-z0-9_{_LATIN}%+@/>-"),
    _Rule("email", _EMAIL),
    _Rule(
        "card",
        _CARD,
        before="0-9_+.,",
        shapes=(_Shape(_CARD_SHAPE, 13, 19),),
        luhn=True,
        digit_after=False,
    ),
    _Rule(
        "ip",
        _IP_CANDIDATE,
        before=f"A-Za-z0-9_{_LATIN}.",
        shapes=(_Shape(_IPV4), _Shape(_IPV6)),
    ),
    _Rule(
        "phone",
        _PHONE,
        before=f"A-Za-z0-9_{_LATIN}+.,/#-",
        shapes=(_Shape(_PHONE_INTL, 8, 15), _Shape(_PHONE_NATIONAL, 9, 12)),
        not_shapes=_NOT_PHONE,
    ),
)
_RULE_OF: Mapping[str, _Rule] = {rule.kind: rule for rule in _RULES}


# ---------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True, slots=True)
class MinimisationConfig:
    """Which kinds of identifier a licensee's deliveries have replaced (default: all)."""

    kinds: frozenset[str] = frozenset(KINDS)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown minimisation kinds {unknown}; known: {list(KINDS)}")

    @classmethod
    def parse(
        cls,
        names: str | Iterable[str] | None,
        *,
        location: str = "minimisation",
        field_name: str = "minimise",
    ) -> MinimisationConfig:
        """The config for a list of kind names.

        1. None means the default, every kind.
        2. A string is split on commas and whitespace.
        3. Names are case-insensitive; a placeholder (`<EMAIL>`) names its kind; `all` turns
           every kind on and `none` none (`none` alone, to deliver texts unchanged).
        4. Unknown names are bad input, all reported at once.
        """
        if names is None:
            return cls()
        items = re.split(r"[\s,]+", names) if isinstance(names, str) else list(names)
        wanted: set[str] = set()
        problems: list[Problem] = []
        for raw in items:
            name = raw.strip().strip("<>").lower()
            if not name:
                continue
            if name == "all":
                wanted.update(KINDS)
            elif name == "none":
                continue
            elif name in PLACEHOLDERS:
                wanted.add(name)
            else:
                problems.append(
                    Problem(
                        location=location,
                        row=None,
                        field=field_name,
                        message=f"unknown kind {raw!r}; known kinds: {', '.join(KINDS)}",
                    )
                )
        if problems:
            raise BadInput(problems)
        return cls(frozenset(wanted))

    @property
    def names(self) -> tuple[str, ...]:
        """The kinds turned on, in the order they are applied."""
        return tuple(kind for kind in KINDS if kind in self.kinds)


# ---------------------------------------------------------------------------------------
# Reference implementation (Python `re`)

_COMPILED: dict[str, re.Pattern[str]] = {}


def _re(pattern: str) -> re.Pattern[str]:
    compiled = _COMPILED.get(pattern)
    if compiled is None:
        compiled = _COMPILED[pattern] = re.compile(pattern)
    return compiled


def _luhn_ok(digits: str) -> bool:
    """Luhn: from the right, double every second digit (minus 9 above 9); sum ≡ 0 mod 10."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _core_ok(rule: _Rule, core: str) -> bool:
    digits = sum(char in "0123456789" for char in core)
    if rule.shapes and not any(
        shape.min_digits <= digits <= shape.max_digits
        and _re(f"(?:{shape.pattern})").fullmatch(core)
        for shape in rule.shapes
    ):
        return False
    if any(_re(f"(?:{bad})").fullmatch(core) for bad in rule.not_shapes):
        return False
    return not rule.luhn or _luhn_ok("".join(c for c in core if c in "0123456789"))


def minimise_text(text: str, config: MinimisationConfig | None = None) -> str:
    """`text` with every identifier of the kinds `config` turns on replaced (reference).

    1. Remove the reserved non-characters U+FDD0-U+FDDF (the engine's markers); then apply
       the rules of the kinds turned on, in `KINDS` order, each over the previous output.
    2. Plain rules replace each non-overlapping match, left to right.
    3. Checked rules keep the character before the core and replace the core only when it
       passes the rule's checks; a candidate that fails is kept as it is.
    """
    config = config or MinimisationConfig()
    if config.names:
        text = _re(_MARKERS).sub("", text)
    for kind in config.names:
        rule = _RULE_OF[kind]
        placeholder = PLACEHOLDERS[kind]
        if rule.before is None:
            text = _re(rule.search).sub(placeholder, text)
            continue

        def replace(
            match: re.Match[str], rule: _Rule = rule, placeholder: str = placeholder
        ) -> str:
            kept, core = match.group(1), match.group(2)
            end, whole = match.end(), match.string
            if not rule.digit_after and end < len(whole) and whole[end] in "0123456789":
                return match.group(0)
            return kept + placeholder if _core_ok(rule, core) else match.group(0)

        text = _re(rule.search).sub(replace, text)
    return text


# ---------------------------------------------------------------------------------------
# Engine implementation (Ibis)
#
# Deciding about each candidate separately would take array lambdas, which Ibis renders
# for DuckDB in the `x -> …` form DuckDB 2 rejects. So every rule is a fixed sequence of
# whole-column rewrites instead: candidates are fenced with markers (non-characters, which
# `minimise_expr` removes from the input first), checks turn fenced candidates into their
# placeholder, and a last rewrite drops the fences of those that failed. The number of
# rewrites is fixed per rule, whatever the number of candidates in a text.


_DOUBLED = "0246813579"
"""Luhn's doubled digit, reduced below 10 (2 * d, minus 9 above 9), by digit."""


def _java_syntax() -> ir.BooleanValue:
    """True when the engine's `regexp_replace` reads Java replacement syntax (Spark).

    Group references are `\\1` for RE2 (DuckDB) and `$1` for Java (Spark), and each engine
    takes the other's form literally: replacing "x" by "$0" yields "x" only under Java.
    Both engines fold this constant expression before running the query.
    """
    import ibis

    probe: ir.BooleanValue = ibis.literal("x").re_replace("x", "$0") == "x"
    return probe


def _rewrite(*parts: int | str) -> ir.StringValue | str:
    """A replacement of literal text and group references (ints), for either engine."""
    import ibis

    re2 = "".join(f"\\{p}" if isinstance(p, int) else p.replace("\\", "\\\\") for p in parts)
    if all(isinstance(p, str) for p in parts) and "$" not in re2:
        return re2
    java = "".join(
        f"${p}" if isinstance(p, int) else p.replace("\\", "\\\\").replace("$", "\\$")
        for p in parts
    )
    template: ir.StringValue = ibis.ifelse(_java_syntax(), java, re2)
    return template


def _sub(text: ir.StringValue, pattern: str, *replacement: int | str) -> ir.StringValue:
    result: ir.StringValue = text.re_replace(pattern, _rewrite(*replacement))
    return result


def _digits_between(low: int, high: int) -> str:
    """Matches a fenced core holding low..high ASCII digits (the fence end included)."""
    return f"(?:[^0-9{_END}]*[0-9]){{{low},{high}}}[^0-9{_END}]*{_END}"


def _luhn_rewrites(text: ir.StringValue, placeholder: str) -> ir.StringValue:
    """Replace fenced card candidates whose digits pass Luhn; rewrites only, no arithmetic.

    1. Copy the digits of each well-shaped core (first digit 1-9, at most five groups)
       into an area after it; drop the fences of cores of another shape or whose area
       does not hold 13-19 digits.
    2. Prefix odd-length areas with 0 (it adds nothing): the digits to double, at odd
       distance from the right, are now the first of each pair from the left.
    3. Walk a cursor over each area, two digits per step (at most 10 steps: 4, 4, 1, 1, 1
       pairs), tagging the first of each pair "twice" and the second "once".
    4. Spell every tagged digit in unary (a doubled one as its reduced double), delete
       runs of ten units: an area left without units has a digit sum ≡ 0 mod 10.
    5. Such cores become the placeholder; the caller drops every other fence and area.
    """
    groups = "(?:[ -]([0-9]+))?" * 4
    text = _sub(
        text,
        f"{_START}(([1-9][0-9]*){groups}){_END}",
        _START, 1, _AREA, 2, 3, 4, 5, 6, _END,
    )  # fmt: skip
    text = _sub(text, f"{_START}([^{_AREA}{_END}]*){_AREA}(?:[0-9]{{1,12}}|[0-9]{{20,}}){_END}", 1)
    text = _sub(text, f"{_AREA}((?:[0-9][0-9])*[0-9]){_END}", _AREA, "0", 1, _END)
    for pairs in (4, 4, 1, 1, 1):
        tagged: list[int | str] = []
        for pair in range(pairs):
            tagged += [2 * pair + 1, _TWICE, 2 * pair + 2, _ONCE]
        text = _sub(text, _AREA + "([0-9])([0-9])" * pairs, *tagged, _AREA)
    for digit in range(10):
        text = text.replace(f"{digit}{_TWICE}", _UNIT * int(_DOUBLED[digit]))
        text = text.replace(f"{digit}{_ONCE}", _UNIT * digit)
    text = text.re_replace(f"{_UNIT}{{10}}", "")
    replaced: ir.StringValue = text.re_replace(f"{_START}[0-9 -]+{_AREA}{_END}", placeholder)
    return replaced


def _checked_expr(text: ir.StringValue, rule: _Rule) -> ir.StringValue:
    """Apply a checked rule with whole-column rewrites (see `_Rule` for the rule itself).

    1. Fence every candidate core: `(^|[^before])(core)` → kept character, start, core, end.
    2. Unfence cores followed by a digit (when `digit_after` is False) and cores of a
       `not_shapes` shape.
    3. Per shape: a fenced core of that shape is retagged, then becomes the placeholder if
       its digit count is in range (a shape without a range: becomes it at once). Shapes of
       one rule are disjoint, so a retagged core needs no other chance.
    4. Cards instead go through `_luhn_rewrites`.
    5. Drop every marker left: failed candidates read as before.
    6. A rule without checks (handles) is one rewrite: kept character + placeholder.
    7. Rows where step 1 fenced nothing skip steps 2-5.
    """
    import ibis

    placeholder = PLACEHOLDERS[rule.kind]
    if not rule.shapes and rule.digit_after and not rule.not_shapes:
        return _sub(text, rule.search, 1, placeholder)
    fenced = _sub(text, rule.search, 1, _START, 2, _END)
    text = fenced
    if not rule.digit_after:
        text = _sub(text, f"{_START}([^{_END}]*){_END}([0-9])", 1, 2)
    if rule.not_shapes:
        bad = "|".join(rule.not_shapes)
        text = _sub(text, f"{_START}((?:{bad})){_END}", 1)
    if rule.luhn:
        text = _luhn_rewrites(text, placeholder)
    else:
        for shape in rule.shapes:
            if shape.min_digits == 0 and shape.max_digits >= 1_000_000:
                text = text.re_replace(f"{_START}(?:{shape.pattern}){_END}", placeholder)
                continue
            text = _sub(text, f"{_START}((?:{shape.pattern})){_END}", _SHAPE, 1, _END)
            text = text.re_replace(
                _SHAPE + _digits_between(shape.min_digits, shape.max_digits), placeholder
            )
            text = _sub(text, f"{_SHAPE}([^{_END}]*){_END}", _START, 1, _END)
    text = text.re_replace(_MARKERS, "")
    # Rows with no candidate skip every rewrite after the fencing (most posts have none).
    gated: ir.StringValue = ibis.ifelse(fenced.contains(_START), text, fenced)
    return gated


def minimise_expr(
    column: ir.StringValue, config: MinimisationConfig | None = None
) -> ir.StringValue:
    """`column` with identifiers replaced, as an Ibis expression for DuckDB or PySpark.

    1. Same rules, order and results as `minimise_text` (tests compare them).
    2. Remove the reserved non-characters U+FDD0-U+FDDF (the engine's markers).
    3. Plain rules are one global `re_replace` each.
    4. Checked rules are a fixed sequence of global rewrites (`_checked_expr`); no Python
       runs per row, no array lambdas. DuckDB 2 rejects the `x -> …` lambdas Ibis 12
       renders, and a rewrite sequence needs no per-candidate arrays.
    5. NULL stays NULL.
    """
    config = config or MinimisationConfig()
    if not config.names:
        return column
    text = column.re_replace(_MARKERS, "")
    for kind in config.names:
        rule = _RULE_OF[kind]
        if rule.before is None:
            text = text.re_replace(rule.search, PLACEHOLDERS[kind])
        else:
            text = _checked_expr(text, rule)
    return text


# ---------------------------------------------------------------------------------------
# Labelled corpus and scores


@dataclass(frozen=True, slots=True)
class CorpusLine:
    """One labelled string: the input and its exact minimised output."""

    text: str
    expected: str
    lang: str | None = None


@dataclass(frozen=True, slots=True)
class KindScore:
    """Placeholder counts compared with the labels, for one kind or overall."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        """tp / (tp + fp); 1.0 when nothing was predicted."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        """tp / (tp + fn); 1.0 when nothing was expected."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@dataclass(frozen=True, slots=True)
class CorpusScores:
    """How minimised outputs compare with a labelled corpus."""

    lines: int
    exact: int
    overall: KindScore
    per_kind: Mapping[str, KindScore] = field(default_factory=dict)
    mismatches: tuple[tuple[str, str, str], ...] = ()
    """(text, expected, got) of every line whose output is not exactly as labelled."""

    @property
    def exact_share(self) -> float:
        """Share of lines whose output is exactly the label."""
        return self.exact / self.lines if self.lines else 1.0

    def table(self) -> str:
        """A plain-text table of the scores (what the test, bench and docs print)."""
        rows = [f"{'kind':<8} {'tp':>5} {'fp':>4} {'fn':>4} {'precision':>9} {'recall':>7}"]
        for name, score in [*self.per_kind.items(), ("overall", self.overall)]:
            rows.append(
                f"{name:<8} {score.tp:>5} {score.fp:>4} {score.fn:>4} "
                f"{score.precision:>9.3f} {score.recall:>7.3f}"
            )
        rows.append(f"exact lines: {self.exact}/{self.lines} ({self.exact_share:.1%})")
        return "\n".join(rows)


_PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))
_KIND_OF = {placeholder: kind for kind, placeholder in PLACEHOLDERS.items()}


def placeholder_counts(text: str) -> Counter[str]:
    """How many placeholders of each kind `text` holds."""
    return Counter(_KIND_OF[m.group(0)] for m in _PLACEHOLDER_RE.finditer(text))


def corpus_scores(lines: Sequence[CorpusLine], outputs: Sequence[str]) -> CorpusScores:
    """Token-level precision and recall of `outputs` against the labelled `lines`.

    1. Per line and kind, count placeholders in the output (predicted) and in the label
       (expected) minus those already in the input; TP = min, FP = predicted - TP,
       FN = expected - TP.
    2. Sum per kind; overall sums every kind.
    3. A line is exact when its output equals its label character for character.
    """
    if len(lines) != len(outputs):
        raise ValueError(f"{len(lines)} corpus lines but {len(outputs)} outputs")
    tallies = {kind: [0, 0, 0] for kind in KINDS}
    exact = 0
    mismatches: list[tuple[str, str, str]] = []
    for line, got in zip(lines, outputs, strict=True):
        already = placeholder_counts(line.text)
        predicted = placeholder_counts(got) - already
        expected = placeholder_counts(line.expected) - already
        for kind in KINDS:
            tp = min(predicted[kind], expected[kind])
            tallies[kind][0] += tp
            tallies[kind][1] += predicted[kind] - tp
            tallies[kind][2] += expected[kind] - tp
        if got == line.expected:
            exact += 1
        else:
            mismatches.append((line.text, line.expected, got))
    per_kind = {kind: KindScore(*tallies[kind]) for kind in KINDS}
    overall = KindScore(*(sum(t[i] for t in tallies.values()) for i in range(3)))
    return CorpusScores(
        lines=len(lines),
        exact=exact,
        overall=overall,
        per_kind=per_kind,
        mismatches=tuple(mismatches),
    )


def load_corpus(path: Path) -> list[CorpusLine]:
    """The labelled lines of a JSONL corpus (`{"text", "expected"[, "lang"]}` per line).

    1. Blank lines are skipped.
    2. A line that is not a JSON object with string `text` and `expected` is bad input,
       every such line reported at once with its 1-based number.
    """
    lines: list[CorpusLine] = []
    problems: list[Problem] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(Problem(str(path), number, None, f"not JSON: {exc.msg}"))
            continue
        if not isinstance(item, dict):
            problems.append(Problem(str(path), number, None, "not a JSON object"))
            continue
        bad = [key for key in ("text", "expected") if not isinstance(item.get(key), str)]
        for key in bad:
            problems.append(Problem(str(path), number, key, "missing or not a string"))
        lang = item.get("lang")
        if not bad:
            lines.append(
                CorpusLine(item["text"], item["expected"], lang if isinstance(lang, str) else None)
            )
    if problems:
        raise BadInput(problems)
    return lines
