"""Licensees: the AI developers a platform delivers posts to, each for one purpose and scope.

A licensee has

* a unique slug `name` and a random `id` (16 hex digits);
* the `purpose` it is licensed for (a purpose key of the policy file) and a scope: regions
  (ISO 3166-1 codes or the groups EU, EEA, UK; none means everywhere) minus excluded
  regions, languages (lower-case BCP 47 tags; none means every language) and the period
  `[period_from, period_to)` of post creation instants (open ends allowed);
* its own 32-byte pseudonymisation secret, stored only sealed with AES-256-GCM under the
  master key (`consentry.keys.Keyring.master_key`) with the licensee id as associated
  data, so a sealed secret copied onto another licensee's row does not open;
* an API key `csk_<id>_<random>` shown once when the licensee is added and stored as
  HMAC-SHA256 under a key derived (HKDF) from the master key. The key has 256 random bits,
  so a per-key salt adds nothing; the keyed hash means a copy of the database alone cannot
  even test guesses.

Every add and disable appends a `licensee.changed` audit event in the same transaction.
Disabling is final in this version. docs/licensees.md is the user-facing description.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consentry.audit import AuditSink, SqlAuditSink
from consentry.audit.event_types import LicenseeChanged
from consentry.delivery.minimise import KINDS, MinimisationConfig
from consentry.errors import BadInput, ConsentryError, Problem, did_you_mean
from consentry.instants import rfc3339
from consentry.keys import MASTER_KEY_ENV, Keyring, master_key_id
from consentry.policy import PolicyFile, expand_region, is_region, load_policy
from consentry.settings import Settings
from consentry.store import Store, open_store
from consentry.store.models import Licensee

__all__ = [
    "API_KEY_PREFIX",
    "LICENSEE_SECRET_SIZE",
    "LicenceTerms",
    "LicenseeRecord",
    "LicenseeRegistry",
    "NewLicensee",
    "api_key_hash",
    "authenticate_api_key",
    "licensee_named",
    "licensee_secret",
    "registry_for",
    "validate_terms",
]

API_KEY_PREFIX: Final = "csk_"
LICENSEE_SECRET_SIZE: Final = 32
"""Bytes in a licensee's pseudonymisation secret (an HMAC-SHA256 key)."""

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{1,8})*")
_API_KEY = re.compile(r"csk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_NONCE_SIZE: Final = 12
_SEAL_CONTEXT: Final = b"consentry licensee secret v1:"
_API_KEY_HASH_INFO: Final = b"consentry licensee api-key hash v1"


@dataclass(frozen=True, slots=True)
class LicenceTerms:
    """What a licence covers, validated and normalised (see `validate_terms`)."""

    name: str
    purpose: str
    regions: tuple[str, ...] = ()
    exclude_regions: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    period_from: datetime | None = None
    period_to: datetime | None = None


def _split(values: Iterable[str]) -> list[str]:
    """Values given as repeated options and/or comma-separated lists, blanks dropped."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _problem(location: str, message: str) -> Problem:
    return Problem(location=location, row=None, field=None, message=message)


def validate_terms(
    name: str,
    purpose: str,
    *,
    policy: PolicyFile,
    regions: Iterable[str] = (),
    exclude_regions: Iterable[str] = (),
    languages: Iterable[str] = (),
    period_from: datetime | None = None,
    period_to: datetime | None = None,
) -> LicenceTerms:
    """Check a licence's terms and return them normalised; BadInput lists every problem.

    1. `name` is a slug: 1-64 characters of `a-z 0-9 -`, starting and ending with a letter
       or digit.
    2. `purpose` is a purpose key in at least one version of `policy`.
    3. Regions and excluded regions (comma-separated or repeated) are ISO 3166-1 alpha-2
       codes or EU, EEA, UK, case-insensitive; stored upper-case, de-duplicated, sorted.
    4. The exclusions must leave some country of `regions` in scope.
    5. Languages are BCP 47-like tags (`en`, `pt-br`, `zh-hant`), stored lower-case,
       de-duplicated, sorted.
    6. Period ends must be timezone-aware and `period_from < period_to` when both are given.
    """
    problems: list[Problem] = []
    if not _NAME.fullmatch(name):
        problems.append(
            _problem(
                "NAME",
                f"{name!r} is not a slug: use 1-64 of a-z, 0-9 and '-', "
                "starting and ending with a letter or digit (e.g. acme-ai)",
            )
        )
    purposes = sorted({p.key for v in policy.versions for p in v.purposes})
    if purpose not in purposes:
        problems.append(
            _problem(
                "--purpose",
                f"{purpose!r} is not a purpose of {policy.source}; "
                f"its purposes are {', '.join(purposes)}",
            )
        )
    normalised: dict[str, tuple[str, ...]] = {}
    for option, given in (("--regions", regions), ("--exclude-regions", exclude_regions)):
        codes = sorted({code.upper() for code in _split(given)})
        unknown = [c for c in codes if not is_region(c)]
        if unknown:
            problems.append(
                _problem(
                    option,
                    f"unknown region {', '.join(unknown)}: use ISO 3166-1 alpha-2 country codes "
                    "or the groups EU, EEA, UK",
                )
            )
        normalised[option] = tuple(c for c in codes if is_region(c))
    included, excluded = normalised["--regions"], normalised["--exclude-regions"]
    if included and excluded:
        scope = frozenset().union(*map(expand_region, included))
        if not scope - frozenset().union(*map(expand_region, excluded)):
            problems.append(
                _problem("--exclude-regions", "excludes every country --regions covers")
            )
    langs = sorted({tag.lower() for tag in _split(languages)})
    bad_langs = [tag for tag in langs if not _LANGUAGE.fullmatch(tag)]
    if bad_langs:
        problems.append(
            _problem(
                "--languages",
                f"not a language tag: {', '.join(bad_langs)} "
                "(use BCP 47 tags such as en, de, pt-br)",
            )
        )
    for option, at in (("--from", period_from), ("--to", period_to)):
        if at is not None and at.tzinfo is None:
            problems.append(_problem(option, "needs a time zone offset"))
    if (
        period_from is not None
        and period_to is not None
        and period_from.tzinfo is not None
        and period_to.tzinfo is not None
        and not period_from < period_to
    ):
        problems.append(
            _problem(
                "--to",
                f"the period ends ({rfc3339(period_to)}) before it starts "
                f"({rfc3339(period_from)}); --from must be earlier than --to",
            )
        )
    if problems:
        raise BadInput(problems)
    return LicenceTerms(
        name=name,
        purpose=purpose,
        regions=included,
        exclude_regions=excluded,
        languages=tuple(langs),
        period_from=None if period_from is None else period_from.astimezone(UTC),
        period_to=None if period_to is None else period_to.astimezone(UTC),
    )


@dataclass(frozen=True, slots=True)
class LicenseeRecord:
    """One licensee as plain data, detached from any database session."""

    id: str
    name: str
    purpose: str
    regions: tuple[str, ...]
    exclude_regions: tuple[str, ...]
    languages: tuple[str, ...]
    minimise: tuple[str, ...]
    """Kinds of identifier replaced in delivered texts (see docs/minimisation.md)."""
    period_from: datetime | None
    period_to: datetime | None
    created_at: datetime
    disabled_at: datetime | None
    api_key_prefix: str
    sealed_secret: bytes = field(repr=False, compare=False)
    """The sealed pseudonymisation secret; open it with `licensee_secret`."""
    master_key_id: str = field(repr=False, compare=False)

    @property
    def active(self) -> bool:
        """False once disabled; a disabled licensee gets no deliveries and no API access."""
        return self.disabled_at is None

    def as_dict(self) -> dict[str, Any]:
        """The public view (JSON-ready): every field except the sealed secret."""
        return {
            "id": self.id,
            "name": self.name,
            "purpose": self.purpose,
            "regions": list(self.regions),
            "exclude_regions": list(self.exclude_regions),
            "languages": list(self.languages),
            "minimise": list(self.minimise),
            "period_from": None if self.period_from is None else rfc3339(self.period_from),
            "period_to": None if self.period_to is None else rfc3339(self.period_to),
            "created_at": rfc3339(self.created_at),
            "disabled_at": None if self.disabled_at is None else rfc3339(self.disabled_at),
            "active": self.active,
            "api_key_prefix": self.api_key_prefix,
        }


@dataclass(frozen=True, slots=True)
class NewLicensee:
    """The result of adding a licensee: its record and its API key (never stored)."""

    record: LicenseeRecord
    api_key: str = field(repr=False)


def _record(row: Licensee) -> LicenseeRecord:
    return LicenseeRecord(
        id=row.id,
        name=row.name,
        purpose=row.purpose,
        regions=tuple(row.regions),
        exclude_regions=tuple(row.exclude_regions),
        languages=tuple(row.languages),
        minimise=tuple(row.minimise),
        period_from=row.period_from,
        period_to=row.period_to,
        created_at=row.created_at,
        disabled_at=row.disabled_at,
        api_key_prefix=row.api_key_prefix,
        sealed_secret=bytes(row.sealed_secret),
        master_key_id=row.master_key_id,
    )


def _associated_data(licensee_id: str) -> bytes:
    return _SEAL_CONTEXT + licensee_id.encode("ascii")


def _seal(master_key: bytes, licensee_id: str, secret: bytes) -> bytes:
    """Nonce (12 random bytes) + AES-256-GCM ciphertext and tag, bound to the licensee id."""
    nonce = os.urandom(_NONCE_SIZE)
    return nonce + AESGCM(master_key).encrypt(nonce, secret, _associated_data(licensee_id))


def licensee_secret(record: LicenseeRecord, keyring: Keyring) -> bytes:
    """The licensee's 32-byte pseudonymisation secret, opened with the master key.

    1. The master key's fingerprint must be the one that sealed it; otherwise
       ConsentryError says the master key is the wrong one (and which one is expected).
    2. Decryption authenticates the ciphertext and the licensee id; a failure means the
       stored secret was altered or moved to another licensee (ConsentryError).
    """
    master = keyring.master_key
    current = master_key_id(master)
    if current != record.master_key_id:
        raise ConsentryError(
            f"cannot open licensee {record.name!r}'s secret: it was sealed under master key "
            f"{record.master_key_id}, but the current master key is {current} "
            f"(set {MASTER_KEY_ENV} or restore keys/master.key)"
        )
    nonce, sealed = record.sealed_secret[:_NONCE_SIZE], record.sealed_secret[_NONCE_SIZE:]
    try:
        return AESGCM(master).decrypt(nonce, sealed, _associated_data(record.id))
    except InvalidTag:
        raise ConsentryError(
            f"licensee {record.name!r}'s sealed secret does not authenticate under master key "
            f"{current}: the stored value was altered or belongs to another licensee"
        ) from None


def _api_key_hash_key(master_key: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_API_KEY_HASH_INFO).derive(
        master_key
    )


def api_key_hash(api_key: str, keyring: Keyring) -> str:
    """HMAC-SHA256 (hex) of `api_key` under a key derived from the master key (HKDF)."""
    key = _api_key_hash_key(keyring.master_key)
    return hmac.new(key, api_key.encode("utf-8"), hashlib.sha256).hexdigest()


class LicenseeRegistry:
    """Licensees in the control-plane store: add, read, disable, authenticate."""

    def __init__(
        self,
        store: Store,
        policy: PolicyFile,
        keyring: Keyring,
        *,
        audit: AuditSink | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.policy = policy
        self.keyring = keyring
        self.audit = audit or SqlAuditSink()
        self._clock = clock

    def add(
        self,
        name: str,
        purpose: str,
        *,
        regions: Iterable[str] = (),
        exclude_regions: Iterable[str] = (),
        languages: Iterable[str] = (),
        period_from: datetime | None = None,
        period_to: datetime | None = None,
        minimise: Iterable[str] | None = None,
    ) -> NewLicensee:
        """Add a licensee; the returned API key is not kept anywhere else.

        1. Terms are checked by `validate_terms`; a name already taken is BadInput.
        2. A fresh id, 32-byte secret (sealed under the master key) and API key (stored
           as its keyed hash) are generated.
        3. The row and a `licensee.changed` audit event (`change: added`) commit together.
        """
        terms = validate_terms(
            name,
            purpose,
            policy=self.policy,
            regions=regions,
            exclude_regions=exclude_regions,
            languages=languages,
            period_from=period_from,
            period_to=period_to,
        )
        kinds = MinimisationConfig.parse(
            None if minimise is None else list(minimise), location="--minimise"
        ).kinds
        master = self.keyring.master_key
        licensee_id = secrets.token_hex(8)
        api_key = f"{API_KEY_PREFIX}{licensee_id}_{secrets.token_urlsafe(32)}"
        row = Licensee(
            id=licensee_id,
            name=terms.name,
            purpose=terms.purpose,
            regions=list(terms.regions),
            exclude_regions=list(terms.exclude_regions),
            languages=list(terms.languages),
            minimise=[k for k in KINDS if k in kinds],
            period_from=terms.period_from,
            period_to=terms.period_to,
            created_at=self._clock(),
            disabled_at=None,
            sealed_secret=_seal(master, licensee_id, secrets.token_bytes(LICENSEE_SECRET_SIZE)),
            master_key_id=master_key_id(master),
            api_key_hash=api_key_hash(api_key, self.keyring),
            api_key_prefix=api_key[: len(API_KEY_PREFIX) + 16 + 1 + 4],
        )
        try:
            with self.store.session() as session:
                if session.scalar(sa.select(Licensee.id).where(Licensee.name == name)):
                    raise self._taken(name)
                session.add(row)
                session.flush()
                self._audit(session, row, "added", row.created_at)
        except IntegrityError:
            # Another process added the same name between our check and our insert.
            raise self._taken(name) from None
        return NewLicensee(record=_record(row), api_key=api_key)

    @staticmethod
    def _taken(name: str) -> BadInput:
        return BadInput(_problem("NAME", f"a licensee named {name!r} already exists"))

    def _audit(self, session: Session, row: Licensee, change: str, at: datetime) -> None:
        self.audit.append(
            session,
            LicenseeChanged(
                licensee_id=row.id,
                name=row.name,
                change=change,
                purpose=row.purpose,
                regions=list(row.regions),
                exclude_regions=list(row.exclude_regions),
                languages=list(row.languages),
                period_from=None if row.period_from is None else rfc3339(row.period_from),
                period_to=None if row.period_to is None else rfc3339(row.period_to),
                api_key_hash_prefix=row.api_key_hash[:12],
                at=rfc3339(at),
            ),
        )

    def licensees(self) -> list[LicenseeRecord]:
        """Every licensee, disabled ones included, by name."""
        with self.store.session() as session:
            rows = session.scalars(sa.select(Licensee).order_by(Licensee.name)).all()
            return [_record(r) for r in rows]

    def find(self, name: str) -> LicenseeRecord | None:
        """The licensee called `name`, or None."""
        with self.store.session() as session:
            row = session.scalar(sa.select(Licensee).where(Licensee.name == name))
            return None if row is None else _record(row)

    def get(self, name: str) -> LicenseeRecord:
        """The licensee called `name`; BadInput naming the known ones when there is none."""
        record = self.find(name)
        if record is None:
            raise self._unknown(name)
        return record

    def _unknown(self, name: str) -> BadInput:
        """Bad input naming the close known names (`did you mean 'acme'?`), else the known
        ones, else saying there are none yet."""
        hint = did_you_mean(name, [r.name for r in self.licensees()])
        return BadInput(
            _problem(
                "licensee",
                f"no licensee named {name!r}; {hint or 'there are none yet (licensee add)'}",
            )
        )

    def disable(self, name: str) -> tuple[LicenseeRecord, bool]:
        """Disable the licensee called `name`; return it and whether this call disabled it.

        1. Unknown name: BadInput.
        2. Already disabled: nothing changes (no second audit event); `False`.
        3. Otherwise `disabled_at` is set to now and a `licensee.changed` audit event
           (`change: disabled`) commits with it. There is no way back in this version.
        """
        with self.store.session() as session:
            row = session.scalar(sa.select(Licensee).where(Licensee.name == name).with_for_update())
            if row is None:
                raise self._unknown(name)
            if row.disabled_at is not None:
                return _record(row), False
            row.disabled_at = max(self._clock(), row.created_at)
            session.flush()
            self._audit(session, row, "disabled", row.disabled_at)
            return _record(row), True

    def authenticate(self, api_key: str) -> LicenseeRecord | None:
        """The active licensee `api_key` belongs to, or None (see `authenticate_api_key`)."""
        return authenticate_api_key(self.store, api_key, self.keyring)

    def secret(self, record: LicenseeRecord) -> bytes:
        """The licensee's pseudonymisation secret (see `licensee_secret`)."""
        return licensee_secret(record, self.keyring)


def authenticate_api_key(store: Store, api_key: str, keyring: Keyring) -> LicenseeRecord | None:
    """The active licensee whose API key is `api_key`, else None.

    1. The key must look like `csk_<16 hex id>_<43 base64url characters>`.
    2. Its keyed hash is compared in constant time with the stored one (computed even when
       no licensee has that id, so timing does not tell which ids exist).
    3. A disabled licensee does not authenticate.
    """
    match = _API_KEY.fullmatch(api_key)
    if match is None:
        return None
    presented = api_key_hash(api_key, keyring)
    with store.session() as session:
        row = session.get(Licensee, match.group(1))
        stored = row.api_key_hash if row is not None else "0" * 64
        if not hmac.compare_digest(presented, stored) or row is None:
            return None
        record = _record(row)
    return record if record.active else None


def registry_for(settings: Settings, *, policy: PolicyFile | None = None) -> LicenseeRegistry:
    """The home's registry: its store (which must be migrated), policy and keyring.

    The caller closes `registry.store`. A store not at the newest migration is a
    ConsentryError telling the user to run `consentry init`.
    """
    store = open_store(settings.resolved_database_url)
    try:
        current, head = store.current_revision(), store.head_revision()
        if current != head:
            raise ConsentryError(
                f"the store at {store.describe()} is at revision {current or 'empty'}, "
                f"not {head}; run `consentry init` to migrate it"
            )
        return LicenseeRegistry(
            store,
            policy or load_policy(settings.policy_file),
            Keyring.for_settings(settings),
        )
    except BaseException:
        store.close()
        raise


def licensee_named(settings: Settings, name: str) -> LicenseeRecord:
    """The home's licensee called `name` (disabled ones included); bad input when unknown."""
    registry = registry_for(settings)
    try:
        return registry.get(name)
    finally:
        registry.store.close()
