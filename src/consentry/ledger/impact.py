"""Who a new policy version affects: users whose effective decision differs between two
versions at one instant (`consentry audit impact`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import sqlalchemy as sa

from consentry.errors import ConsentryError
from consentry.instants import rfc3339
from consentry.ledger.bulk import resolve_consent_bulk
from consentry.ledger.service import ConsentLedger
from consentry.policy import PolicyFile
from consentry.store import Store
from consentry.store.models import Subject

__all__ = ["ImpactReport", "policy_impact"]


@dataclass(slots=True)
class ImpactReport:
    """Users whose effective decision differs between two versions, at one instant."""

    old: str
    new: str
    at: datetime
    subjects: int
    cells: list[dict[str, Any]] = field(default_factory=list)
    """One row per (purpose, region, from, to) with the number of users."""
    users: list[dict[str, Any]] | None = None
    """Per user (only when asked): user_id, purpose, region, from, to, rules."""

    def by_purpose(self) -> dict[str, dict[str, int]]:
        totals: dict[str, dict[str, int]] = {}
        for cell in self.cells:
            entry = totals.setdefault(cell["purpose"], {"changed": 0, "to_allow": 0, "to_deny": 0})
            entry["changed"] += cell["users"]
            entry["to_allow" if cell["to"] == "allow" else "to_deny"] += cell["users"]
        return totals

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "from": self.old,
            "to": self.new,
            "at": self.at,
            "subjects": self.subjects,
            "purposes": self.by_purpose(),
            "cells": self.cells,
        }
        if self.users is not None:
            result["users"] = self.users
        return result


def _subjects_arrow(store: Store) -> pa.Table:
    with store.session() as session:
        rows = session.execute(sa.select(Subject.user_id, Subject.region, Subject.birth_date)).all()
    columns = list(zip(*rows, strict=True)) if rows else [(), (), ()]
    return pa.table(
        {
            "user_id": pa.array(columns[0], pa.string()),
            "region": pa.array(columns[1], pa.string()),
            "birth_date": pa.array(columns[2], pa.date32()),
        }
    )


def policy_impact(
    ledger: ConsentLedger,
    old: str,
    new: str,
    *,
    at: datetime | None = None,
    with_users: bool = False,
) -> ImpactReport:
    """Who changes state if version `new` replaces version `old`.

    1. Both versions are applied to the same facts: every subject, and the ledger's events
       at `at` (default: the later version's `effective_from`).
    2. Each purpose of either version is resolved for every subject under a one-version
       policy of `old` and of `new`, with `resolve_consent_bulk` (one DuckDB query; a
       purpose missing from a version resolves to deny, `purpose_not_in_policy`).
    3. Users whose decision differs are counted per purpose, region (upper-cased; `unknown`
       when absent) and direction; with `with_users`, listed one row per user and purpose.
    """
    before, after = ledger.policy.get(old), ledger.policy.get(new)
    instant = at or max(before.effective_from, after.effective_from)
    source = ledger.policy.source
    old_policy = PolicyFile(source, ledger.policy.content_sha256, [before], ledger.policy.platform)
    new_policy = PolicyFile(source, ledger.policy.content_sha256, [after], ledger.policy.platform)
    if instant < max(before.effective_from, after.effective_from):
        raise ConsentryError(
            f"--at must not be before {rfc3339(max(before.effective_from, after.effective_from))}"
        )
    purposes = list(
        dict.fromkeys([p.key for p in before.purposes] + [p.key for p in after.purposes])
    )
    users_table = _subjects_arrow(ledger.store)
    events_table = ledger.events_arrow(purposes, instant)
    backend = ibis.duckdb.connect()
    try:
        users = ibis.memtable(users_table)
        events = ibis.memtable(events_table)
        parts: list[ir.Table] = []
        for key in purposes:
            was = resolve_consent_bulk(old_policy, users, events, key, instant)
            now = resolve_consent_bulk(new_policy, users, events, key, instant)
            was = was.select(user_id=was.user_id, was=was.decision, was_rule=was.rule)
            now = now.select(uid=now.user_id, now=now.decision, now_rule=now.rule)
            joined = was.join(now, was.user_id == now.uid)
            parts.append(
                joined.filter(joined.was != joined.now).select(
                    "user_id",
                    "was",
                    "now",
                    "was_rule",
                    "now_rule",
                    purpose=ibis.literal(key),
                )
            )
        if not parts:
            return ImpactReport(old, new, instant, users_table.num_rows)
        changed = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
        regions = users.select(rid=users.user_id, region=users.region.upper().fill_null("unknown"))
        changed = changed.join(regions, changed.user_id == regions.rid).drop("rid")
        grouped = (
            changed.group_by(["purpose", "region", "was", "now"])
            .aggregate(users=changed.count())
            .order_by(["purpose", "region", "was"])
        )
        cells = [
            {
                "purpose": r["purpose"],
                "region": r["region"],
                "from": r["was"],
                "to": r["now"],
                "users": int(r["users"]),
            }
            for r in backend.to_pyarrow(grouped).to_pylist()
        ]
        listed = None
        if with_users:
            rows = backend.to_pyarrow(changed.order_by(["purpose", "user_id"])).to_pylist()
            listed = [
                {
                    "user_id": r["user_id"],
                    "purpose": r["purpose"],
                    "region": r["region"],
                    "from": r["was"],
                    "to": r["now"],
                    "rule_from": r["was_rule"],
                    "rule_to": r["now_rule"],
                }
                for r in rows
            ]
    finally:
        backend.disconnect()
    return ImpactReport(old, new, instant, users_table.num_rows, cells, listed)
