"""The doctor: check every written invariant of a home (docs/invariants.md) and name the first
violation.

Each check reads the store and the lake as they are (nothing is written) and compares what
the promises say must hold with what is there, vectorised on DuckDB. `consentry doctor`
prints the checks and exits 1 naming the first violation; the fault-injection tests run it
after killing every job at every step.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import duckdb
import ibis
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.orm import Session

from consentry.audit import AuditLog
from consentry.delivery.build import LINEAGE_TABLE
from consentry.delivery.keyset import KeySet
from consentry.delivery.service import deliveries_dir, verify_delivery
from consentry.engine import Lake
from consentry.engine.hmac import hmac_sql
from consentry.jobs import owner_alive, pending_jobs
from consentry.keys import Keyring
from consentry.ledger.anchor import (
    DIGEST_MODULUS,
    anchor_key,
    digest_sums_by,
    event_rows,
    subtract_digests,
)
from consentry.ledger.bulk import resolve_consent_bulk
from consentry.ledger.rules import ConsentRule
from consentry.policy import Choice, PolicyFile, load_policy
from consentry.retention import anonymisation_key
from consentry.retention.candidates import ANON_PREFIX, LAKE_CATEGORIES
from consentry.retention.verify import purged_keys_in
from consentry.settings import Settings
from consentry.signing import Signer
from consentry.store import Store, open_store
from consentry.store.arrow import select_arrow
from consentry.store.models import (
    AuditEventRow,
    ConsentStateRow,
    DeliveryRow,
    Licensee,
    RetentionPurge,
    RevocationRow,
    Subject,
)

__all__ = ["INVARIANTS", "Check", "DoctorReport", "run_doctor"]

INVARIANTS: Final[dict[str, str]] = {
    "I1": "no delivered record of a user whose explicit or GPC choice, as the ledger held it "
    "when the delivery was built, resolves to deny at the delivery's as-of",
    "I2": "every delivery that exists has its directory, its manifest (signature and files "
    "verify) and its delivery.built audit event with the manifest's hash; no other "
    "delivery directory exists",
    "I3": "every lineage row belongs to a delivery that exists, and each delivery's lineage "
    "counts exactly its delivered records",
    "I4": "a verified purge left none of its deleted keys in any readable version of the lake "
    "or in the store, and every "
    "purged post a licensee received is revoked for that licensee",
    "I5": "consent_state is the fold of consent_events, and every consent event is anchored "
    "in the audit log with digests that add up",
    "I6": "imports are all or nothing: the lake's users are the ledger's subjects, every lake "
    "consent event is in the ledger as it is in the lake, and no job is left interrupted",
    "I7": "the audit log verifies: every leaf, subtree, head and checkpoint",
}
"""Invariant id -> the promise it checks (docs/invariants.md states each; a test checks)."""

_SHOWN: Final = 20
"""Violations listed per check (all are counted)."""
_UTC = pa.timestamp("us", tz="UTC")


@dataclass(slots=True)
class Check:
    """One invariant's outcome: what was examined and every violation found."""

    invariant: str
    checked: int = 0
    count: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.count == 0

    def flag(self, message: str, n: int = 1) -> None:
        self.count += n
        if len(self.violations) < _SHOWN:
            self.violations.append(message)

    def to_json(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "promise": INVARIANTS[self.invariant],
            "ok": self.ok,
            "checked": self.checked,
            "violations": self.count,
            "shown": self.violations,
        }


@dataclass(frozen=True, slots=True)
class DoctorReport:
    """Every check, in invariant order."""

    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def first_violation(self) -> str | None:
        for check in self.checks:
            if check.violations:
                return f"{check.invariant}: {check.violations[0]}"
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "first_violation": self.first_violation,
            "checks": [c.to_json() for c in self.checks],
        }


@dataclass(frozen=True, slots=True)
class _Home:
    """What the checks read, opened once."""

    settings: Settings
    store: Store
    lake: Lake
    policy: PolicyFile
    keyring: Keyring


@contextmanager
def _duck(**tables: pa.Table) -> Iterator[duckdb.DuckDBPyConnection]:
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        con.execute("SET TimeZone = 'UTC'")
        for name, table in tables.items():
            con.register(name, table)
        yield con
    finally:
        con.close()


