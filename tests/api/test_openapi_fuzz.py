"""schemathesis over every operation of the OpenAPI schema, as a user, an admin and a
licensee: no server error, ever, and every answer is one the schema documents (status code,
content type, headers and body, the 422 body included); input the schema forbids is refused;
every refusal is an RFC 9457 problem (`application/problem+json`, its `status` the answer's,
its `request_id` the `X-Request-Id` header, every error item located).

Each operation gets schemathesis' three phases: the schema's examples, its coverage cases
(boundary values: the largest and smallest allowed integers and one past them, empty and
over-long strings, missing and extra fields) and `EXAMPLES` generated cases in both positive
and negative modes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import CheckContext, CheckFunction, not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.core.transport import Response
from schemathesis.generation.hypothesis.builder import (
    HypothesisTestConfig,
    HypothesisTestMode,
    create_test,
)
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from consentry.keys import Keyring
from consentry.serving.auth import issue_token
from consentry.settings import Settings
from tests.api.conftest import Api, make_api

EXAMPLES = 40
"""Generated cases per operation and credential, on top of the examples and coverage cases
(about 2,000 requests in all; the three runs take about a minute on 2 cores)."""

HEALTH_REPORT = "/healthz"
"""The one path whose 503 is not a problem but a health report (docs/api.md)."""


class NotAProblemError(AssertionError):
    """A refusal that is not an RFC 9457 problem in Consentry's shape."""


def refusals_are_problems(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """Every 4xx/5xx is `application/problem+json` with `status` equal to the answer's,
    `request_id` equal to `X-Request-Id`, and each error item located (`location`, `row`,
    `field`, `message`)."""
    if response.status_code < 400 or case.operation.path == HEALTH_REPORT:
        return None
    kind = response.headers.get("content-type", [""])[0]
    if kind != "application/problem+json":
        raise NotAProblemError(
            f"{response.status_code} answered as {kind!r}: {response.text[:300]}"
        )
    body = response.json()
    request_id = response.headers.get("x-request-id", [None])[0]
    if body.get("status") != response.status_code or body.get("request_id") != request_id:
        raise NotAProblemError(f"status/request_id disagree with the answer: {body}")
    for item in body.get("errors", []):
        if set(item) != {"location", "row", "field", "message"} or not item["message"]:
            raise NotAProblemError(f"an error item is not located: {item}")
    return None


CHECKS: list[CheckFunction] = [
    not_a_server_error,
    refusals_are_problems,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
]

MODES = [HypothesisTestMode.EXAMPLES, HypothesisTestMode.COVERAGE, HypothesisTestMode.FUZZING]


@pytest.fixture(scope="module")
def fuzz_api(tmp_path_factory: pytest.TempPathFactory) -> Api:
    """Licensees with deliveries and revocations, users with consent history, an audit log."""
    home = tmp_path_factory.mktemp("fuzz") / "home"
    home.mkdir()
    return make_api(Settings(home=home))


def _authorization(api: Api, who: str) -> str:
    secret = Keyring.for_home(api.home.settings.home).platform_secret
    credential = {
        "user": lambda: issue_token(secret, "u-us", "user"),
        "admin": lambda: issue_token(secret, "fuzz", "admin"),
        "licensee": lambda: api.keys["alpha"],
    }[who]()
    return f"Bearer {credential}"


def _run(operation: Any, project: Any, test: Callable[[Case[Any]], None]) -> None:
    """All three phases of one operation (as schemathesis' own pytest plugin builds them)."""
    create_test(
        operation=operation,
        test_func=test,
        config=HypothesisTestConfig(
            project=project,
            modes=MODES,
            settings=settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                # The same cases every run: a failure in CI is reproducible, never a coin
                # flip. Set CONSENTRY_FUZZ_RANDOM=1 to explore new cases locally.
                derandomize=not os.environ.get("CONSENTRY_FUZZ_RANDOM"),
                suppress_health_check=list(HealthCheck),
            ),
        ),
    )()


@pytest.mark.parametrize("who", ["user", "admin", "licensee"])
def test_every_operation_answers_as_documented(fuzz_api: Api, who: str) -> None:
    config = schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": _authorization(fuzz_api, who)},
            "generation": {"mode": "all", "max-examples": EXAMPLES},
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_api.client.app, config=config)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # the schema itself is valid
        operations.append(result.ok())
    documented = fuzz_api.client.get("/openapi.json").json()["paths"]
    assert len(operations) == sum(len(methods) for methods in documented.values())
    failures: dict[str, str] = {}
    sent = 0
    started = time.monotonic()
    for operation in operations:

        def call(case: Case[Any]) -> None:
            nonlocal sent
            sent += 1
            case.call_and_validate(checks=CHECKS)

        try:
            _run(operation, schema.config, call)
        except Exception as exc:  # each operation's failures are reported together below
            failures[operation.label] = str(exc)
    report = "\n\n".join(f"== {label}\n{text}" for label, text in failures.items())
    assert not failures, f"{len(failures)} of {len(operations)} operations failed:\n{report}"
    print(
        f"{who}: {sent} requests over {len(operations)} operations in "
        f"{time.monotonic() - started:.1f} s"
    )
