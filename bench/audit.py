"""Audit log benchmark: batched appends, inclusion proofs and full verification, on SQLite
and PostgreSQL, against a naive peer that recomputes the root per proof.

    .venv/bin/python bench/audit.py [--scale 1000000] [--batch 10000] [--backends sqlite,postgresql]

Per backend, in its own process (peak RSS is per side): append `scale` events in batches
(appends/s), prove inclusion of random events — from stored subtrees one event at a time
(the CLI path, O(log n) rows per proof), and from the in-memory tree in batches of 10,000
(the vectorised path) — check the proofs (verifications/s), then `verify` the whole log
(seconds). The peer, in the same process run, proves by rehashing every leaf per proof (the
RFC's recursive definition over the leaf hashes), as a system without stored subtrees must.
Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from _common import load_note, print_table, rate, ratio, run_isolated
from consentry.audit.events import canonical_json
from consentry.audit.log import AuditLog, append_events
from consentry.audit.merkle import reference_inclusion, verify_inclusion
from consentry.keys import Keyring
from consentry.signing import Signer
from consentry.store import open_store

PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _payload(i: int) -> str:
    return canonical_json(
        {
            "subject_ref": f"{i:032x}",
            "purpose": "ai_training_third_party",
            "choice": "deny" if i % 3 else "allow",
            "source": "settings",
            "policy_version": "2024-11-15",
            "at": "2025-01-01T00:00:00Z",
            "ledger_seq": i,
        }
    )


def _side(backend: str, scale: int, batch: int, proofs: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="audit-bench-"))
    schema = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp / 'bench.db'}"
    else:
        schema = f"bench_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(PG_BASE)
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        admin.dispose()
        url = f"{PG_BASE}?options=-csearch_path%3D{schema}"
    store = open_store(url)
    try:
        store.migrate()
        started = time.perf_counter()
        for start in range(0, scale, batch):
            rows = [
                ("consent.changed", _payload(i)) for i in range(start, min(scale, start + batch))
            ]
            with store.session() as session:
                append_events(session, rows)
        append_s = time.perf_counter() - started
        log = AuditLog(store)
        size = log.head().size
        rng = random.Random(7)
        with store.session() as session:
            first_seq = int(session.scalar(sa.text("SELECT min(event_seq) FROM audit_leaves")))
        # One event at a time from stored subtrees (what `consentry audit prove` does).
        stored_n = min(proofs, 2_000)
        picks = [first_seq + rng.randrange(size) for _ in range(stored_n)]
        started = time.perf_counter()
        stored = [log.prove(seq) for seq in picks]
        stored_s = time.perf_counter() - started
        # In memory, vectorised in batches (what a proof server holding the tree does).
        started = time.perf_counter()
        tree = log.load_tree()
        load_s = time.perf_counter() - started
        indices = np.array([rng.randrange(size) for _ in range(proofs)], dtype=np.int64)
        started = time.perf_counter()
        packed, lengths = [], []
        for lo in range(0, proofs, 10_000):
            p, n = tree.inclusion_proofs(indices[lo : lo + 10_000])
            packed.append(p)
            lengths.append(n)
        memory_s = time.perf_counter() - started
        root = tree.root()
        check_n = min(proofs, 20_000)
        all_p, all_n = np.concatenate(packed), np.concatenate(lengths)
        leaves = tree.levels[0]
        started = time.perf_counter()
        ok = 0
        for k in range(check_n):
            m = int(indices[k])
            path = [bytes(x) for x in all_p[k, : all_n[k]]]
            ok += verify_inclusion(m, size, bytes(leaves[m * 32 : m * 32 + 32]), path, root)
        verify_proofs_s = time.perf_counter() - started
        assert ok == check_n
        assert all(p.root_hash == root for p in stored)
        signer = Signer.from_keyring(Keyring.for_home(tmp))
        started = time.perf_counter()
        report = log.verify(signer.public_key)
        verify_s = time.perf_counter() - started
        assert report.ok, report.problems
        # The peer: recompute the root's neighbourhood from every leaf hash per proof.
        leaf_list = [bytes(leaves[i * 32 : i * 32 + 32]) for i in range(size)]
        peer_n = 3
        started = time.perf_counter()
        for k in range(peer_n):
            reference_inclusion(int(indices[k]), leaf_list)
        peer_s = time.perf_counter() - started
        return {
            "appends_per_s": rate(scale, append_s),
            "stored_proofs_per_s": rate(stored_n, stored_s),
            "load_tree_s": load_s,
            "memory_proofs_per_s": rate(proofs, memory_s),
            "verifications_per_s": rate(check_n, verify_proofs_s),
            "verify_log_s": verify_s,
            "peer_proofs_per_s": rate(peer_n, peer_s),
        }
    finally:
        store.close()
        if schema is not None:
            admin = sa.create_engine(PG_BASE)
            with admin.begin() as conn:
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1_000_000, help="events to append")
    parser.add_argument("--batch", type=int, default=10_000, help="events per transaction")
    parser.add_argument("--proofs", type=int, default=200_000, help="in-memory proofs")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    print(f"audit log: {args.scale:,} events, batches of {args.batch:,}; {load_note()}")
    rows = []
    for backend in args.backends.split(","):
        measured = run_isolated(_side, backend, args.scale, args.batch, args.proofs)
        v = measured.value
        rows.append(
            [
                backend,
                v["appends_per_s"],
                v["stored_proofs_per_s"],
                v["memory_proofs_per_s"],
                v["verifications_per_s"],
                v["peer_proofs_per_s"],
                ratio(v["memory_proofs_per_s"], v["peer_proofs_per_s"]),
                v["load_tree_s"],
                v["verify_log_s"],
                measured.peak_rss_mib,
            ]
        )
    print_table(
        "Merkle audit log (rates per second, times in seconds)",
        [
            "backend",
            "appends/s",
            "stored proofs/s",
            "memory proofs/s",
            "proof checks/s",
            "peer proofs/s",
            "vs peer",
            "load tree s",
            "verify s",
            "peak RSS MiB",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
