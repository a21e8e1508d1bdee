"""Connector: read a Mastodon server's PostgreSQL database into the lake's users and posts.

Mapping rules are in docs/mastodon.md. Rows are streamed out of PostgreSQL with
`COPY … TO STDOUT (FORMAT csv)` inside one read-only REPEATABLE READ transaction (so users
and posts are one consistent snapshot), parsed by Arrow's CSV reader in blocks and mapped
with pyarrow.compute — no Python code runs per row.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from typing import IO, Any, Final

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from consentry.engine import Lake
from consentry.engine.external import ExternalTable, register_source_reader
from consentry.errors import BadInput, ConsentryError, Problem
from consentry.schema import TIMESTAMP_TYPE, arrow_schema
from consentry.sources.importer import ImportResult, import_arrow

__all__ = [
    "BLOCK_BYTES",
    "DEFAULT_REGION",
    "REQUIRED_COLUMNS",
    "VISIBILITY_BY_CODE",
    "import_mastodon",
    "mastodon_url",
    "read_mastodon",
    "read_mastodon_source",
]

DEFAULT_REGION: Final = "ZZ"
"""Region given to every account: Mastodon records none. `ZZ` is the ISO 3166 user-assigned
code CLDR uses for "unknown region"; policies treat it as no known jurisdiction."""

BLOCK_BYTES: Final = 8 << 20
"""Bytes of CSV Arrow parses per batch (bounds memory besides the result tables)."""

VISIBILITY_BY_CODE: Final[tuple[str, ...]] = (
    "public",  # 0 public
    "unlisted",  # 1 unlisted
    "protected",  # 2 private: followers only
    "direct",  # 3 direct: mentioned accounts only
    "protected",  # 4 limited: a restricted audience, so never wider than followers
)
"""Canonical visibility of each Mastodon `statuses.visibility` code (the index)."""

REQUIRED_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "accounts": ("id", "domain", "locked", "suspended_at", "created_at"),
    "users": ("account_id",),
    "statuses": (
        "id",
        "account_id",
        "text",
        "visibility",
        "language",
        "created_at",
        "deleted_at",
        "reblog_of_id",
    ),
}
"""Tables and columns the connector reads; `account_deletion_requests` is optional."""

_REGION = re.compile(r"^[A-Z]{2}$")
_MAX_PROBLEMS = 20

# A local person: no domain, and a login (`users` row). The instance actor and other
# system accounts are local but have no login, and never consent to anything.
_LOCAL_PERSON = "a.domain IS NULL AND EXISTS (SELECT 1 FROM users u WHERE u.account_id = a.id)"


def _micros(column: str) -> str:
    # Mastodon stores UTC in `timestamp without time zone`; its epoch is the UTC instant
    # whatever the session's TimeZone (and for timestamptz it is the instant anyway).
    return f"(extract(epoch FROM {column}) * 1000000)::bigint"


def _users_sql(has_deletions: bool) -> str:
    deleted = _micros("d.requested_at") if has_deletions else "NULL::bigint"
    deletions = (
        "LEFT JOIN (SELECT account_id, min(created_at) AS requested_at "
        "FROM account_deletion_requests GROUP BY account_id) d ON d.account_id = a.id"
        if has_deletions
        else ""
    )
    return f"""
        SELECT a.id::text AS user_id,
               {_micros("a.created_at")} AS created_us,
               a.locked AS protected,
               {_micros("a.suspended_at")} AS deactivated_us,
               {deleted} AS deleted_us
        FROM accounts a {deletions}
        WHERE {_LOCAL_PERSON}
        ORDER BY a.id
    """


_POSTS_SQL: Final = f"""
    SELECT s.id::text AS post_id,
           s.account_id::text AS author_id,
           {_micros("s.created_at")} AS created_us,
           s.text AS text,
           s.visibility AS visibility,
           s.language AS lang,
           {_micros("s.deleted_at")} AS deleted_us
    FROM statuses s JOIN accounts a ON a.id = s.account_id
    WHERE s.reblog_of_id IS NULL AND {_LOCAL_PERSON}
    ORDER BY s.id
