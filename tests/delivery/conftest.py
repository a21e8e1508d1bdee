"""A small, hand-built platform whose every post's eligibility is known, and homes holding it.

`WORLD_POSTS` lists each post with the reasons it fails for two licensees at `AS_OF`:
`open` (third-party training, no scope) and `eu` (third-party training, EU, German and
French, posts from 2024-06-01). Every one of the eleven reason codes occurs. The tests
evaluate the expression on these tables directly, and build real deliveries from a home
whose lake and ledger hold them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from consentry.cli.admin import init_home
from consentry.cli.main import app as cli
from consentry.delivery.eligibility import REASON_ORDER, LicenceScope
from consentry.delivery.licensees import LicenseeRecord, registry_for
from consentry.delivery.service import deliver, deliveries_dir
from consentry.engine import Lake
from consentry.ledger.sync import sync_ledger
from consentry.schema import arrow_schema
from consentry.settings import Settings
from consentry.sources.importer import import_arrow

__all__ = [
    "AS_OF",
    "EU_TERMS",
    "THIRD",
    "WORLD_POSTS",
    "LakeHome",
    "eu_scope",
    "expected_counts",
    "expected_reasons",
    "make_lake_home",
    "world_events",
    "world_posts",
    "world_users",
]

THIRD = "ai_training_third_party"
AS_OF = datetime(2025, 3, 1, tzinfo=UTC)
UTC_TS = pa.timestamp("us", tz="UTC")


def _t(y: int, m: int, d: int, h: int = 12, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, s, tzinfo=UTC)


# user_id, region, birth_date, protected, deactivated_at, deleted_at
WORLD_USERS: list[tuple[str, str, date | None, bool, datetime | None, datetime | None]] = [
    ("u-us", "US", date(1980, 1, 1), False, None, None),  # default allow
    ("u-de-in", "DE", date(1985, 5, 5), False, None, None),  # EU, explicitly opted in
    ("u-de", "DE", date(1986, 6, 6), False, None, None),  # EU, region default deny
    ("u-fr-out", "FR", date(1990, 1, 1), False, None, None),  # opted in, then out
    ("u-late", "AT", date(1991, 1, 1), False, None, None),  # opts in only after AS_OF
    ("u-minor", "US", date(2012, 2, 2), False, None, None),  # a minor: deny
    ("u-del", "US", date(1970, 1, 1), False, None, _t(2025, 1, 1)),
    ("u-deact", "US", date(1970, 1, 1), False, _t(2025, 2, 1), None),
    ("u-deact-later", "US", date(1970, 1, 1), False, _t(2025, 6, 1), None),
    ("u-prot", "US", date(1975, 3, 3), True, None, None),
    ("u-jp", "JP", None, False, None, None),  # unknown age: allow
]

# event_id, user_id, purpose, choice, at
WORLD_EVENTS: list[tuple[str, str, str, str, datetime]] = [
    ("e1", "u-de-in", THIRD, "allow", _t(2024, 12, 1)),
    ("e2", "u-fr-out", THIRD, "allow", _t(2024, 12, 1)),
    ("e3", "u-fr-out", THIRD, "deny", _t(2025, 1, 15)),
    ("e4", "u-late", THIRD, "allow", _t(2025, 6, 1)),
]

_CUT, _VIS, _DEL, _UNK = (
    "created_after_cutoff",
    "not_public",
    "post_deleted",
    "author_unknown",
)
_ADEL, _DEACT, _PROT = "author_deleted", "author_deactivated", "author_protected"
_REG, _LANG, _PER, _CON = (
    "out_of_scope_region",
    "out_of_scope_language",
    "out_of_scope_period",
    "consent_denied",
)


@dataclass(frozen=True)
class WorldPost:
    post_id: str
    author_id: str
    created_at: datetime
    text: str
    visibility: str = "public"
    lang: str | None = "de"
    deleted_at: datetime | None = None
    open: tuple[str, ...] = ()
    """Every failing check for the `open` licensee, in order (empty: delivered)."""
    eu: tuple[str, ...] = ()
    """Every failing check for the `eu` licensee, in order."""


WORLD_POSTS: list[WorldPost] = [
    WorldPost(
        "p01",
        "u-us",
        _t(2024, 12, 10, 13, 47, 12),
        "Write to me at jane.doe@example.com or see https://ex.com/u/jane?ref=1",
        lang="en",
        eu=(_REG, _LANG),
    ),
    WorldPost("p02", "u-de-in", _t(2024, 12, 5, 8, 59, 59), "Guten Morgen @anna_b!"),
    WorldPost("p03", "u-de-in", _t(2025, 4, 1), "Nach dem Stichtag", open=(_CUT,), eu=(_CUT,)),
    WorldPost("p04", "u-de-in", _t(2024, 12, 6), "Nur Link", "unlisted", open=(_VIS,), eu=(_VIS,)),
    WorldPost(
        "p05",
        "u-de-in",
        _t(2024, 12, 7),
        "Gelöscht",
        deleted_at=_t(2025, 2, 1),
        open=(_DEL,),
        eu=(_DEL,),
    ),
    # Deleted only after the cut-off: still delivered.
    WorldPost("p06", "u-de-in", _t(2024, 12, 8), "Später gelöscht", deleted_at=_t(2025, 5, 1)),
    # An author missing from `users` has no region: outside any named region list.
    WorldPost(
        "p07", "ghost", _t(2024, 12, 9), "who am I", lang="en", open=(_UNK,), eu=(_UNK, _REG, _LANG)
    ),
    WorldPost(
        "p08", "u-del", _t(2024, 12, 9), "bye", lang="en", open=(_ADEL,), eu=(_ADEL, _REG, _LANG)
    ),
    WorldPost(
        "p09",
        "u-deact",
        _t(2024, 12, 9),
        "pause",
        lang="en",
        open=(_DEACT,),
        eu=(_DEACT, _REG, _LANG),
    ),
    # Deactivated only after the cut-off.
    WorldPost("p10", "u-deact-later", _t(2024, 12, 9), "still here", lang="en", eu=(_REG, _LANG)),
    WorldPost(
        "p11",
        "u-prot",
        _t(2024, 12, 9),
        "locked account",
        lang="en",
        open=(_PROT,),
        eu=(_PROT, _REG, _LANG),
    ),
    WorldPost("p12", "u-jp", _t(2024, 12, 9), "おはようございます", lang="ja", eu=(_REG, _LANG)),
    WorldPost("p13", "u-de-in", _t(2024, 3, 1), "Vor der Lizenz", eu=(_PER,)),
    WorldPost("p14", "u-de", _t(2024, 12, 9), "Ohne Zustimmung", open=(_CON,), eu=(_CON,)),
    WorldPost(
        "p15", "u-fr-out", _t(2024, 12, 9), "Plus d'accord", lang="fr", open=(_CON,), eu=(_CON,)
    ),
    WorldPost("p16", "u-late", _t(2024, 12, 9), "Zu spät zugestimmt", open=(_CON,), eu=(_CON,)),
    WorldPost(
        "p17",
        "u-minor",
        _t(2024, 12, 9),
        "homework",
        lang="en",
        open=(_CON,),
        eu=(_REG, _LANG, _CON),
    ),
    # Fails several checks at once: counted under the first.
    WorldPost(
        "p18",
        "u-deact",
        _t(2025, 4, 1),
        "many problems",
        "direct",
        lang="en",
        deleted_at=_t(2025, 5, 1),
        open=(_CUT, _VIS, _DEACT),
        eu=(_CUT, _VIS, _DEACT, _REG, _LANG),
    ),
    WorldPost("p19", "u-de-in", _t(2024, 12, 11), "Ruf an: +49 30 1234567", lang=None, eu=(_LANG,)),
    WorldPost(
        "p20", "u-us", _t(2024, 12, 10), "From 192.168.10.20 with love", lang="en", eu=(_REG, _LANG)
    ),
]


def expected_reasons(licensee: str) -> dict[str, list[str]]:
    """post_id -> every failing check for the `open` or `eu` licensee, in order."""
    return {p.post_id: list(p.open if licensee == "open" else p.eu) for p in WORLD_POSTS}


def expected_counts(licensee: str) -> dict[str, Any]:
    """The manifest counts the world gives: each excluded post under its first reason."""
    reasons = expected_reasons(licensee)
    firsts = Counter(r[0] for r in reasons.values() if r)
    return {
        "considered": len(reasons),
        "delivered": sum(1 for r in reasons.values() if not r),
        "excluded": {reason.value: firsts.get(reason.value, 0) for reason in REASON_ORDER},
    }


EU_TERMS: dict[str, Any] = {
    "regions": ["EU"],
    "languages": ["de", "fr"],
    "period_from": _t(2024, 6, 1, 0),
}
"""The `eu` licensee's terms (for `LicenseeRegistry.add`)."""


