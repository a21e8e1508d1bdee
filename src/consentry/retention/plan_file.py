"""A retention plan as a type and as a file: what `consentry retention plan --out` writes and
`consentry retention apply` reads back (docs/retention.md, "Plans")."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from consentry.audit import canonical_json
from consentry.errors import BadInput, Problem

__all__ = [
    "PLAN_FORMAT",
    "CategoryPlan",
    "PlanGap",
    "PlanHold",
    "PlanPolicy",
    "RetentionPlan",
    "plan_sha256",
]

PLAN_FORMAT = "consentry/retention-plan@1"


@dataclass(frozen=True, slots=True)
class CategoryPlan:
    """One category's entry in a plan: what its rule does to its records at the plan's instant.

    `delete`, `anonymise`, `held`, `keep` and `done` partition `total`; `by_trigger` splits
    the due records (delete and anonymise) by the rule's trigger, `held_by` the held ones by
    hold id; `explanation` says the same in words, rule first.
    """

    category: str
    unit: str
    rule: dict[str, Any] | None
    rule_text: str | None
    stores: tuple[str, ...]
    total: int
    delete: int
    anonymise: int
    held: int
    keep: int
    done: int
    unknown_owner: int
    by_trigger: dict[str, int]
    held_by: dict[str, int]
    explanation: tuple[str, ...]
    conditions: dict[str, Any] = field(default_factory=dict)
    """The rule's cut-offs at the plan's instant (empty without a rule)."""
    delivery_ids: tuple[str, ...] | None = None
    """`deliveries` only: the deliveries the plan deletes."""
    lineage_rows: int | None = None
    """`deliveries` only: the lineage rows of those deliveries."""

    def as_dict(self) -> dict[str, Any]:
        """The entry as the plan file holds it (no `delivery_ids`/`lineage_rows` keys outside
        `deliveries`)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        for optional in ("delivery_ids", "lineage_rows"):
            if out[optional] is None:
                del out[optional]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


@dataclass(frozen=True, slots=True)
class PlanPolicy:
    """The policy a plan was computed under: its file, content hash and version in force."""

    file: str
    content_sha256: str
    version: str


@dataclass(frozen=True, slots=True)
class PlanHold:
    """A legal hold active at the plan's instant."""

    id: str
    scope: str
    matter: str


@dataclass(frozen=True, slots=True)
class PlanGap:
    """Records no rule covers: a category without a rule, or a lake table in no category."""

    kind: Literal["category", "table"]
    subject: str
    records: int
    message: str


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """A retention plan (`consentry retention plan`): what is due at `at`, per category.

    1. `policy`, `holds`, `categories`, `gaps` and `totals` say what the rules do at `at`;
       `inputs` fingerprints everything they read (docs/retention.md, "Plans").
    2. `plan_sha256` is the SHA-256 of the canonical JSON of everything but itself and
       `meta` (engine and timing), so DuckDB and Spark give the same hash.
    3. A plan file is `as_dict()` as JSON; `from_dict` reads one back, refusing a file that
       is not a plan or whose content does not match its hash.
    """

    at: str
    owners_checked: bool
    policy: PlanPolicy
    holds: tuple[PlanHold, ...]
    categories: tuple[CategoryPlan, ...]
    gaps: tuple[PlanGap, ...]
    totals: dict[str, int]
    inputs: dict[str, Any]
    plan_sha256: str
    meta: dict[str, Any]
    format: str = PLAN_FORMAT

    @property
    def instant(self) -> datetime:
        """`at` as an aware instant (UTC)."""
        return datetime.fromisoformat(self.at.replace("Z", "+00:00")).astimezone(UTC)

    def category(self, name: str) -> CategoryPlan:
        """The entry of category `name` (every category has one)."""
        return next(c for c in self.categories if c.category == name)

    def as_dict(self) -> dict[str, Any]:
        """The plan file's JSON object."""
        return {
            "format": self.format,
            "at": self.at,
            "owners_checked": self.owners_checked,
            "policy": asdict(self.policy),
            "holds": [asdict(h) for h in self.holds],
            "categories": [c.as_dict() for c in self.categories],
            "gaps": [asdict(g) for g in self.gaps],
            "totals": dict(self.totals),
            "inputs": self.inputs,
            "plan_sha256": self.plan_sha256,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: object, *, source: str) -> RetentionPlan:
        """Read a plan file's object; BadInput naming `source` and the field when it is not a
        plan of this format, or when its content does not match its `plan_sha256`."""
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise BadInput(
                Problem(source, None, "format", f"not a retention plan (expected {PLAN_FORMAT})")
            )
        if data.get("plan_sha256") != plan_sha256(data):
            raise BadInput(
                Problem(
                    source,
                    None,
                    "plan_sha256",
                    "the plan's content does not match its hash: the file was changed after "
                    "planning; plan again with `consentry retention plan`",
                )
            )
        try:
            return _PLAN_ADAPTER.validate_python(data)
        except ValidationError as exc:
            raise BadInput(
                [
                    Problem(source, None, ".".join(map(str, e["loc"])) or None, e["msg"])
                    for e in exc.errors()
                ]
            ) from None


def plan_sha256(plan: dict[str, Any]) -> str:
    """SHA-256 of the plan's canonical JSON without `plan_sha256` and `meta` (engine,
    timing): the same inputs give the same hash on DuckDB and on Spark."""
    body = {k: v for k, v in plan.items() if k not in ("plan_sha256", "meta")}
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


_PLAN_ADAPTER: TypeAdapter[RetentionPlan] = TypeAdapter(RetentionPlan)