def _rows(session: Session, columns: Sequence[Any], types: Sequence[pa.DataType]) -> pa.Table:
    """The store rows of `columns` as Arrow."""
    schema = pa.schema([(c.key, t) for c, t in zip(columns, types, strict=True)])
    return select_arrow(session, sa.select(*columns), schema)


def _deliveries(session: Session) -> pa.Table:
    columns = [
        DeliveryRow.id,
        DeliveryRow.licensee_id,
        DeliveryRow.purpose,
        DeliveryRow.as_of,
        DeliveryRow.created_at,
        DeliveryRow.delivered,
        DeliveryRow.manifest_sha256,
        DeliveryRow.audit_seq,
        DeliveryRow.purged_at,
    ]
    types = [pa.string()] * 3 + [_UTC, _UTC, pa.int64(), pa.string(), pa.int64(), _UTC]
    return _rows(session, columns, types)


def _lineage_files(lake: Lake) -> list[str] | None:
    """The lineage table's data files; None when it has none."""
    return lake.files(LINEAGE_TABLE) or None


# --- I1 ---------------------------------------------------------------------------------------


def _consent_before_delivery(home: _Home, events: pa.Table, deliveries: pa.Table) -> Check:
    """I1: resolve every delivered author at the delivery's as-of with the ledger as it was
    when the delivery was built (events recorded by then) through the one bulk rule
    (`resolve_consent_bulk`); an explicit or GPC deny is a violation. Defaults hang on account
    facts (region, age) that may have changed since, so they are not re-judged here."""
    check = Check("I1")
    lineage_files = _lineage_files(home.lake)
    live = deliveries.filter(pc.is_null(deliveries["purged_at"]))
    if lineage_files is None or live.num_rows == 0:
        return check
    users = home.lake.read_arrow("users").select(["user_id", "region", "birth_date"])
    backend = ibis.duckdb.connect()
    try:
        for d in live.to_pylist():
            with _duck() as con:
                lineage = home.lake.relation(con, lineage_files, "lineage")
                authors = con.sql(
                    f"SELECT DISTINCT author_id AS user_id FROM {lineage} "
                    f"WHERE delivery_id = '{d['id']}'"
                ).to_arrow_table()
            check.checked += authors.num_rows
            if authors.num_rows == 0:
                continue
            known = events.filter(
                pc.and_(
                    pc.equal(events["purpose"], d["purpose"]),
                    pc.less_equal(events["recorded_at"], pa.scalar(d["created_at"], _UTC)),
                )
            ).select(["user_id", "purpose", "choice", "at", "source", "event_id"])
            facts = ibis.memtable(authors).left_join(ibis.memtable(users), "user_id")
            facts = facts.select("user_id", "region", "birth_date")
            resolved = backend.to_pyarrow(
                resolve_consent_bulk(
                    home.policy, facts, ibis.memtable(known), d["purpose"], d["as_of"]
                )
            )
            denied = resolved.filter(
                pc.and_(
                    pc.equal(resolved["decision"], Choice.DENY.value),
                    pc.is_in(
                        resolved["rule"],
                        value_set=pa.array([ConsentRule.EXPLICIT.value, ConsentRule.GPC.value]),
                    ),
                )
            )
            if denied.num_rows:
                check.flag(
                    f"delivery {d['id']} carries posts of {denied.num_rows:,} author(s) who had "
                    f"opted out of {d['purpose']} by its as-of",
                    denied.num_rows,
                )
    finally:
        backend.disconnect()
    return check


# --- I2, I3 -----------------------------------------------------------------------------------