"""

_USERS_COLUMNS: Final = {
    "user_id": pa.string(),
    "created_us": pa.int64(),
    "protected": pa.bool_(),
    "deactivated_us": pa.int64(),
    "deleted_us": pa.int64(),
}
_POSTS_COLUMNS: Final = {
    "post_id": pa.string(),
    "author_id": pa.string(),
    "created_us": pa.int64(),
    "text": pa.string(),
    "visibility": pa.int64(),
    "lang": pa.string(),
    "deleted_us": pa.int64(),
}

OnRows = Callable[[str, int], None]
"""Progress callback: (canonical table, rows just read)."""


def mastodon_url(url: str) -> URL:
    """The SQLAlchemy URL of a Mastodon database.

    1. `postgresql://` and `postgres://` use psycopg 3 (`postgresql+psycopg://`).
    2. `postgresql+psycopg://` is kept; any other scheme is bad input.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise BadInput(
            Problem(location="--database-url", row=None, field="database_url", message=str(exc))
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername != "postgresql+psycopg":
        raise BadInput(
            Problem(
                location="--database-url",
                row=None,
                field="database_url",
                message=f"not a PostgreSQL URL ({parsed.drivername}); "
                "use postgresql://USER@HOST/DB",
            )
        )
    return parsed


def _check_schema(conn: Connection, where: str) -> bool:
    """Raise BadInput naming every missing table or column; True if deletions are there."""
    inspector = sa.inspect(conn)
    tables = set(inspector.get_table_names())
    problems: list[Problem] = []
    for table, needed in REQUIRED_COLUMNS.items():
        if table not in tables:
            problems.append(Problem(where, None, table, "table missing (not a Mastodon database?)"))
            continue
        have = {c["name"] for c in inspector.get_columns(table)}
        problems += [
            Problem(where, None, f"{table}.{c}", "column missing") for c in needed if c not in have
        ]
    if problems:
        raise BadInput(problems)
    return "account_deletion_requests" in tables


def _copy_to(conn: Connection, sql: str, sink: IO[bytes]) -> None:
    """Stream the rows of `sql` as UTF-8 CSV (with header) into `sink`."""
    raw: Any = conn.connection.driver_connection
    with (
        raw.cursor() as cursor,
        cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv, HEADER true, ENCODING 'UTF8')") as copy,
    ):
        for chunk in copy:
            sink.write(chunk)
    sink.seek(0)


def _csv_batches(sink: IO[bytes], columns: dict[str, pa.DataType]) -> pacsv.CSVStreamingReader:
    return pacsv.open_csv(
        sink,
        read_options=pacsv.ReadOptions(block_size=BLOCK_BYTES),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=columns,
            include_columns=list(columns),
            # PostgreSQL CSV writes NULL unquoted-empty and '' as "": keep them apart.
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )


def _instants(micros: pa.ChunkedArray | pa.Array) -> pa.Array:
    return pc.cast(micros, TIMESTAMP_TYPE)


def _users_batch(batch: pa.RecordBatch, region: str) -> pa.RecordBatch:
    n = batch.num_rows
    return pa.RecordBatch.from_arrays(
        [
            batch["user_id"],
            _instants(batch["created_us"]),
            pa.repeat(region, n),
            pa.nulls(n, pa.date32()),
            batch["protected"],
            _instants(batch["deactivated_us"]),
            _instants(batch["deleted_us"]),
        ],
        schema=arrow_schema("users"),
    )


def _visibility_problems(batch: pa.RecordBatch, where: str) -> list[Problem]:
    codes = batch["visibility"]
    bad = pc.invert(pc.is_in(codes, value_set=pa.array(range(len(VISIBILITY_BY_CODE)))))
    if not pc.any(bad).as_py():
        return []
    ids = pc.filter(batch["post_id"], bad).slice(0, _MAX_PROBLEMS).to_pylist()
    values = pc.filter(codes, bad).slice(0, _MAX_PROBLEMS).to_pylist()
    return [
        Problem(where, None, "statuses.visibility", f"status {i}: unknown visibility code {v}")
        for i, v in zip(ids, values, strict=True)
    ]


def _posts_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    lang = batch["lang"]
    # Mastodon leaves language NULL when unknown; an empty tag means the same.
    lang = pc.if_else(pc.equal(lang, ""), pa.scalar(None, pa.string()), lang)
    return pa.RecordBatch.from_arrays(
        [
            batch["post_id"],
            batch["author_id"],
            _instants(batch["created_us"]),
            batch["text"],
            pc.take(pa.array(VISIBILITY_BY_CODE, pa.string()), batch["visibility"]),
            lang,
            _instants(batch["deleted_us"]),
        ],
        schema=arrow_schema("posts"),
    )


