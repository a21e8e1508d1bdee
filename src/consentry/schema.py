"""The canonical lake tables: names, columns, types, keys and allowed values.

One place for the shape of the data every capability reads. Import validates against it,
the demo generator writes it, docs/tables.md documents it (a test keeps them in step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

__all__ = [
    "MAX_POSTS_PER_ACCESS",
    "TABLES",
    "ColumnKind",
    "ColumnSpec",
    "TableSpec",
    "arrow_schema",
    "table_spec",
]

ColumnKind = Literal["string", "timestamp", "date", "bool", "int", "enum"]

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
"""Every instant in the lake: microseconds, UTC."""

_ARROW_TYPES: dict[ColumnKind, pa.DataType] = {
    "string": pa.string(),
    "enum": pa.string(),
    "timestamp": TIMESTAMP_TYPE,
    "date": pa.date32(),
    "bool": pa.bool_(),
    "int": pa.int64(),
}


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One column of a canonical table."""

    name: str
    kind: ColumnKind
    nullable: bool = False
    values: tuple[str, ...] = ()
    """Allowed values for an `enum` column."""
    minimum: int | None = None
    """Smallest allowed value for an `int` column."""
    maximum: int | None = None
    """Largest allowed value for an `int` column."""
    identifier: bool = False
    """A `string` column naming a key (of a table or the policy); like a key column it may
    not be empty or hold a control character."""
    description: str = ""

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self.kind]


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A canonical table: its columns and the key that makes re-imports idempotent."""

    name: str
    key: tuple[str, ...]
    """Columns whose values identify a row; re-importing a key replaces the row."""
    columns: tuple[ColumnSpec, ...]
    description: str

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def is_identifier(self, column: ColumnSpec) -> bool:
        """True for a text key column or a column naming a key: never empty, no controls."""
        return column.kind == "string" and (column.name in self.key or column.identifier)

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


MAX_POSTS_PER_ACCESS = 1_000_000_000
"""The most posts one access event may count (the import, the meter and the API refuse more).

Bounded so that every sum the scraping rules take stays exact in 64-bit integers: 2^63 / 10^9
is over nine billion maximal accesses of one entity before a sum could overflow."""

VISIBILITIES = ("public", "unlisted", "protected", "direct")
CHOICES = ("allow", "deny")
CONSENT_SOURCES = ("settings", "gpc", "api", "import", "support")

TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (
        TableSpec(
            name="users",
            key=("user_id",),
            description="Accounts of the platform.",
            columns=(
                ColumnSpec("user_id", "string", description="Stable account id."),
                ColumnSpec("created_at", "timestamp", description="When the account was made."),
                ColumnSpec(
                    "region",
                    "string",
                    description="ISO 3166-1 alpha-2 code of the account's jurisdiction.",
                ),
                ColumnSpec(
                    "birth_date",
                    "date",
                    nullable=True,
                    description="Date of birth; null when unknown "
                    "(the purpose's unknown_age applies).",
                ),
                ColumnSpec("protected", "bool", description="Posts visible to followers only."),
                ColumnSpec(
                    "deactivated_at", "timestamp", nullable=True, description="When deactivated."
                ),
                ColumnSpec("deleted_at", "timestamp", nullable=True, description="When deleted."),
            ),
        ),
        TableSpec(
            name="posts",
            key=("post_id",),
            description="Posts (statuses, tweets) written by users.",
            columns=(
                ColumnSpec("post_id", "string", description="Stable post id."),
                ColumnSpec(
                    "author_id",
                    "string",
                    identifier=True,
                    description="The user_id of the author.",
                ),
                ColumnSpec("created_at", "timestamp", description="When the post was published."),
                ColumnSpec("text", "string", description="The post's text as written."),
                ColumnSpec(
                    "visibility",
                    "enum",
                    values=VISIBILITIES,
                    description="Who may see the post: public, unlisted, protected or direct.",
                ),
                ColumnSpec(
                    "lang", "string", nullable=True, description="BCP 47 language tag, if known."
                ),
                ColumnSpec("deleted_at", "timestamp", nullable=True, description="When deleted."),
            ),
        ),
        TableSpec(
            name="consent_events",
            key=("event_id",),
            description="Every consent choice a user made, append-only.",
            columns=(
                ColumnSpec("event_id", "string", description="Stable event id."),
                ColumnSpec("user_id", "string", identifier=True, description="Who chose."),
                ColumnSpec(
                    "purpose", "string", identifier=True, description="The policy purpose key."
                ),
                ColumnSpec("choice", "enum", values=CHOICES, description="allow or deny."),
                ColumnSpec("at", "timestamp", description="When the choice was made."),
                ColumnSpec(
                    "source",
                    "enum",
                    values=CONSENT_SOURCES,
                    description="How it was made: settings, gpc, api, import or support.",
                ),
            ),
        ),
        TableSpec(
            name="access_events",
            key=("request_id",),
            description="API and web requests that served posts (for scraping enforcement).",
            columns=(
                ColumnSpec("request_id", "string", description="Unique request id."),
                ColumnSpec("ts", "timestamp", description="When the request was served."),
                ColumnSpec(
                    "credential",
                    "string",
                    identifier=True,
                    description="API key, account id or IP address that made the request.",
                ),
                ColumnSpec(
                    "posts",
                    "int",
                    minimum=0,
                    maximum=MAX_POSTS_PER_ACCESS,
                    description="Number of posts served (0 to 1,000,000,000).",
                ),
                ColumnSpec(
                    "endpoint", "string", nullable=True, description="Endpoint that served them."
                ),
            ),
        ),
        TableSpec(
            name="entities",
            key=("credential", "valid_from"),
            description="Which entity owns which credential, and when.",
            columns=(
                ColumnSpec(
                    "credential",
                    "string",
                    description="API key, account id, IP address or CIDR range.",
                ),
                ColumnSpec(
                    "entity",
                    "string",
                    identifier=True,
                    description="The owning organisation or person.",
                ),
                ColumnSpec(
                    "valid_from", "timestamp", nullable=True, description="Start (open if null)."
                ),
                ColumnSpec(
                    "valid_to",
                    "timestamp",
                    nullable=True,
                    description="End, exclusive (open if null).",
                ),
            ),
        ),
    )
}
"""Every canonical table, by name."""


def table_spec(name: str) -> TableSpec:
    """The spec of a canonical table; KeyError names the known tables."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(TABLES)}") from None


def arrow_schema(name: str) -> pa.Schema:
    """The Arrow schema a canonical table is stored with in the lake."""
    spec = table_spec(name)
    return pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in spec.columns])