def _deliveries_audited(home: _Home, deliveries: pa.Table, live_staging: set[str]) -> Check:
    """I2: each existing delivery against its directory, manifest, signature, files and audit
    event; no directory (or staging directory) without a delivery or a live job."""
    check = Check("I2")
    root = deliveries_dir(home.settings)
    keys = KeySet.for_home(home.settings.home).jwks()
    live = deliveries.filter(pc.is_null(deliveries["purged_at"])).to_pylist()
    seqs = [d["audit_seq"] for d in live]
    with home.store.session() as session:
        audited = {
            seq: json.loads(payload)
            for seq, payload in session.execute(
                sa.select(AuditEventRow.seq, AuditEventRow.payload).where(
                    AuditEventRow.seq.in_(seqs), AuditEventRow.event_type == "delivery.built"
                )
            )
        }
    for d in live:
        check.checked += 1
        directory = root / d["id"]
        manifest = directory / "manifest.json"
        if not manifest.is_file():
            check.flag(f"delivery {d['id']} exists but its directory or manifest is missing")
            continue
        digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
        event = audited.get(d["audit_seq"])
        if event is None or event.get("delivery_id") != d["id"]:
            check.flag(f"delivery {d['id']} has no delivery.built audit event")
        elif event.get("manifest_sha256") != digest or d["manifest_sha256"] != digest:
            check.flag(f"delivery {d['id']}: manifest.json differs from the audited hash")
        report = verify_delivery(directory, keys)
        if not report.ok:
            check.flag(f"delivery {d['id']} does not verify: {report.problems[0]}")
    known = {d["id"] for d in live}
    if root.is_dir():
        for entry in sorted(root.iterdir()):
            if entry.name.startswith(".staging-"):
                if entry.name not in live_staging:
                    check.flag(f"{entry.name}: a staging directory no running job owns")
            elif not entry.name.startswith(".") and entry.is_dir() and entry.name not in known:
                check.flag(f"{entry.name}: a delivery directory with no recorded delivery")
    return check


def _lineage_belongs(home: _Home, deliveries: pa.Table, live_tokens: set[str]) -> Check:
    """I3: lineage rows per delivery id against the existing deliveries' delivered counts."""
    check = Check("I3")
    lineage_files = _lineage_files(home.lake)
    live = deliveries.filter(pc.is_null(deliveries["purged_at"])).select(["id", "delivered"])
    for token in home.lake.staged_tokens(LINEAGE_TABLE) if home.lake.exists(LINEAGE_TABLE) else []:
        if token not in live_tokens:
            check.flag(f"a staged lineage snapshot ({token}) no running job owns")
    if lineage_files is None:
        for d in live.to_pylist():
            if d["delivered"]:
                check.flag(f"delivery {d['id']} has no lineage")
        return check
    with _duck(live=live) as con:
        lineage = home.lake.relation(con, lineage_files, "lineage")
        rows = con.execute(
            f"SELECT coalesce(l.delivery_id, d.id), l.n, d.delivered FROM "
            f"(SELECT delivery_id, count(*) AS n FROM {lineage} GROUP BY delivery_id) l "
            "FULL OUTER JOIN live d ON d.id = l.delivery_id "
            "WHERE d.id IS NULL OR coalesce(l.n, 0) <> d.delivered ORDER BY 1"
        ).fetchall()
        total = con.execute(f"SELECT count(*) FROM {lineage}").fetchall()[0][0]
    check.checked = int(total)
    for delivery_id, n, delivered in rows:
        if delivered is None:
            check.flag(f"{n:,} lineage rows name {delivery_id}, which is not a delivery", n)
        else:
            check.flag(f"delivery {delivery_id}: {n or 0:,} lineage rows for {delivered:,} records")
    return check


# --- I4 ---------------------------------------------------------------------------------------

_KEY_COLUMNS: Final = {
    "posts": "post_id",
    "profile": "user_id",
    "consent_evidence": "event_id",
    "access_events": "request_id",
}


_KEYS: Final = pa.schema([("k", pa.string())])


