"""examples/nginx/consentry-signals.conf, for real: nginx (the Debian package) in front of a
tiny platform app, asking a running `consentry serve` for each post's signals; and what
crawler tools read from those pages (datadiligence, urllib.robotparser, http_sf).

The home holds authors who allow AI training (alice; ed, until he opts out in a test), who
are opted out by their region (berta, DE; chloe, GB), who are minors (dani) and one
Consentry was never told about (zoe). nginx caches Consentry's answers for
CONSENTRY_SIGNALS_MAX_AGE (1 s here).
"""

from __future__ import annotations

import getpass
import os
import subprocess
import threading
import time
import urllib.robotparser
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import datadiligence
import http_sf
import httpx
import pytest

from consentry.cli.admin import init_home
from consentry.engine.lake import Lake
from consentry.keys import Keyring
from consentry.ledger.service import ConsentLedger
from consentry.policy import load_policy
from consentry.serving.auth import issue_token
from consentry.settings import Settings
from consentry.store import open_store
from tests.factories import posts_table, users_table
from tests.services import ensure_nginx, free_port, serving

EXAMPLE = Path(__file__).parents[2] / "examples" / "nginx" / "consentry-signals.conf"
MAX_AGE = 1
"""CONSENTRY_SIGNALS_MAX_AGE of the test's server: how long nginx may cache an answer."""
THIRD = "ai_training_third_party"
POPULATION = [
    # user_id, region, birth_date
    ("alice", "US", date(1990, 4, 1)),
    ("ed", "US", date(1980, 2, 2)),
    ("berta", "DE", date(1985, 7, 9)),
    ("chloe", "GB", None),
    ("dani", "BR", date(2012, 1, 1)),
]
POSTS = {
    "a1": "alice",
    "a2": "alice",
    "e1": "ed",
    "e2": "ed",
    "b1": "berta",
    "c1": "chloe",
    "d1": "dani",
    "z1": "zoe",  # an author the ledger does not know
}
OPTED_OUT = ("berta", "chloe", "dani", "zoe")


class PlatformHandler(BaseHTTPRequestHandler):
    """The platform: /posts/<id> is an HTML page; anything else is 404."""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        post = self.path.removeprefix("/posts/")
        if self.path.startswith("/posts/") and post in POSTS:
            page = f"<html><body><p>Post {post} by {POSTS[post]}</p></body></html>".encode()
            self.send_response(200)
        else:
            page = b"not found"
            self.send_response(404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        if body:
            self.wfile.write(page)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads responses, not logs."""


@dataclass(frozen=True)
class Edge:
    url: str
    """nginx, in front of the platform."""
    consentry: str
    token_of: dict[str, str]


def _home(home: Path) -> dict[str, str]:
    """An initialised home with POPULATION and POSTS; a user token per known author."""
    settings = Settings(home=home)
    init_home(settings)
    store = open_store(settings.resolved_database_url)
    try:
        keyring = Keyring.for_home(home)
        ConsentLedger(store, load_policy(settings.policy_file), keyring).sync_subjects(
            users_table(POPULATION)
        )
    finally:
        store.close()
    Lake.of(settings).write_arrow("posts", posts_table(list(POSTS.items())))
    secret = keyring.platform_secret
    return {u: issue_token(secret, u, "user") for u, _, _ in POPULATION}


def _nginx_conf(tmp: Path, port: int, consentry_port: int, platform_port: int) -> Path:
    """The example, its addresses and cache directory replaced, inside a main config that
    keeps every path nginx writes in `tmp`."""
    example = EXAMPLE.read_text()
    for old, new in (
        ("127.0.0.1:8000", f"127.0.0.1:{consentry_port}"),
        ("127.0.0.1:3000", f"127.0.0.1:{platform_port}"),
        ("listen 8080;", f"listen 127.0.0.1:{port};"),
        ("/var/cache/nginx/consentry", str(tmp / "cache")),
    ):
        assert example.count(old) == 1, old
        example = example.replace(old, new)
    (tmp / "consentry-signals.conf").write_text(example)
    temp = "\n".join(
        f"    {kind}_temp_path {tmp / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx's workers would switch to `nobody`, who cannot use the temp directory.
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""{user}
daemon off;
worker_processes 1;
pid {tmp / "nginx.pid"};
error_log {tmp / "error.log"} warn;
events {{ worker_connections 128; }}
http {{
    access_log {tmp / "access.log"};
{temp}
    include {tmp / "consentry-signals.conf"};
}}
"""
    )
    return conf


