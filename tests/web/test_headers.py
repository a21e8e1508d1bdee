"""Every response carries the security headers, and no page needs what the policy refuses."""

from __future__ import annotations

import re

import pytest

from consentry.api.headers import CONTENT_SECURITY_POLICY
from consentry.web import TEMPLATES_DIR
from tests.web.conftest import Site


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/signin",
        "/settings/privacy",
        "/admin/signin",
        "/docs",
        "/openapi.json",
        "/static/consentry.css",
        "/healthz",
        "/v1/status",
        "/v1/users/alice/consent",
        "/no/such/page",
        "/transparency?from=0001-01-01",
    ],
)
def test_every_response_carries_the_security_headers(site: Site, path: str) -> None:
    response = site.client.get(path, follow_redirects=False)
    csp = response.headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["frame-ancestors"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert "unsafe" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_no_template_has_an_inline_script_or_handler() -> None:
    """What the policy would refuse: inline scripts and styles, event-handler attributes,
    javascript: URLs. (Two templates are standalone reports the CLI writes to files, with
    their styles inline; the service never serves them.)"""
    standalone = {"transparency_report.html", "admin_retention_processing.html"}
    served = [p for p in TEMPLATES_DIR.glob("*.html") if p.name not in standalone]
    assert served
    for template in served:
        text = template.read_text(encoding="utf-8")
        for script in re.findall(r"<script\b[^>]*>", text):
            assert "src=" in script, f"{template.name}: inline script {script}"
        assert not re.search(r"\son[a-z]+\s*=", text), template.name
        assert "javascript:" not in text, template.name
        assert not re.search(r"<style\b|\sstyle\s*=", text), template.name
