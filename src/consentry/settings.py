"""Runtime settings, read from the environment and the `--home` option.

Every setting is documented in docs/settings.md (a test enforces it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from consentry.errors import ConsentryError

__all__ = ["ENVIRONMENT_VARIABLES", "Settings"]

ENVIRONMENT_VARIABLES: dict[str, str] = {
    "CONSENTRY_HOME": "Directory holding the lake, the SQLite store, keys and deliveries.",
    "CONSENTRY_DATABASE_URL": "SQLAlchemy URL of the control-plane store.",
    "CONSENTRY_PURGE_GRACE_HOURS": "Hours a retention purge leaves the versions before it "
    "readable for running readers before its vacuum may delete them (default 0).",
    "CONSENTRY_LAKE_URI": "Where the lake's Delta tables live: s3://bucket/prefix (credentials "
    "and endpoint from the usual AWS_* variables); default: <home>/lake.",
    "CONSENTRY_POLICY_FILE": "Policy file to enforce (default: the shipped policies/x-2024.yaml).",
    "CONSENTRY_ENGINE": "Default data-plane engine: duckdb or spark.",
    "CONSENTRY_SPARK_MASTER": "Spark master URL for --engine spark (default local[2]).",
    "CONSENTRY_REDIS_URL": "Redis URL for shared online counters.",
    "CONSENTRY_DUCKDB_MEMORY_LIMIT": "Memory DuckDB may use before spilling to disk (1GB).",
    "CONSENTRY_METER_BACKEND": "Online scraping meter of the API: memory (per process) or redis.",
    "CONSENTRY_MASTER_KEY": "Master key (base64url of 32 bytes) sealing licensee secrets; "
    "default: <home>/keys/master.key.",
    "CONSENTRY_PUBLIC_URL": "Public base URL of the API, written into dataset cards and "
    "Croissant records (default: paths only).",
    "CONSENTRY_LICENSE_SERVER": "URL of an RSL licence server, named by /license.xml "
    "(default: none, no server attribute).",
    "CONSENTRY_SIGNALS_MAX_AGE": "Longest a cache may keep a public signals answer, in seconds "
    "(default 300; never longer than the revocation SLA).",
    "CONSENTRY_SIGNALS_CACHE_MS": "Longest a server process reuses a public signals answer, in "
    "milliseconds (default 1000; 0: never; never longer than the answer's max-age).",
    "CONSENTRY_OPENLINEAGE_URL": "OpenLineage HTTP endpoint (e.g. Marquez) for job run events "
    "(default: a file in the home).",
    "CONSENTRY_LOG_FORMAT": "Log lines as text (default) or json.",
    "CONSENTRY_LOG_LEVEL": "Lowest level logged: debug, info, warning, error (default: info "
    "for serve, warning for other commands).",
    "CONSENTRY_WEBHOOKS_FILE": "Alert webhooks file (default: <home>/webhooks.yaml).",
    "CONSENTRY_REQUEST_ID": "Request id a command's job logs and audit events carry (default: "
    "a new one per command).",
}
"""Name -> one-line meaning of every environment variable Consentry reads."""

DEFAULT_POLICY_FILE = Path(__file__).parent / "policies" / "x-2024.yaml"


def _seconds(env: Mapping[str, str], name: str, default: int, unit: str = "seconds") -> int:
    """A whole number of `unit` (0 or more) from `env[name]`; `default` when unset or
    empty; ConsentryError naming the variable otherwise."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ConsentryError(f"{name} is a whole number of {unit} (0 or more), not {raw!r}")
    return int(raw)


