"""The Mastodon connector against a Mastodon-shaped database on the real PostgreSQL server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from consentry.cli.main import app
from consentry.engine import Lake
from consentry.errors import BadInput, ConsentryError
from consentry.ledger.sync import ledger_for
from consentry.schema import arrow_schema
from consentry.settings import Settings
from consentry.sources import mastodon
from consentry.sources.mastodon import import_mastodon, mastodon_url, read_mastodon
from consentry.store import open_store

pytestmark = pytest.mark.postgres

# Column names and types as in Mastodon's db/schema.rb (a subset of each table).
MASTODON_DDL = """
CREATE TABLE accounts (
    id bigint PRIMARY KEY,
    username character varying DEFAULT '' NOT NULL,
    domain character varying,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone NOT NULL,
    note text DEFAULT '' NOT NULL,
    locked boolean DEFAULT false NOT NULL,
    suspended_at timestamp without time zone,
    discoverable boolean,
    indexable boolean DEFAULT false NOT NULL,
    actor_type character varying
);
CREATE TABLE users (
    id bigint PRIMARY KEY,
    email character varying DEFAULT '' NOT NULL,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone NOT NULL,
    account_id bigint NOT NULL REFERENCES accounts (id),
    disabled boolean DEFAULT false NOT NULL,
    settings text
);
CREATE TABLE statuses (
    id bigint PRIMARY KEY,
    uri character varying,
    text text DEFAULT '' NOT NULL,
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone NOT NULL,
    in_reply_to_id bigint,
    reblog_of_id bigint,
    visibility integer DEFAULT 0 NOT NULL,
    spoiler_text text DEFAULT '' NOT NULL,
    language character varying,
    account_id bigint NOT NULL REFERENCES accounts (id),
    local boolean,
    deleted_at timestamp without time zone
);
"""
DELETIONS_DDL = """
CREATE TABLE account_deletion_requests (
    id bigint PRIMARY KEY,
    account_id bigint REFERENCES accounts (id),
    created_at timestamp without time zone NOT NULL,
    updated_at timestamp without time zone NOT NULL
);
"""

ALICE, BOB, CAROL, DAVE, EVE = (
    109876543210000001,
    109876543210000002,
    109876543210000003,
    109876543210000004,
    109876543210000005,
)
INSTANCE_ACTOR = -99
TRICKY_TEXT = 'Hello, "world"\nsecond line, café ☕ \\. 🚀'

ACCOUNTS = [
    # id, username, domain, created_at, locked, suspended_at
    (ALICE, "alice", None, "2023-01-02 03:04:05.123456", False, None),
    (BOB, "bob", None, "2023-02-03 04:05:06", True, None),
    (CAROL, "carol", None, "2023-03-04 05:06:07", False, "2024-02-01 00:00:00"),
    (DAVE, "dave", None, "2023-04-05 06:07:08", False, "2024-03-01 12:00:00.5"),
    (EVE, "eve", "remote.example", "2023-05-06 07:08:09", False, None),
    (INSTANCE_ACTOR, "social.example", None, "2023-01-01 00:00:00", False, None),
]
STATUSES = [
    # id, account_id, text, created_at, reblog_of_id, visibility, language, deleted_at
    (1001, ALICE, "public post", "2024-01-01 10:00:00", None, 0, "en", None),
    (1002, ALICE, "unlisted post", "2024-01-01 10:00:01", None, 1, "en", None),
    (1003, ALICE, "private post", "2024-01-01 10:00:02", None, 2, "de", None),
    (1004, ALICE, "direct message", "2024-01-01 10:00:03", None, 3, None, None),
    (1005, ALICE, "limited post", "2024-01-01 10:00:04", None, 4, "fr", None),
    (1006, ALICE, TRICKY_TEXT, "2024-01-01 10:00:05.000001", None, 0, "", None),
    (1007, ALICE, "", "2024-01-01 10:00:06", None, 0, "en", "2024-01-02 00:00:00"),
    (1008, ALICE, "", "2024-01-01 10:00:07", 2001, 0, None, None),  # reblog of bob's
    (2001, BOB, "bob's followers-only post", "2024-01-03 00:00:00", None, 2, "en", None),
    (3001, CAROL, "before suspension", "2023-12-31 23:59:59.999999", None, 0, "en", None),
    (4001, DAVE, "about to leave", "2024-02-29 08:00:00", None, 1, "en", None),
    (5001, EVE, "remote post", "2024-01-04 00:00:00", None, 0, "en", None),
]


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _create_mastodon(url: str, *, deletions: bool = True, statuses: bool = True) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(MASTODON_DDL)
            if deletions:
                conn.exec_driver_sql(DELETIONS_DDL)
            for id_, username, domain, created, locked, suspended in ACCOUNTS:
                conn.execute(
                    sa.text(
                        "INSERT INTO accounts (id, username, domain, created_at, updated_at, "
                        "locked, suspended_at) VALUES (:id, :u, :d, :c, :c, :l, :s)"
                    ),
                    {
                        "id": id_,
                        "u": username,
                        "d": domain,
                        "c": created,
                        "l": locked,
                        "s": suspended,
                    },
                )
            # Every local person has a login; the instance actor and remote accounts do not.
            for n, id_ in enumerate((ALICE, BOB, CAROL, DAVE), start=1):
                conn.execute(
                    sa.text(
                        "INSERT INTO users (id, email, created_at, updated_at, account_id) "
                        "VALUES (:n, :e, '2023-01-01', '2023-01-01', :a)"
                    ),
                    {"n": n, "e": f"user{n}@example.org", "a": id_},
                )
            if deletions:
                conn.execute(
                    sa.text(
                        "INSERT INTO account_deletion_requests VALUES "
                        "(1, :dave, '2024-03-01 12:00:00.5', '2024-03-01 12:00:00.5')"
                    ),
                    {"dave": DAVE},
                )
            if statuses:
                for id_, account, text, created, reblog, vis, lang, deleted in STATUSES:
                    conn.execute(
                        sa.text(
                            "INSERT INTO statuses (id, account_id, text, created_at, updated_at, "
                            "reblog_of_id, visibility, language, deleted_at, local) "
                            "VALUES (:id, :a, :t, :c, :c, :r, :v, :l, :d, :local)"
                        ),
                        {
                            "id": id_,
                            "a": account,
                            "t": text,
                            "c": created,
                            "r": reblog,
                            "v": vis,
                            "l": lang,
                            "d": deleted,
                            "local": account != EVE,
                        },
                    )
    finally:
        engine.dispose()


@pytest.fixture
def mastodon_db(postgres_url: str) -> str:
    """A fresh schema holding a small Mastodon database; its URL as `postgresql://`."""
    _create_mastodon(postgres_url)
    return postgres_url.replace("postgresql+psycopg://", "postgresql://")


def _expected_users(*, deleted_dave: datetime | None, region: str = "ZZ") -> pa.Table:
    return pa.table(
        {
            "user_id": [str(ALICE), str(BOB), str(CAROL), str(DAVE)],
            "created_at": [
                _utc("2023-01-02 03:04:05.123456"),
                _utc("2023-02-03 04:05:06"),
                _utc("2023-03-04 05:06:07"),
                _utc("2023-04-05 06:07:08"),
            ],
            "region": [region] * 4,
            "birth_date": pa.nulls(4, pa.date32()),
            "protected": [False, True, False, False],
            "deactivated_at": [
                None,
                None,
                _utc("2024-02-01 00:00:00"),
                _utc("2024-03-01 12:00:00.500000"),
            ],
            "deleted_at": [None, None, None, deleted_dave],
        },
        schema=arrow_schema("users"),
    )


EXPECTED_POSTS = pa.table(
    {
        "post_id": ["1001", "1002", "1003", "1004", "1005", "1006", "1007", "2001", "3001", "4001"],
        "author_id": [str(ALICE)] * 7 + [str(BOB), str(CAROL), str(DAVE)],
        "created_at": [
            _utc("2024-01-01 10:00:00"),
            _utc("2024-01-01 10:00:01"),
            _utc("2024-01-01 10:00:02"),
            _utc("2024-01-01 10:00:03"),
            _utc("2024-01-01 10:00:04"),
            _utc("2024-01-01 10:00:05.000001"),
            _utc("2024-01-01 10:00:06"),
            _utc("2024-01-03 00:00:00"),
            _utc("2023-12-31 23:59:59.999999"),
            _utc("2024-02-29 08:00:00"),
        ],
        "text": [
            "public post",
            "unlisted post",
            "private post",
            "direct message",
            "limited post",
            TRICKY_TEXT,
            "",
            "bob's followers-only post",
            "before suspension",
            "about to leave",
        ],
        "visibility": [
            "public",
            "unlisted",
            "protected",
            "direct",
            "protected",
            "public",
            "public",
            "protected",
            "public",
            "unlisted",
        ],
        "lang": ["en", "en", "de", None, "fr", None, "en", "en", "en", "en"],
        "deleted_at": [None] * 6 + [_utc("2024-01-02 00:00:00")] + [None] * 3,
    },
    schema=arrow_schema("posts"),
)


def test_read_mastodon_maps_users_and_posts_exactly(mastodon_db: str) -> None:
    tables = read_mastodon(mastodon_db)

    assert set(tables) == {"users", "posts"}
    users, posts = tables["users"], tables["posts"]
    assert users.schema == arrow_schema("users")
    assert posts.schema == arrow_schema("posts")
    expected_users = _expected_users(deleted_dave=_utc("2024-03-01 12:00:00.5"))
    assert users.to_pylist() == expected_users.to_pylist()
    assert users.equals(expected_users)
    assert posts.to_pylist() == EXPECTED_POSTS.to_pylist()
    assert posts.equals(EXPECTED_POSTS)


def test_the_session_time_zone_does_not_shift_instants(mastodon_db: str) -> None:
    tokyo = mastodon_db.replace("options=", "options=-ctimezone%3DAsia/Tokyo%20")
    assert read_mastodon(tokyo)["posts"].equals(EXPECTED_POSTS)


def test_default_region_and_its_validation(mastodon_db: str) -> None:
    users = read_mastodon(mastodon_db, default_region="DE")["users"]
    assert users.column("region").to_pylist() == ["DE"] * 4
    for bad in ("de", "DEU", ""):
        with pytest.raises(BadInput, match="--default-region: region: not an ISO 3166-1"):
            read_mastodon(mastodon_db, default_region=bad)


def test_small_blocks_give_the_same_tables(
    mastodon_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mastodon, "BLOCK_BYTES", 256)
    seen: dict[str, list[int]] = {"users": [], "posts": []}

    tables = read_mastodon(mastodon_db, on_rows=lambda table, n: seen[table].append(n))

    assert len(seen["posts"]) > 1  # really read in several batches
    assert sum(seen["users"]) == 4
    assert sum(seen["posts"]) == 10
    assert tables["posts"].equals(EXPECTED_POSTS)
    assert tables["users"].equals(_expected_users(deleted_dave=_utc("2024-03-01 12:00:00.5")))


def test_without_deletion_requests_table_deleted_at_is_null(postgres_url: str) -> None:
    _create_mastodon(postgres_url, deletions=False)
    users = read_mastodon(postgres_url)["users"]
    assert users.equals(_expected_users(deleted_dave=None))


def test_empty_database_gives_empty_canonical_tables(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(MASTODON_DDL)
    engine.dispose()

    tables = read_mastodon(postgres_url)

    assert tables["users"].num_rows == tables["posts"].num_rows == 0
    assert tables["users"].schema == arrow_schema("users")
    assert tables["posts"].schema == arrow_schema("posts")


def test_unknown_visibility_is_bad_input(mastodon_db: str, postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE statuses SET visibility = 7 WHERE id = 1002")
    engine.dispose()

    with pytest.raises(BadInput) as caught:
        read_mastodon(mastodon_db)

    (problem,) = caught.value.problems
    assert problem.field == "statuses.visibility"
    assert problem.message == "status 1002: unknown visibility code 7"


def test_missing_tables_and_columns_are_named(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE accounts (id bigint PRIMARY KEY, domain varchar, "
            "created_at timestamp NOT NULL)"
        )
        conn.exec_driver_sql("CREATE TABLE users (id bigint PRIMARY KEY, account_id bigint)")
    engine.dispose()

    with pytest.raises(BadInput) as caught:
        read_mastodon(postgres_url)

    assert [(p.field, p.message) for p in caught.value.problems] == [
        ("accounts.locked", "column missing"),
        ("accounts.suspended_at", "column missing"),
        ("statuses", "table missing (not a Mastodon database?)"),
    ]


def test_urls() -> None:
    assert mastodon_url("postgresql://m@db/mastodon").drivername == "postgresql+psycopg"
    assert mastodon_url("postgres://m@db/mastodon").drivername == "postgresql+psycopg"
    with pytest.raises(BadInput, match="not a PostgreSQL URL"):
        mastodon_url("sqlite:///mastodon.db")
    with pytest.raises(BadInput, match="database_url"):
        mastodon_url("nonsense")


def test_unreachable_server_is_a_clean_error() -> None:
    with pytest.raises(ConsentryError, match=r"cannot read Mastodon at .*:\*\*\*@127\.0\.0\.1:1"):
        read_mastodon("postgresql://m:secret@127.0.0.1:1/mastodon")


def test_import_mastodon_into_the_lake_is_idempotent(mastodon_db: str, tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")

    first = import_mastodon(lake, mastodon_db)

    assert (first["users"].rows_read, first["users"].rows_new, first["users"].rows_total) == (
        4,
        4,
        4,
    )
    assert (first["posts"].rows_read, first["posts"].rows_new, first["posts"].rows_total) == (
        10,
        10,
        10,
    )
    assert first["posts"].origin.startswith("mastodon:postgresql+psycopg://")
    assert lake.read_arrow("posts").sort_by("post_id").equals(EXPECTED_POSTS)

    again = import_mastodon(lake, mastodon_db)

    assert (again["posts"].rows_new, again["posts"].rows_replaced) == (0, 10)
    assert (
        lake.read_arrow("users").sort_by("user_id").to_pylist()
        == _expected_users(deleted_dave=_utc("2024-03-01 12:00:00.5")).to_pylist()
    )


def test_cli_imports_and_logs_the_runs(mastodon_db: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()  # a home whose store is not initialised yet
    runner = CliRunner()
    env = {"CONSENTRY_DATABASE_URL": "", "CONSENTRY_HOME": ""}
    not_ready = runner.invoke(
        app, ["--home", str(home), "import", "mastodon", "--database-url", mastodon_db], env=env
    )
    assert not_ready.exit_code == 1
    assert "consentry init" in not_ready.stderr
    assert not (home / "lake" / "posts").exists()

    assert runner.invoke(app, ["--home", str(home), "init"], env=env).exit_code == 0
    result = runner.invoke(
        app,
        [
            "--home",
            str(home),
            "import",
            "mastodon",
            "--database-url",
            mastodon_db,
            "--default-region",
            "FR",
            "--json",
        ],
        env=env,
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["users"]["rows_new"] == 4
    assert report["posts"]["rows_new"] == 10
    assert report["posts"]["origin"].startswith("mastodon:postgresql+psycopg://")
    settings = Settings(home=home)
    lake = Lake.of(settings)
    assert set(lake.read_arrow("users").column("region").to_pylist()) == {"FR"}
    with open_store(settings.resolved_database_url) as store:
        runs = store.recent_imports()
    assert sorted((r.id, r.table, r.rows_new) for r in runs) == [
        (report["users"]["run_id"], "users", 4),
        (report["posts"]["run_id"], "posts", 10),
    ]
    # The imported accounts are subjects of the consent ledger, region and all.
    ledger = ledger_for(settings)
    try:
        for user_id in lake.read_arrow("users").column("user_id").to_pylist():
            subject = ledger.subject(user_id)
            assert subject is not None
            assert subject.region == "FR"
    finally:
        ledger.store.close()

    again = runner.invoke(
        app, ["--home", str(home), "import", "mastodon", "--database-url", mastodon_db], env=env
    )
    assert again.exit_code == 0, again.output
    assert "users: read 4, new 0, replaced 4, total 4" in again.stdout
    assert "posts: read 10, new 0, replaced 10, total 10" in again.stdout

    bad = runner.invoke(
        app,
        ["--home", str(home), "import", "mastodon", "--database-url", "sqlite:///m.db"],
        env=env,
    )
    assert bad.exit_code == 2
    assert "--database-url: database_url: not a PostgreSQL URL" in " ".join(bad.stderr.split())
    assert lake.row_count("posts") == 10


def test_a_mastodon_server_registered_as_a_source_is_read_in_place(
    mastodon_db: str, tmp_path: Path
) -> None:
    """`source add users|posts --mastodon URL`: no import; every job reads the server
    through the connector (one snapshot per process and minute), and the lake stores no
    copy of its rows."""
    home = tmp_path / "home"
    runner = CliRunner()
    env = {"CONSENTRY_DATABASE_URL": "", "CONSENTRY_HOME": ""}

    def cli(*args: str) -> Any:
        return runner.invoke(app, ["--home", str(home), *args], env=env)

    assert cli("init").exit_code == 0
    for table in ("users", "posts"):
        added = cli(
            "source", "add", table, "--mastodon", mastodon_db, "--default-region", "FR", "--json"
        )
        assert added.exit_code == 0, added.output
        assert json.loads(added.stdout)["rows"] == {"users": 4, "posts": 10}[table]
    expected = read_mastodon(mastodon_db, default_region="FR")
    lake = Lake.of(Settings(home=home))
    for table in ("users", "posts"):
        assert lake.read_arrow(table).equals(expected[table]), table
        with pytest.raises(ConsentryError, match="mastodon source: it has no versions"):
            lake.history(table)
    assert not list((home / "lake").rglob("*.parquet")), "nothing of the server is copied"
    assert cli("licensee", "add", "lab", "--purpose", "ai_training_third_party").exit_code == 0
    delivered = cli("deliver", "lab", "--json")
    assert delivered.exit_code == 0, delivered.output
    assert json.loads(delivered.stdout)["counts"]["considered"] == 10
    refused = [
        cli("source", "add", "entities", "--mastodon", mastodon_db),
        cli("source", "add", "posts", "--mastodon", mastodon_db, "--purge"),
        cli("source", "add", "posts", "--mastodon", mastodon_db, "--map", "text=body"),
        cli(
            "source", "add", "posts", "--mastodon", mastodon_db.replace("postgres@", "postgres:pw@")
        ),
        cli("source", "add", "posts", "--delta", str(tmp_path), "--default-region", "FR"),
    ]
    assert [r.exit_code for r in refused] == [2, 2, 2, 2, 2]
    messages = " ".join(r.stderr for r in refused)
    for expected_text in (
        "holds users or posts",
        "the server deletes its own",
        "the connector maps",
        "no password in the URL",
        "only with --mastodon",
    ):
        assert expected_text in messages, expected_text


def test_a_process_killed_while_holding_a_snapshot_leaves_it_to_the_next_read(
    mastodon_db: str, tmp_path: Path
) -> None:
    """A process reading a Mastodon source keeps its snapshot (the server's rows) in a
    private temporary folder; killed outright it cannot remove it, and the next process
    that reads a database source does."""
    home = tmp_path / "home"
    env = {"CONSENTRY_DATABASE_URL": "", "CONSENTRY_HOME": ""}
    runner = CliRunner()
    assert runner.invoke(app, ["--home", str(home), "init"], env=env).exit_code == 0
    added = runner.invoke(
        app, ["--home", str(home), "source", "add", "posts", "--mastodon", mastodon_db], env=env
    )
    assert added.exit_code == 0, added.output
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    read = (
        "import os, sys\n"
        "from consentry.engine import Lake\n"
        "from pathlib import Path\n"
        "from consentry.settings import Settings\n"
        f"lake = Lake.of(Settings(home=Path({str(home)!r})))\n"
        "print(lake.read_arrow('posts').num_rows, flush=True)\n"
        "if sys.argv[1:] == ['kill']:\n"
        "    os.kill(os.getpid(), 9)\n"
    )

    def reader(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", read, *args],
            env={**os.environ, "TMPDIR": str(scratch), "CONSENTRY_DATABASE_URL": ""},
            capture_output=True,
            text=True,
            timeout=120,
        )

    killed = reader("kill")
    assert (killed.returncode, killed.stdout) == (-9, "10\n"), killed.stderr
    (left,) = scratch.glob("consentry-source-*")
    assert list(left.glob("posts-*.parquet")), "the killed process's copy of the server's posts"
    finished = reader()
    assert (finished.returncode, finished.stdout) == (0, "10\n"), finished.stderr
    assert not list(scratch.iterdir()), "the next read removed it, and its own at exit"