def _wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        assert process.poll() is None, "nginx exited:\n" + log.read_text(errors="replace")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "nginx did not come up in 15 s"
            time.sleep(0.1)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    nginx = ensure_nginx()
    tmp = tmp_path_factory.mktemp("edge")
    tokens = _home(tmp / "home")
    port, platform_port = free_port(), free_port()
    platform = ThreadingHTTPServer(("127.0.0.1", platform_port), PlatformHandler)
    threading.Thread(target=platform.serve_forever, daemon=True).start()
    env = {"CONSENTRY_SIGNALS_MAX_AGE": str(MAX_AGE)}
    try:
        with serving(tmp / "home", env=env) as consentry:
            consentry_port = int(consentry.rsplit(":", 1)[1])
            conf = _nginx_conf(tmp, port, consentry_port, platform_port)
            (tmp / "cache").mkdir()
            log = tmp / "nginx.out"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [str(nginx), "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
                try:
                    url = f"http://127.0.0.1:{port}"
                    _wait_for(url, process, log)
                    yield Edge(url, consentry, tokens)
                finally:
                    process.terminate()
                    process.wait(timeout=10)
    finally:
        platform.shutdown()
        platform.server_close()


SIGNALS = ("content-usage", "tdm-reservation", "tdm-policy", "x-robots-tag")


def _signals(response: httpx.Response) -> dict[str, str]:
    return {k: response.headers[k] for k in SIGNALS if k in response.headers}


def _page(edge: Edge, post: str) -> httpx.Response:
    response = httpx.get(f"{edge.url}/posts/{post}")
    assert response.status_code == 200, response.text
    assert f"Post {post} by {POSTS[post]}" in response.text
    return response


def test_post_pages_carry_their_authors_signals(edge: Edge) -> None:
    policy = f"{edge.url}/policies/tdm.json"
    refused = {"tdm-reservation": "1", "tdm-policy": policy, "x-robots-tag": "noai, noimageai"}
    for post in ("b1", "c1", "d1"):
        assert _signals(_page(edge, post)) == {"content-usage": "train-ai=n", **refused}
    # The author Consentry does not know: the site default.
    assert _signals(_page(edge, "z1")) == {"content-usage": "train-ai=n, search=y", **refused}
    # Allowed: Content-Usage only (the site-wide tdmrep.json reservation stands).
    assert _signals(_page(edge, "a1")) == {"content-usage": "train-ai=y"}
    # Pages that are not posts get nothing; the TDM Policy a header points at is served.
    assert _signals(httpx.get(f"{edge.url}/about")) == {}
    assert httpx.get(policy).json()["profile"] == "http://www.w3.org/ns/tdmrep"
    # A client's validators and method do not reach the subrequest: still 200 with signals.
    conditional = httpx.get(f"{edge.url}/posts/b1", headers={"If-None-Match": "*"})
    assert conditional.status_code == 200
    assert conditional.headers["x-robots-tag"] == "noai, noimageai"
    head = httpx.head(f"{edge.url}/posts/b1")
    assert head.status_code == 200
    assert head.headers["x-robots-tag"] == "noai, noimageai"


def test_an_opt_out_reaches_the_pages_within_the_cache_bound(edge: Edge) -> None:
    before = _signals(_page(edge, "e2"))  # cached by nginx from here on
    assert before == {"content-usage": "train-ai=y"}
    put = httpx.put(
        f"{edge.consentry}/v1/users/ed/consent/{THIRD}",
        json={"choice": "deny"},
        headers={"Authorization": f"Bearer {edge.token_of['ed']}"},
    )
    assert put.status_code == 200, put.text
    opted_out = time.monotonic()
    # Consentry itself answers at once.
    direct = httpx.get(f"{edge.consentry}/v1/public/signals/posts/e2")
    assert direct.headers["x-robots-tag"] == "noai, noimageai"
    assert direct.headers["cache-control"] == f"public, max-age={MAX_AGE}"
    # Through nginx's cache: the old answer at most MAX_AGE (+1 s: nginx counts whole
    # seconds) after the opt-out, then the new one on every page of the author.
    while True:
        headers = _signals(_page(edge, "e2"))
        if headers.get("x-robots-tag") == "noai, noimageai":
            break
        assert headers == before
        assert time.monotonic() - opted_out <= MAX_AGE + 1.5, "a cached 'allowed' outlived it"
        time.sleep(0.1)
    assert _signals(_page(edge, "e1"))["content-usage"] == "train-ai=n"
    assert not datadiligence.HttpEvaluator().is_allowed(url=f"{edge.url}/posts/e1")


def test_datadiligence_refuses_every_opted_out_authors_post(edge: Edge) -> None:
    evaluator = datadiligence.HttpEvaluator()
    for post, author in POSTS.items():
        if author == "ed":  # opts out in the test above
            continue
        url = f"{edge.url}/posts/{post}"
        expected = author not in OPTED_OUT
        assert evaluator.is_allowed(url=url) is expected, (post, author)
        # The same verdict from the response's headers (a crawler that fetched the page
        # itself asks so).
        assert evaluator.is_allowed(headers=dict(httpx.get(url).headers)) is expected


def test_robots_txt_and_content_usage_parse(edge: Edge) -> None:
    parser = urllib.robotparser.RobotFileParser(f"{edge.url}/robots.txt")
    parser.read()
    assert parser.can_fetch("AnyBot", f"{edge.url}/posts/b1")
    assert not parser.can_fetch("AnyBot", f"{edge.url}/settings/privacy")
    assert parser.mtime() > 0  # read, not refused (a 401/403 makes it disallow all)
    for post in POSTS:
        value = _page(edge, post).headers["content-usage"]
        parsed = http_sf.parse(value.encode("ascii"), tltype="dictionary")
        assert isinstance(parsed, dict)
        assert set(parsed) <= {"train-ai", "search"}
        for member in parsed.values():
            assert isinstance(member, tuple)
            assert str(member[0]) in ("y", "n")