@dataclass(frozen=True, slots=True)
class Settings:
    """Where Consentry keeps its state and which backends it talks to.

    1. `home` holds everything local: `lake/` (Parquet tables), `consentry.db` (SQLite
       control plane unless `database_url` points elsewhere), keys and deliveries.
    2. `database_url` defaults to SQLite in `home` (WAL mode); PostgreSQL is
       `postgresql+psycopg://…`.
    3. `engine` is the default Ibis backend for the data plane.
    """

    home: Path = field(default_factory=lambda: Path("./.consentry"))
    database_url: str | None = None
    policy_file: Path = DEFAULT_POLICY_FILE
    engine: str = "duckdb"
    spark_master: str = "local[2]"
    redis_url: str = "redis://127.0.0.1:6379/0"
    duckdb_memory_limit: str = "1GB"
    meter_backend: str = "memory"
    master_key: str | None = field(default=None, repr=False)
    """`CONSENTRY_MASTER_KEY` as given (base64url text); None: use `<home>/keys/master.key`.
    Kept out of `repr` so it never lands in logs."""
    public_url: str | None = None
    """Where licensees reach the API (`https://platform.example`); None: cite paths only."""
    license_server: str | None = None
    """An RSL licence server's URL, if the platform runs one."""
    signals_max_age: int = 300
    """Seconds a cache may keep a public signals answer (`Cache-Control: max-age`), capped
    by the revocation SLA in force (`consentry.ledger.signals.cache_max_age`)."""
    signals_cache_ms: int = 1000
    """Milliseconds a server process may reuse a public signals answer it resolved, capped
    by the answer's max-age (`consentry.ledger.signals.reuse_seconds`); 0: never."""
    openlineage_url: str | None = None
    """An OpenLineage HTTP endpoint; None: events go to `<home>/lineage/openlineage.jsonl`."""
    log_format: str = "text"
    log_level: str | None = None
    """None: each command's default (info for `serve`, warning otherwise)."""
    webhooks_path: Path | None = None
    """`CONSENTRY_WEBHOOKS_FILE`; None: `<home>/webhooks.yaml` (see `webhooks_file`)."""
    lake_uri: str | None = None
    """`CONSENTRY_LAKE_URI`: an `s3://bucket/prefix` lake; None: the local `lake_dir`."""
    purge_grace_hours: int = 0
    """`CONSENTRY_PURGE_GRACE_HOURS`: how long the versions a purge replaced stay readable
    before its vacuum may delete their files (0: at once, in the purge itself)."""

    @classmethod
    def from_env(cls, home: Path | None = None) -> Settings:
        """Build settings from the environment; an explicit `home` wins over CONSENTRY_HOME."""
        env = os.environ
        return cls(
            home=(home or Path(env.get("CONSENTRY_HOME", "./.consentry"))).resolve(),
            database_url=env.get("CONSENTRY_DATABASE_URL") or None,
            policy_file=Path(env.get("CONSENTRY_POLICY_FILE") or DEFAULT_POLICY_FILE),
            engine=env.get("CONSENTRY_ENGINE", "duckdb"),
            spark_master=env.get("CONSENTRY_SPARK_MASTER", "local[2]"),
            redis_url=env.get("CONSENTRY_REDIS_URL", "redis://127.0.0.1:6379/0"),
            duckdb_memory_limit=env.get("CONSENTRY_DUCKDB_MEMORY_LIMIT", "1GB"),
            meter_backend=env.get("CONSENTRY_METER_BACKEND", "memory"),
            master_key=env.get("CONSENTRY_MASTER_KEY") or None,
            public_url=(env.get("CONSENTRY_PUBLIC_URL") or "").rstrip("/") or None,
            license_server=env.get("CONSENTRY_LICENSE_SERVER") or None,
            signals_max_age=_seconds(env, "CONSENTRY_SIGNALS_MAX_AGE", 300),
            signals_cache_ms=_seconds(env, "CONSENTRY_SIGNALS_CACHE_MS", 1000, unit="milliseconds"),
            openlineage_url=env.get("CONSENTRY_OPENLINEAGE_URL") or None,
            log_format=env.get("CONSENTRY_LOG_FORMAT") or "text",
            log_level=env.get("CONSENTRY_LOG_LEVEL") or None,
            webhooks_path=Path(env["CONSENTRY_WEBHOOKS_FILE"])
            if env.get("CONSENTRY_WEBHOOKS_FILE")
            else None,
            lake_uri=env.get("CONSENTRY_LAKE_URI") or None,
            purge_grace_hours=_seconds(env, "CONSENTRY_PURGE_GRACE_HOURS", 0, unit="hours"),
        )

    @property
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def webhooks_file(self) -> Path:
        """Where the alert webhooks are configured (docs/operations.md)."""
        return self.webhooks_path or self.home / "webhooks.yaml"

    @property
    def resolved_database_url(self) -> str:
        """The control-plane URL: the configured one, else SQLite inside `home`."""
        return self.database_url or f"sqlite:///{self.home / 'consentry.db'}"