def _purges_stay_purged(home: _Home, events: pa.Table) -> Check:
    """I4: the keyed digests of every verified purge's deleted keys against the digests of
    every key now in the store and in any still-readable version of the lake; purged
    delivered posts against revocations."""
    check = Check("I4")
    key = anonymisation_key(home.keyring)
    folder = home.settings.home / "retention" / "purges"
    with home.store.session() as session:
        purges = session.execute(
            sa.select(RetentionPurge.id, RetentionPurge.evidence).where(
                RetentionPurge.state == "verified"
            )
        ).all()
        subjects = _rows(session, [Subject.user_id], [pa.string()])
        revoked = _revocations(session)
    files = [
        folder / evidence["purged_keys"]
        for _, evidence in purges
        if evidence and evidence.get("purged_keys")
    ]
    if not files:
        return check
    digests = pa.concat_tables([pq.read_table(f) for f in files if f.exists()])
    for purge_id, evidence in purges:
        if (
            evidence
            and evidence.get("purged_keys")
            and not (folder / evidence["purged_keys"]).exists()
        ):
            check.flag(f"purge {purge_id}: its record of purged keys is missing")
    check.checked = digests.num_rows
    present: dict[str, list[pa.Table]] = {c: [] for c in _KEY_COLUMNS}
    for category, column in _KEY_COLUMNS.items():
        table = LAKE_CATEGORIES[category]
        # Every version time travel can still read, not only the latest.
        files = home.lake.reachable_files(table)
        if files:
            present[category].append(
                home.lake.read_files(files, columns=[column], table=table).rename_columns(["k"])
            )
    present["profile"].append(subjects.rename_columns(["k"]))
    present["consent_evidence"].append(events.select(["event_id"]).rename_columns(["k"]))
    for category, tables in present.items():
        wanted = digests.filter(pc.equal(digests["category"], category))
        if wanted.num_rows == 0 or not tables:
            continue
        keys = pa.concat_tables([t.cast(_KEYS) for t in tables])
        with _duck(keys=keys) as con:
            back = purged_keys_in(con, "keys", "k", wanted, key)
        if back:
            check.flag(f"{back:,} {category} key(s) a verified purge deleted are back", int(back))
    lineage_files = _lineage_files(home.lake)
    posts = digests.filter(pc.equal(digests["category"], "posts"))
    if lineage_files is not None and posts.num_rows:
        with _duck(posts=posts, revoked=revoked) as con:
            lineage = home.lake.relation(con, lineage_files, "lineage")
            untold = con.execute(
                f"SELECT count(*) FROM (SELECT DISTINCT licensee, record_id, "
                f"{hmac_sql('post_id', key, 'duckdb')} AS d FROM {lineage}) l "
                "SEMI JOIN posts p ON p.key_digest = l.d "
                "ANTI JOIN revoked r ON r.licensee = l.licensee AND r.record_id = l.record_id"
            ).fetchall()[0][0]
        if untold:
            check.flag(f"{untold:,} purged delivered record(s) were never revoked", int(untold))
    return check


def _revocations(session: Session) -> pa.Table:
    """(licensee name, record id) of every revocation in the log."""
    rows = session.execute(
        sa.select(Licensee.name, RevocationRow.record_id).join(
            Licensee, Licensee.id == RevocationRow.licensee_id
        )
    ).all()
    return pa.table(
        {
            "licensee": pa.array([r[0] for r in rows], pa.string()),
            "record_id": pa.array([r[1] for r in rows], pa.string()),
        }
    )


# --- I5 ---------------------------------------------------------------------------------------

_ANCHORS: Final = ("consent.changed", "consent.imported", "consent.anchored")