def eu_scope() -> LicenceScope:
    return LicenceScope.build(
        THIRD, regions=["EU"], languages=["de", "fr"], period_from=EU_TERMS["period_from"]
    )


def world_users() -> pa.Table:
    rows = WORLD_USERS
    return pa.table(
        {
            "user_id": [r[0] for r in rows],
            "created_at": pa.array([_t(2020, 1, 1)] * len(rows), UTC_TS),
            "region": [r[1] for r in rows],
            "birth_date": pa.array([r[2] for r in rows], pa.date32()),
            "protected": [r[3] for r in rows],
            "deactivated_at": pa.array([r[4] for r in rows], UTC_TS),
            "deleted_at": pa.array([r[5] for r in rows], UTC_TS),
        },
        schema=arrow_schema("users"),
    )


def world_posts(posts: Sequence[WorldPost] = WORLD_POSTS) -> pa.Table:
    return pa.table(
        {
            "post_id": [p.post_id for p in posts],
            "author_id": [p.author_id for p in posts],
            "created_at": pa.array([p.created_at for p in posts], UTC_TS),
            "text": [p.text for p in posts],
            "visibility": [p.visibility for p in posts],
            "lang": [p.lang for p in posts],
            "deleted_at": pa.array([p.deleted_at for p in posts], UTC_TS),
        },
        schema=arrow_schema("posts"),
    )