def read_mastodon(
    url: str, *, default_region: str = DEFAULT_REGION, on_rows: OnRows | None = None
) -> dict[str, pa.Table]:
    """Read a Mastodon database as canonical `users` and `posts` Arrow tables.

    1. Only local people: `accounts.domain IS NULL` with a `users` row (a login).
    2. users: `user_id` = account id as decimal text (as Mastodon's API shows it),
       `created_at`, `region` = `default_region`, `birth_date` null, `protected` = `locked`,
       `deactivated_at` = `suspended_at`, `deleted_at` = first `account_deletion_requests`
       row's `created_at` (null if that table is absent).
    3. posts: their statuses except reblogs (`reblog_of_id` set); `post_id`, `author_id`,
       `created_at`, `text`, `visibility` by `VISIBILITY_BY_CODE`, `lang` = `language`,
       `deleted_at`. An unknown visibility code is bad input (never guessed wider).
    4. Both tables come from one read-only snapshot; rows ordered by id.
    """
    if not _REGION.match(default_region):
        raise BadInput(
            Problem(
                "--default-region",
                None,
                "region",
                f"not an ISO 3166-1 alpha-2 code (2 uppercase letters): {default_region!r}",
            )
        )
    parsed = mastodon_url(url)
    where = parsed.render_as_string(hide_password=True)
    engine = sa.create_engine(parsed)
    try:
        with (
            engine.connect() as conn,
            tempfile.TemporaryFile() as users_csv,
            tempfile.TemporaryFile() as posts_csv,
        ):
            snapshot = conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
            with snapshot.begin():
                has_deletions = _check_schema(snapshot, where)
                _copy_to(snapshot, _users_sql(has_deletions), users_csv)
                _copy_to(snapshot, _POSTS_SQL, posts_csv)
            users: list[pa.RecordBatch] = []
            for batch in _csv_batches(users_csv, _USERS_COLUMNS):
                users.append(_users_batch(batch, default_region))
                if on_rows:
                    on_rows("users", batch.num_rows)
            posts: list[pa.RecordBatch] = []
            problems: list[Problem] = []
            for batch in _csv_batches(posts_csv, _POSTS_COLUMNS):
                problems += _visibility_problems(batch, where)
                if not problems:
                    posts.append(_posts_batch(batch))
                if on_rows:
                    on_rows("posts", batch.num_rows)
            if problems:
                raise BadInput(problems[:_MAX_PROBLEMS])
    except (SQLAlchemyError, psycopg.Error) as exc:
        reason = getattr(exc, "orig", None) or exc
        raise ConsentryError(
            f"cannot read Mastodon at {where}: {' '.join(str(reason).split())}"
        ) from None
    finally:
        engine.dispose()
    return {
        "users": pa.Table.from_batches(users, schema=arrow_schema("users")),
        "posts": pa.Table.from_batches(posts, schema=arrow_schema("posts")),
    }


def import_mastodon(
    lake: Lake,
    url: str,
    *,
    default_region: str = DEFAULT_REGION,
    on_rows: OnRows | None = None,
) -> dict[str, ImportResult]:
    """Import a Mastodon database into the lake's `users` and `posts` tables.

    1. Read both tables with `read_mastodon` (nothing is written if that fails).
    2. Merge `users`, then `posts`, each as one atomic lake snapshot; the origin is
       `mastodon:` + the database URL with its password hidden.
    """
    tables = read_mastodon(url, default_region=default_region, on_rows=on_rows)
    origin = "mastodon:" + mastodon_url(url).render_as_string(hide_password=True)
    return {name: import_arrow(lake, name, data, origin=origin) for name, data in tables.items()}


def read_mastodon_source(source: ExternalTable) -> dict[str, pa.Table]:
    """A registered Mastodon source (`consentry source add users --mastodon URL`), read now:
    `read_mastodon` of its URL with its `default_region` option."""
    return read_mastodon(
        source.location, default_region=source.options.get("default_region", DEFAULT_REGION)
    )


register_source_reader("mastodon", read_mastodon_source)