def _ledger_anchored(home: _Home, events: pa.Table) -> Check:
    """I5: the fold of consent_events against consent_state, and every anchor's digest sum
    against its events (what purges took out and put back reconciles the rest)."""
    check = Check("I5")
    check.checked = events.num_rows
    with home.store.session() as session:
        state = _rows(
            session,
            [
                ConsentStateRow.user_id,
                ConsentStateRow.purpose,
                ConsentStateRow.choice,
                ConsentStateRow.at,
                ConsentStateRow.source,
                ConsentStateRow.event_id,
            ],
            [pa.string()] * 3 + [_UTC, pa.string(), pa.string()],
        )
        # Events written before anchoring existed carry no digest and anchor nothing: the
        # events they recorded were anchored by `consent.anchored` at the upgrade.
        anchors = {
            seq: int(body["events_digest"], 16)
            for seq, body in (
                (seq, json.loads(payload))
                for seq, payload in session.execute(
                    sa.select(AuditEventRow.seq, AuditEventRow.payload).where(
                        AuditEventRow.event_type.in_(_ANCHORS)
                    )
                )
            )
            if "events_digest" in body
        }
        applied = [
            json.loads(p)
            for (p,) in session.execute(
                sa.select(AuditEventRow.payload).where(
                    AuditEventRow.event_type == "retention.applied"
                )
            )
        ]
    with _duck(events=events, state=state) as con:
        wrong = con.execute(
            """
            WITH fold AS (
                SELECT user_id, purpose, arg_max(event_id, ("at", event_id)) AS event_id
                FROM events GROUP BY user_id, purpose
            ),
            expected AS (
                SELECT e.user_id, e.purpose, e.choice, e."at", e.source, e.event_id
                FROM fold f JOIN events e USING (event_id)
            )
            SELECT coalesce(x.user_id, s.user_id), coalesce(x.purpose, s.purpose)
            FROM expected x FULL OUTER JOIN state s USING (user_id, purpose)
            WHERE x.event_id IS DISTINCT FROM s.event_id OR x.choice IS DISTINCT FROM s.choice
               OR x."at" IS DISTINCT FROM s."at" OR x.source IS DISTINCT FROM s.source
            """
        ).fetchall()
    if wrong:
        user, purpose = wrong[0]
        check.flag(
            f"consent_state differs from the fold of consent_events for {len(wrong):,} "
            f"(user, purpose), e.g. ({user}, {purpose})",
            len(wrong),
        )
    unanchored = events.filter(pc.is_null(events["anchor_seq"]))
    if unanchored.num_rows:
        check.flag(
            f"{unanchored.num_rows:,} consent event(s) have no anchor in the audit log "
            f"(e.g. {unanchored['event_id'][0]}): recorded outside Consentry",
            unanchored.num_rows,
        )
    key = anchor_key(home.keyring.pseudonym_key)
    actual = digest_sums_by(key, events.filter(pc.is_valid(events["anchor_seq"])), "anchor_seq")
    for seq in sorted(s for s in set(actual) - set(anchors) if s is not None):
        check.flag(f"consent events name audit event {seq} as their anchor; it anchors nothing")
    deficit = 0
    short: list[int] = []
    for seq, expected in sorted(anchors.items()):
        have = actual.get(seq, 0)
        if expected != have:
            short.append(seq)
            deficit = (deficit + subtract_digests(expected, have)) % DIGEST_MODULUS
    purged = 0
    for payload in applied:
        removed = int(payload.get("consent_anchor_removed", "0"), 16)
        added = int(payload.get("consent_anchor_added", "0"), 16)
        purged = (purged + subtract_digests(removed, added)) % DIGEST_MODULUS
    if deficit != purged:
        example = f" (e.g. audit event {short[0]})" if short else ""
        check.flag(
            f"consent events of {len(short):,} anchor(s){example} were changed, added or "
            "removed outside Consentry: their digests no longer add up",
            max(len(short), 1),
        )
    return check


# --- I6 ---------------------------------------------------------------------------------------