def world_events(
    rows: Sequence[tuple[str, str, str, str, datetime]] = WORLD_EVENTS,
) -> pa.Table:
    return pa.table(
        {
            "event_id": [r[0] for r in rows],
            "user_id": [r[1] for r in rows],
            "purpose": [r[2] for r in rows],
            "choice": [r[3] for r in rows],
            "at": pa.array([r[4] for r in rows], UTC_TS),
            "source": ["settings"] * len(rows),
        },
        schema=arrow_schema("consent_events"),
    )


@dataclass
class LakeHome:
    """An initialised home whose lake and ledger hold given tables."""

    settings: Settings

    @property
    def lake(self) -> Lake:
        return Lake.of(self.settings)

    @property
    def deliveries(self) -> Path:
        return deliveries_dir(self.settings)

    def load(
        self,
        users: pa.Table | None = None,
        posts: pa.Table | None = None,
        events: pa.Table | None = None,
    ) -> None:
        """Import the tables into the lake and bring the ledger up to date."""
        for name, data in (("users", users), ("posts", posts), ("consent_events", events)):
            if data is not None:
                import_arrow(self.lake, name, data, origin=f"test:{name}")
        sync_ledger(self.settings)

    def add_licensee(self, name: str, purpose: str = THIRD, **terms: Any) -> LicenseeRecord:
        registry = registry_for(self.settings)
        try:
            return registry.add(name, purpose, **terms).record
        finally:
            registry.store.close()

    def secret(self, name: str) -> bytes:
        registry = registry_for(self.settings)
        try:
            return registry.secret(registry.get(name))
        finally:
            registry.store.close()

    def deliver(self, name: str, as_of: datetime = AS_OF, **kwargs: Any) -> dict[str, Any]:
        return deliver(self.settings, name, as_of=as_of, **kwargs)

    def visible(self) -> list[str]:
        """Names of the delivery directories a reader sees (not the hidden staging ones)."""
        root = self.deliveries
        return (
            sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
            if (root.exists())
            else []
        )

    def lineage(self, delivery_id: str | None = None) -> list[dict[str, Any]]:
        if not self.lake.exists("delivery_lineage"):
            return []
        rows: list[dict[str, Any]] = self.lake.read_arrow("delivery_lineage").to_pylist()
        return [r for r in rows if delivery_id is None or r["delivery_id"] == delivery_id]

    def records(self, delivery_id: str) -> list[dict[str, Any]]:
        """Every delivered row of a delivery, in file order."""
        directory = self.deliveries / delivery_id
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        rows: list[dict[str, Any]] = []
        for entry in manifest["files"]:
            rows.extend(pq.read_table(directory / entry["name"]).to_pylist())
        return rows


def make_lake_home(settings: Settings, *, world: bool = True) -> LakeHome:
    """Initialise the home; with `world`, load the world and add the `open` and `eu`
    licensees."""
    init_home(settings)
    home = LakeHome(settings)
    if world:
        home.load(world_users(), world_posts(), world_events())
        home.add_licensee("open")
        home.add_licensee("eu", **EU_TERMS)
    return home


@pytest.fixture
def lake_home(settings: Settings) -> LakeHome:
    """A fresh home holding the world, with licensees `open` and `eu`."""
    return make_lake_home(settings)


def run_cli(home: Path, *args: str) -> Any:
    """`consentry --home HOME ARGS...` in-process; the result has .stdout and .stderr."""
    return CliRunner().invoke(cli, ["--home", str(home), *args])


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated demo platform (shared: tests only add licensees and deliveries)."""
    home = tmp_path_factory.mktemp("delivery-demo")
    assert run_cli(home, "init").exit_code == 0
    result = run_cli(
        home,
        "demo",
        "generate",
        "--users",
        "1500",
        "--posts",
        "4000",
        "--access-events",
        "1000",
        "--seed",
        "7",
    )
    assert result.exit_code == 0, result.output
    return home
