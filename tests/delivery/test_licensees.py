"""Licensees over the real store (SQLite and PostgreSQL): terms, secrets, API keys, audit, CLI."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from consentry.audit import SqlAuditSink
from consentry.cli.main import app
from consentry.delivery.licensees import (
    LicenseeRegistry,
    authenticate_api_key,
    licensee_secret,
    validate_terms,
)
from consentry.errors import BadInput, ConsentryError
from consentry.keys import Keyring, encode_master_key, master_key_id, parse_master_key
from consentry.policy import REGION_GROUPS, load_policy
from consentry.settings import DEFAULT_POLICY_FILE, Settings
from consentry.store import open_store
from consentry.store.models import AuditEventRow, Licensee

THIRD = "ai_training_third_party"
POLICY = load_policy(DEFAULT_POLICY_FILE)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LicenseeRegistry]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'c.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    store = open_store(url)
    store.migrate()
    ticks = iter(T0 + timedelta(minutes=i) for i in range(1000))
    yield LicenseeRegistry(store, POLICY, Keyring(tmp_path / "keys"), clock=lambda: next(ticks))
    store.close()


def _audit(registry: LicenseeRegistry) -> list[dict[str, Any]]:
    with registry.store.session() as session:
        return [e.payload for e in SqlAuditSink.read(session, event_type="licensee.changed")]


# -- terms ---------------------------------------------------------------------------------


def test_terms_are_normalised() -> None:
    terms = validate_terms(
        "acme-ai",
        THIRD,
        policy=POLICY,
        regions=["us,eu", " EU ", "de"],
        exclude_regions=["fr"],
        languages=["EN,pt-BR", "en"],
        period_from=datetime(2024, 1, 1, 2, tzinfo=timezone(timedelta(hours=1))),
        period_to=datetime(2025, 1, 1, tzinfo=UTC),
    )
    assert terms.regions == ("DE", "EU", "US")
    assert terms.exclude_regions == ("FR",)
    assert terms.languages == ("en", "pt-br")
    assert terms.period_from == datetime(2024, 1, 1, 1, tzinfo=UTC)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(BadInput) as caught:
        validate_terms(
            "Acme AI",
            "selling_data",
            policy=POLICY,
            regions=["XX", "EU"],
            exclude_regions=["ZZ"],
            languages=["english", "e_n"],
            period_from=datetime(2025, 1, 1, tzinfo=UTC),
            period_to=datetime(2025, 1, 1, tzinfo=UTC),
        )
    text = str(caught.value)
    where = [p.location for p in caught.value.problems]
    assert where == ["NAME", "--purpose", "--regions", "--exclude-regions", "--languages", "--to"]
    assert "'Acme AI' is not a slug" in text
    assert "its purposes are ai_training_first_party, ai_training_third_party" in text
    assert "unknown region XX" in text
    assert "unknown region ZZ" in text
    assert "not a language tag: e_n, english" in text
    assert "--from must be earlier than --to" in text


def test_exclusions_may_not_empty_the_scope_and_instants_need_offsets() -> None:
    with pytest.raises(BadInput, match="excludes every country --regions covers"):
        validate_terms("a", THIRD, policy=POLICY, regions=["FR", "DE"], exclude_regions=["EU"])
    validate_terms("a", THIRD, policy=POLICY, regions=["EEA"], exclude_regions=["EU"])
    with pytest.raises(BadInput, match="--from: needs a time zone offset"):
        validate_terms("a", THIRD, policy=POLICY, period_from=datetime(2024, 1, 1))


_COUNTRIES = sorted(REGION_GROUPS["EEA"] | {"US", "JP", "GB", "BR"})


@given(
    name=st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True),
    regions=st.lists(st.sampled_from([*_COUNTRIES, "EU", "EEA", "UK"]), max_size=6),
    lowercase=st.booleans(),
    langs=st.lists(st.from_regex(r"[a-z]{2,3}(-[a-z0-9]{2,4})?", fullmatch=True), max_size=4),
)
def test_valid_terms_round_trip_normalised(
    name: str, regions: list[str], lowercase: bool, langs: list[str]
) -> None:
    given_regions = [r.lower() if lowercase else r for r in regions]
    terms = validate_terms(
        name, THIRD, policy=POLICY, regions=given_regions, languages=[t.upper() for t in langs]
    )
    assert terms.name == name
    assert terms.regions == tuple(sorted(set(regions)))
    assert terms.languages == tuple(sorted(set(langs)))


@given(name=st.text(max_size=70))
def test_names_outside_the_slug_grammar_are_refused(name: str) -> None:
    slug = re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?", name) is not None
    if slug:
        assert validate_terms(name, THIRD, policy=POLICY).name == name
    else:
        with pytest.raises(BadInput, match=r"^NAME: "):
            validate_terms(name, THIRD, policy=POLICY)


def test_add_stores_sealed_secret_hashed_key_and_audits(registry: LicenseeRegistry) -> None:
    added = registry.add(
        "acme-ai",
        THIRD,
        regions=["EU"],
        languages=["en", "de"],
        period_from=datetime(2024, 11, 15, tzinfo=UTC),
    )
    record = added.record
    assert record.name == "acme-ai"
    assert record.regions == ("EU",)
    assert record.languages == ("de", "en")
    assert record.period_to is None
    assert record.created_at == T0
    assert record.active
    assert len(record.id) == 16
    assert int(record.id, 16) >= 0
    key = added.api_key
    assert key.startswith(f"csk_{record.id}_")
    assert len(key) == 4 + 16 + 1 + 43
    assert key.startswith(record.api_key_prefix)
    assert len(record.api_key_prefix) == 25
    assert key not in repr(added)
    assert key not in repr(record)

    assert registry.get("acme-ai") == record
    assert registry.licensees() == [record]

    secret = registry.secret(record)
    assert len(secret) == 32
    assert secret == licensee_secret(registry.get("acme-ai"), registry.keyring)
    with registry.store.session() as session:
        row = session.get(Licensee, record.id)
        assert row is not None
        stored = {c.name: getattr(row, c.name) for c in Licensee.__table__.columns}
    assert len(stored["sealed_secret"]) == 12 + 32 + 16
    assert secret not in stored["sealed_secret"]
    assert all(key not in str(v) for v in stored.values())
    assert stored["api_key_hash"] != key
    assert len(stored["api_key_hash"]) == 64
    assert stored["master_key_id"] == master_key_id(registry.keyring.master_key)

    (event,) = _audit(registry)
    assert event == {
        "licensee_id": record.id,
        "name": "acme-ai",
        "change": "added",
        "purpose": THIRD,
        "regions": ["EU"],
        "exclude_regions": [],
        "languages": ["de", "en"],
        "period_from": "2024-11-15T00:00:00Z",
        "period_to": None,
        "api_key_hash_prefix": stored["api_key_hash"][:12],
        "at": "2026-01-01T00:00:00Z",
    }
    assert key not in json.dumps(event)
    assert secret.hex() not in json.dumps(event)


def test_each_licensee_has_its_own_secret_and_key(registry: LicenseeRegistry) -> None:
    a = registry.add("a", THIRD)
    b = registry.add("b", "ai_training_first_party")
    assert a.record.id != b.record.id
    assert a.api_key != b.api_key
    assert registry.secret(a.record) != registry.secret(b.record)
    assert [r.name for r in registry.licensees()] == ["a", "b"]


def test_a_taken_name_and_an_unknown_licensee_are_bad_input(registry: LicenseeRegistry) -> None:
    registry.add("acme", THIRD)
    with pytest.raises(BadInput, match="a licensee named 'acme' already exists"):
        registry.add("acme", "business_partners")
    with pytest.raises(BadInput, match="no licensee named 'other'; known: acme"):
        registry.get("other")
    with pytest.raises(BadInput, match="no licensee named 'acmee'; did you mean 'acme'\\?"):
        registry.get("acmee")
    with pytest.raises(BadInput, match="no licensee named 'other'"):
        registry.disable("other")
    assert len(_audit(registry)) == 1
    assert registry.find("other") is None


def test_api_key_authentication(registry: LicenseeRegistry) -> None:
    added = registry.add("acme", THIRD)
    other = registry.add("other", THIRD)
    store, keyring = registry.store, registry.keyring
    assert authenticate_api_key(store, added.api_key, keyring) == added.record
    assert registry.authenticate(other.api_key) == other.record
    key = added.api_key
    last = "A" if key[-1] != "A" else "B"
    for wrong in (
        key[:-1] + last,  # one character off
        key + "x",
        key[:-1],
        "",
        "csk_" + "0" * 16 + "_" + key[-43:],  # unknown id
        f"csk_{added.record.id}_{other.api_key[-43:]}",  # another licensee's secret part
        key.upper(),
    ):
        assert authenticate_api_key(store, wrong, keyring) is None, wrong
    # Under another master key the stored hashes no longer match.
    elsewhere = Keyring(keyring.directory.parent / "elsewhere")
    assert authenticate_api_key(store, key, elsewhere) is None


def test_disable_is_recorded_once_and_final(registry: LicenseeRegistry) -> None:
    added = registry.add("acme", THIRD)
    record, changed = registry.disable("acme")
    assert changed
    assert record.disabled_at == T0 + timedelta(minutes=1)
    assert not record.active
    assert registry.authenticate(added.api_key) is None
    again, changed_again = registry.disable("acme")
    assert not changed_again
    assert again.disabled_at == record.disabled_at
    events = _audit(registry)
    assert [e["change"] for e in events] == ["added", "disabled"]
    assert events[1]["at"] == "2026-01-01T00:01:00Z"
    assert events[1]["licensee_id"] == added.record.id
    # Its secret still opens (past deliveries stay explainable); it just gets nothing new.
    assert len(registry.secret(record)) == 32


def test_wrong_master_key_and_moved_secret_are_clear_errors(registry: LicenseeRegistry) -> None:
    a = registry.add("a", THIRD).record
    b = registry.add("b", THIRD).record
    other = Keyring(registry.keyring.directory, encode_master_key(os.urandom(32)))
    with pytest.raises(ConsentryError, match=r"sealed under master key \w+, but the current"):
        licensee_secret(a, other)
    with registry.store.session() as session:
        row_a, row_b = session.get(Licensee, a.id), session.get(Licensee, b.id)
        assert row_a is not None
        assert row_b is not None
        row_b.sealed_secret = row_a.sealed_secret
    with pytest.raises(ConsentryError, match="does not authenticate"):
        registry.secret(registry.get("b"))


def test_the_database_refuses_incoherent_rows(registry: LicenseeRegistry) -> None:
    record = registry.add("a", THIRD, period_from=datetime(2024, 1, 1, tzinfo=UTC)).record
    for column, value in (
        ("period_to", datetime(2023, 1, 1, tzinfo=UTC)),  # before period_from
        ("disabled_at", datetime(2020, 1, 1, tzinfo=UTC)),  # before created_at
    ):
        with registry.store.session() as session:
            row = session.get(Licensee, record.id)
            assert row is not None
            setattr(row, column, value)
            with pytest.raises(sa.exc.IntegrityError):
                session.flush()
            session.rollback()


def test_a_failed_audit_rolls_back_the_licensee(registry: LicenseeRegistry) -> None:
    class Broken(SqlAuditSink):
        def append(self, session: Any, event: Any) -> int:
            raise RuntimeError("audit store down")

    broken = LicenseeRegistry(registry.store, POLICY, registry.keyring, audit=Broken())
    with pytest.raises(RuntimeError, match="audit store down"):
        broken.add("acme", THIRD)
    assert registry.licensees() == []
    with registry.store.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditEventRow)) == 0


# -- master key ------------------------------------------------------------------------------


def test_master_key_text_form() -> None:
    key = bytes(range(32))
    text = encode_master_key(key)
    assert len(text) == 43
    assert "=" not in text
    assert parse_master_key(text) == key
    assert parse_master_key(f"  {text}=\n") == key
    assert parse_master_key(base64.urlsafe_b64encode(key).decode()) == key
    with pytest.raises(BadInput, match=r"CONSENTRY_MASTER_KEY: the master key decodes to 16 bytes"):
        parse_master_key(encode_master_key(key[:16]))
    with pytest.raises(BadInput, match="is not base64url text"):
        parse_master_key(base64.b64encode(b"\xfb" * 32).decode())  # '+' and '/': not url-safe
    with pytest.raises(BadInput, match="is not base64url text"):
        parse_master_key("")
    with pytest.raises(BadInput, match="not valid base64url"):
        parse_master_key("A" * 41)  # 41 characters cannot be base64 of whole bytes


def test_master_key_file_and_environment(tmp_path: Path) -> None:
    from_file = Keyring(tmp_path / "keys")
    key = from_file.master_key
    path = tmp_path / "keys" / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert parse_master_key(path.read_text()) == key == from_file.master_key
    env_key = os.urandom(32)
    settings = Settings(home=tmp_path, master_key=encode_master_key(env_key))
    assert Keyring.for_settings(settings).master_key == env_key
    assert encode_master_key(env_key) not in repr(settings)
    assert Keyring.for_home(tmp_path).master_key == key
    path.write_text("not a key\n")
    with pytest.raises(BadInput, match=f"{path}: the master key is not base64url"):
        _ = Keyring(tmp_path / "keys").master_key


# -- CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CONSENTRY_DATABASE_URL", "CONSENTRY_HOME", "CONSENTRY_MASTER_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CONSENTRY_POLICY_FILE", raising=False)
    home = tmp_path / "home"
    assert CliRunner().invoke(app, ["--home", str(home), "init"]).exit_code == 0
    return home


def _run(home: Path, *args: str) -> Any:
    return CliRunner().invoke(app, ["--home", str(home), "licensee", *args])


def test_cli_add_list_show_disable(cli_home: Path) -> None:
    added = _run(
        cli_home,
        "add",
        "acme-ai",
        "--purpose",
        THIRD,
        "--regions",
        "EU",
        "--regions",
        "us",
        "--exclude-regions",
        "FR",
        "--languages",
        "en,de",
        "--from",
        "2024-11-15",
        "--to",
        "2026-01-01T00:00:00+01:00",
        "--json",
    )
    assert added.exit_code == 0, added.output
    report = json.loads(added.stdout)
    licensee, api_key = report["licensee"], report["api_key"]
    assert licensee["regions"] == ["EU", "US"]
    assert licensee["exclude_regions"] == ["FR"]
    assert licensee["languages"] == ["de", "en"]
    assert licensee["period_from"] == "2024-11-15T00:00:00Z"
    assert licensee["period_to"] == "2025-12-31T23:00:00Z"
    assert licensee["active"] is True
    assert licensee["disabled_at"] is None
    assert "sealed_secret" not in licensee
    assert "api_key_hash" not in licensee

    show = _run(cli_home, "show", "acme-ai", "--json")
    assert show.exit_code == 0, show.output
    assert json.loads(show.stdout) == licensee
    assert api_key not in show.stdout
    listed = _run(cli_home, "list", "--json")
    assert json.loads(listed.stdout) == [licensee]

    human = _run(cli_home, "show", "acme-ai")
    assert "purpose    ai_training_third_party" in human.stdout
    assert "period     [2024-11-15T00:00:00Z, 2025-12-31T23:00:00Z)" in human.stdout
    assert "status     active" in human.stdout
    table = _run(cli_home, "list")
    assert table.exit_code == 0
    assert "acme-ai" in table.stdout
    assert "active" in table.stdout

    registry_store = open_store(f"sqlite:///{cli_home / 'consentry.db'}")
    try:
        record = authenticate_api_key(registry_store, api_key, Keyring.for_home(cli_home))
        assert record is not None
        assert record.name == "acme-ai"
    finally:
        registry_store.close()

    disabled = _run(cli_home, "disable", "acme-ai", "--json")
    assert disabled.exit_code == 0, disabled.output
    out = json.loads(disabled.stdout)
    assert out["changed"] is True
    assert out["licensee"]["active"] is False
    again = _run(cli_home, "disable", "acme-ai")
    assert again.exit_code == 0
    assert "acme-ai was already disabled at" in again.stdout
    assert "disabled" in _run(cli_home, "list").stdout


def test_cli_add_human_output_shows_the_key_once(cli_home: Path) -> None:
    result = _run(cli_home, "add", "acme", "--purpose", THIRD)
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("API key    csk_")]
    assert "shown only now" in result.stderr
    key = line.split()[-1]
    assert key not in _run(cli_home, "list").stdout
    assert key not in _run(cli_home, "show", "acme").stdout
    assert "no licensees yet" not in _run(cli_home, "list").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "Acme", "--purpose", THIRD], "NAME: 'Acme' is not a slug"),
        (["add", "acme", "--purpose", "nope"], "--purpose: 'nope' is not a purpose"),
        (["add", "acme", "--purpose", THIRD, "--regions", "EU,XX"], "unknown region XX"),
        (["add", "acme", "--purpose", THIRD, "--languages", "en_US"], "not a language tag"),
        (
            ["add", "acme", "--purpose", THIRD, "--from", "2025-01-01", "--to", "2024-01-01"],
            "--from must be earlier than --to",
        ),
        (["add", "acme", "--purpose", THIRD, "--from", "yesterday"], "--from: 'yesterday'"),
        (["add", "acme", "--purpose", THIRD, "--to", "2024-01-01T00:00:00"], "needs an offset"),
        (["show", "ghost"], "no licensee named 'ghost'; there are none yet"),
        (["disable", "ghost"], "no licensee named 'ghost'"),
    ],
)
def test_cli_bad_input_exits_2(cli_home: Path, args: list[str], message: str) -> None:
    result = _run(cli_home, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert json.loads(_run(cli_home, "list", "--json").stdout) == []


def test_cli_duplicate_name_exits_2(cli_home: Path) -> None:
    assert _run(cli_home, "add", "acme", "--purpose", THIRD).exit_code == 0
    result = _run(cli_home, "add", "acme", "--purpose", THIRD)
    assert result.exit_code == 2
    assert "a licensee named 'acme' already exists" in result.stderr
    assert [r["name"] for r in json.loads(_run(cli_home, "list", "--json").stdout)] == ["acme"]


def test_cli_needs_a_migrated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSENTRY_DATABASE_URL", raising=False)
    home = tmp_path / "never-initialised"
    home.mkdir()  # a home without a store (a missing home is exit 2: tests/cli/test_polish.py)
    result = _run(home, "list")
    assert result.exit_code == 1
    assert "run `consentry init`" in " ".join(result.stderr.split())


def test_cli_uses_the_environment_master_key(
    cli_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    added = json.loads(_run(cli_home, "add", "acme", "--purpose", THIRD, "--json").stdout)
    monkeypatch.setenv("CONSENTRY_MASTER_KEY", encode_master_key(os.urandom(32)))
    # Reading works without the master key; nothing needs the secret.
    assert _run(cli_home, "show", "acme").exit_code == 0
    # A licensee added under the environment's key opens with it, not with the file's.
    second = json.loads(_run(cli_home, "add", "beta", "--purpose", THIRD, "--json").stdout)
    env_keyring = Keyring.for_settings(Settings.from_env(home=cli_home))
    store = open_store(f"sqlite:///{cli_home / 'consentry.db'}")
    try:
        registry = LicenseeRegistry(store, POLICY, env_keyring)
        assert len(registry.secret(registry.get("beta"))) == 32
        assert registry.authenticate(second["api_key"]) is not None
        with pytest.raises(ConsentryError, match="sealed under master key"):
            registry.secret(registry.get("acme"))
        assert registry.authenticate(added["api_key"]) is None
    finally:
        store.close()
    monkeypatch.setenv("CONSENTRY_MASTER_KEY", "short")
    bad = _run(cli_home, "add", "gamma", "--purpose", THIRD)
    assert bad.exit_code == 2
    assert "CONSENTRY_MASTER_KEY: the master key" in " ".join(bad.stderr.split())