def _imports_whole(home: _Home, events: pa.Table, jobs: list[Any], tokens: set[str]) -> Check:
    """I6: lake users against subjects (facts too), lake consent events against the ledger,
    and the jobs: none interrupted, no staged snapshot without its job."""
    check = Check("I6")
    for table in home.lake.tables():
        for token in home.lake.staged_tokens(table):
            if token not in tokens:
                check.flag(f"lake table {table}: a staged snapshot ({token}) no running job owns")
    with home.store.session() as session:
        subjects = _rows(
            session,
            [
                Subject.user_id,
                Subject.region,
                Subject.birth_date,
                Subject.protected,
                Subject.created_at,
                Subject.deactivated_at,
                Subject.deleted_at,
            ],
            [pa.string(), pa.string(), pa.date32(), pa.bool_(), _UTC, _UTC, _UTC],
        )
    users = home.lake.read_arrow("users")
    lake_events = home.lake.read_arrow("consent_events")
    check.checked = users.num_rows + lake_events.num_rows
    with _duck(users=users, subjects=subjects, lake_events=lake_events, ledger=events) as con:
        users_off = con.execute(
            f"""
            SELECT coalesce(u.user_id, s.user_id) FROM users u FULL OUTER JOIN subjects s
            USING (user_id)
            WHERE u.user_id IS NULL OR s.user_id IS NULL
               OR (CASE WHEN starts_with(u.region, '{ANON_PREFIX}') THEN NULL ELSE u.region END)
                  IS DISTINCT FROM s.region
               OR u.birth_date IS DISTINCT FROM s.birth_date
               OR u.protected IS DISTINCT FROM s.protected
               OR u.created_at IS DISTINCT FROM s.created_at
               OR u.deactivated_at IS DISTINCT FROM s.deactivated_at
               OR u.deleted_at IS DISTINCT FROM s.deleted_at
            ORDER BY 1
            """
        ).fetchall()
        events_off = con.execute(
            """
            SELECT l.event_id FROM lake_events l LEFT JOIN ledger g USING (event_id)
            WHERE g.event_id IS NULL OR l.user_id <> g.user_id OR l.purpose <> g.purpose
               OR l.choice <> g.choice OR l."at" <> g."at" OR l.source <> g.source
            ORDER BY 1
            """
        ).fetchall()
    if users_off:
        check.flag(
            f"{len(users_off):,} user(s) differ between the lake and the ledger's subjects "
            f"(e.g. {users_off[0][0]})",
            len(users_off),
        )
    if events_off:
        check.flag(
            f"{len(events_off):,} lake consent event(s) are missing from the ledger or differ "
            f"(e.g. {events_off[0][0]})",
            len(events_off),
        )
    for job in jobs:
        check.flag(
            f"{job.kind} job {job.id} ({job.subject}) was interrupted at {job.step}: "
            "run `consentry recover`"
        )
    return check


# --- I7 ---------------------------------------------------------------------------------------


def _audit_log(home: _Home) -> Check:
    check = Check("I7")
    report = AuditLog(home.store).verify(Signer.from_keyring(home.keyring).public_key)
    check.checked = report.size
    for problem in report.problems:
        check.flag(problem)
    return check


def _interrupted(home: _Home) -> tuple[list[Any], set[str], set[str]]:
    """Pending jobs whose process is gone, and the staging names and lake tokens of live
    ones (those are allowed to exist)."""
    dead: list[Any] = []
    staging: set[str] = set()
    tokens: set[str] = set()
    for job in pending_jobs(home.store):
        if owner_alive(home.settings, job.id):
            staging.add(str(job.intent.get("staging", "")))
            tokens.add(str(job.intent.get("token", "")))
            for entry in job.intent.get("tables", {}).values():
                tokens.add(str(entry.get("token", "")))
        else:
            dead.append(job)
    return dead, staging, tokens


def run_doctor(
    settings: Settings, *, on_check: Callable[[str], None] | None = None
) -> DoctorReport:
    """Check every invariant of the home (docs/invariants.md); nothing is written.

    1. The store must be initialised; the lake may be empty.
    2. Each check examines everything it covers and counts every violation, listing the
       first ones; the report's first violation is the lowest-numbered invariant's first.
    """
    tell = on_check or (lambda _name: None)
    store = open_store(settings.resolved_database_url)
    try:
        home = _Home(
            settings,
            store,
            Lake.of(settings),
            load_policy(settings.policy_file),
            Keyring.for_settings(settings),
        )
        with store.session() as session:
            events = event_rows(session)
            deliveries = _deliveries(session)
        dead, staging, tokens = _interrupted(home)
        checks: list[Check] = []
        runs: tuple[tuple[str, Callable[[], Check]], ...] = (
            ("I1", lambda: _consent_before_delivery(home, events, deliveries)),
            ("I2", lambda: _deliveries_audited(home, deliveries, staging)),
            ("I3", lambda: _lineage_belongs(home, deliveries, tokens)),
            ("I4", lambda: _purges_stay_purged(home, events)),
            ("I5", lambda: _ledger_anchored(home, events)),
            ("I6", lambda: _imports_whole(home, events, dead, tokens)),
            ("I7", lambda: _audit_log(home)),
        )
        for invariant, run in runs:
            tell(f"{invariant}: {INVARIANTS[invariant]}")
            checks.append(run())
        return DoctorReport(checks)
    finally:
        store.close()
