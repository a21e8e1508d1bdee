"""The public transparency page, the policy history, and the audit API."""

from __future__ import annotations

import base64

from consentry.audit.checkpoint import parse_signed_checkpoint
from consentry.audit.merkle import verify_consistency, verify_inclusion
from consentry.audit.policy_history import publish_policy
from consentry.ledger.service import Evidence
from consentry.policy import Choice
from consentry.serving.auth import issue_token
from tests.web.conftest import Site


def _b(text: str) -> bytes:
    return base64.b64decode(text)


def test_transparency_page_suppresses_small_counts(site: Site) -> None:
    for user in ("alice", "emil"):
        site.ledger.record(
            user,
            "ai_training_third_party",
            Choice.DENY,
            source="settings",
            evidence=Evidence(origin="test"),
        )
    response, _ = site.page("/transparency")
    assert response.status_code == 200
    text = response.text
    assert "<h1>Transparency report</h1>" in text
    assert "&lt;10" in text  # two opt-outs in the US: a small cell
    assert "ai_training_third_party" in text
    assert "consentry/audit/" in text  # the signed checkpoint
    assert '<h2 id="revocations">' in text
    data = site.client.get("/v1/audit/transparency").json()
    cells = data["consent"]["cells"]
    assert cells
    assert all(c["users"] is None for c in cells)
    assert data["consent"]["purposes"]["ai_training_third_party"]["opted_out"] is None
    assert site.client.get("/transparency?from=2025-02-01&to=2025-01-01").status_code == 422


def test_policy_history_lists_versions_and_links_changes(site: Site) -> None:
    response, _ = site.page("/policy")
    assert response.status_code == 200
    assert "Policy 2023-09-29" in response.text
    assert "Policy 2024-11-15" in response.text
    assert 'href="/policy/changes/2023-09-29/2024-11-15"' in response.text
    # `consentry init` (the site fixture's init_home) published both versions.
    assert "Recorded in the audit log" in response.text
    assert "Not yet recorded in the audit log" not in response.text
    assert site.client.get("/policy/changes/2023-09-29/2024-11-15").status_code == 200
    assert 'href="/transparency"' in site.client.get("/").text


def test_audit_api_checkpoint_proofs(site: Site) -> None:
    publish_policy(site.ledger.store, site.ledger.policy)
    note = site.client.get("/v1/audit/checkpoint")
    assert note.status_code == 200
    assert note.headers["content-type"].startswith("text/plain")
    cp = parse_signed_checkpoint(note.text).checkpoint
    assert cp.size == 3  # subjects.synced and two policy versions
    c = site.client.get("/v1/audit/consistency", params={"first": 1}).json()
    assert verify_consistency(1, 3, [_b(p) for p in c["path"]], _b(c["first_root"]), cp.root_hash)
    assert site.client.get("/v1/audit/proof/2").status_code == 401
    admin = issue_token(site.ledger.keyring.platform_secret, "ops", role="admin")
    user = issue_token(site.ledger.keyring.platform_secret, "alice", role="user")
    assert (
        site.client.get(
            "/v1/audit/proof/2", headers={"Authorization": f"Bearer {user}"}
        ).status_code
        == 403
    )
    proof = site.client.get(
        "/v1/audit/proof/2", headers={"Authorization": f"Bearer {admin}"}
    ).json()
    assert proof["event_type"] == "policy.published"
    assert verify_inclusion(
        proof["leaf_index"], 3, _b(proof["leaf_hash"]), [_b(p) for p in proof["path"]], cp.root_hash
    )
    assert (
        site.client.get(
            "/v1/audit/proof/99", headers={"Authorization": f"Bearer {admin}"}
        ).status_code
        == 404
    )
