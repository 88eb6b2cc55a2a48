"""Schemathesis fuzzes the partner API over HTTP, from the OpenAPI document the local server serves.

The caller is the owner of a partner with an active plan, a workspace on it and a reported invoice, so
the generated requests reach the real answers (not only 404s): every other path parameter is swapped for
the real workspace or invoice month, and every other activation is made by a new partner's owner. Each
response must be no 5xx, a documented status with a documented content type, and a body matching its
schema. The figures (operations, requests, statuses) are printed at the end.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.identity import Role
from billing_core.domain.invoicing import Invoice, InvoiceLine, InvoiceStatus
from billing_core.domain.money import Money
from billing_core.domain.reporting import reconciliation_csv, reconciliation_key, usage_report_key
from billing_core.settings import BillingSettings
from billing_core.wiring import Services
from infra import PROJECT_ROOT
from infra.dev_tokens import development_token
from infra.local_api import LocalApiServer, composed_partner_api
from infra.processes import free_port
from infra.stack import LocalStack
from tests.helpers import new_partner_id

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 25  # per operation, fuzzing phase; the examples and coverage phases add their own cases
SEED = 20261122
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
INVOICE_MONTH = BillingMonth(2026, 9)


@dataclass
class FuzzTarget:
    url: str
    token: str
    workspace_id: str
    month: str
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)


def _call(url: str, method: str, token: str, payload: dict[str, Any], **headers: str) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the local server on loopback
        url,
        method=method,
        data=json.dumps(payload).encode(),
        headers={"Authorization": token, "Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def _store_reported_invoice(wired: Services, partner_id: str, workspace_id: str) -> None:
    price = Money(250, "USD")
    line = InvoiceLine(workspace_id, "Fuzzed practice", "anti-malware", 3, 3, price, price.times(3), INVOICE_MONTH)
    at = datetime(2026, 10, 1, tzinfo=UTC)
    invoice = Invoice(
        partner_id,
        INVOICE_MONTH,
        "USD",
        "2026-01",
        (line,),
        at,
        status=InvoiceStatus.PAID,
        payment_id="pi_fuzz",
        paid_at=at,
        reported_at=at,
    )
    wired.invoices.save_invoice(invoice)
    wired.usage_reports.put(usage_report_key(partner_id, INVOICE_MONTH), "workspace,device\n")
    wired.usage_reports.put(reconciliation_key(partner_id, INVOICE_MONTH), reconciliation_csv(invoice))


@pytest.fixture(scope="module")
def fuzz_target(
    local_stack: LocalStack, settings: BillingSettings, request: pytest.FixtureRequest
) -> Iterator[FuzzTarget]:
    # The local server as `make up` serves it: a composition of its own, on a port of its own.
    server = LocalApiServer(composed_partner_api(local_stack.template), "127.0.0.1", free_port())
    server.start()
    partner_id = new_partner_id()
    token = development_token(partner_id, Role.OWNER)
    activation = _call(
        f"{server.url}/plan/activation",
        "POST",
        token,
        {"payment_method": "pm_card_visa", "currency": "USD"},
        **{"Idempotency-Key": "fuzz-activation"},
    )
    assert activation["status"] == "activated", activation
    workspace = _call(
        f"{server.url}/workspaces",
        "POST",
        token,
        {"name": "Fuzzed practice", "edition": "business-security", "max_devices": 5},
    )
    _store_reported_invoice(Services(settings), partner_id, workspace["workspace_id"])
    target = FuzzTarget(server.url, token, workspace["workspace_id"], str(INVOICE_MONTH))
    yield target
    server.stop()
    summary = (
        f"schemathesis: {len(target.requests)} operations, {sum(target.requests.values())} requests "
        f"(statuses {dict(sorted(target.statuses.items()))}); per operation {dict(sorted(target.requests.items()))}"
    )
    # Shown in the test output, outside pytest's capture, so the figures are there in every run.
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is not None and reporter is not None:
        with capture.global_and_fixture_disabled():
            reporter.write(f"\n{summary}\n")


@pytest.fixture(scope="module")
def api_schema(fuzz_target: FuzzTarget) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": False},
            "phases": {"stateful": {"enabled": False}},
        }
    )
    schema = schemathesis.openapi.from_url(f"{fuzz_target.url}/openapi.json", config=config)
    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@schema.parametrize()
def test_partner_api_answers_every_generated_request_as_documented(
    case: schemathesis.Case[Any], fuzz_target: FuzzTarget
) -> None:
    label = case.operation.label
    number = fuzz_target.requests[label]
    # Every other request uses the caller's real workspace / invoice month, so the success paths are fuzzed too.
    if number % 2 == 0 and case.path_parameters:
        if "workspace_id" in case.path_parameters:
            case.path_parameters["workspace_id"] = fuzz_target.workspace_id
        if "month" in case.path_parameters:
            case.path_parameters["month"] = fuzz_target.month
    token = fuzz_target.token
    if label == "POST /plan/activation" and number % 2 == 0:
        token = development_token(new_partner_id(), Role.OWNER)  # a partner without a plan: a real activation
    fuzz_target.requests[label] += 1
    response = case.call_and_validate(base_url=fuzz_target.url, headers={"Authorization": token}, checks=CHECKS)
    fuzz_target.statuses[response.status_code] += 1


def _raw(url: str, method: str = "GET", headers: dict[str, str] | None = None, data: bytes | None = None) -> Any:
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_local_server_serves_the_committed_document(fuzz_target: FuzzTarget) -> None:
    status, document = _raw(f"{fuzz_target.url}/openapi.json")
    assert status == 200
    assert document == json.loads((PROJECT_ROOT / "docs" / "openapi.json").read_text())


def test_odd_requests_found_while_fuzzing_answer_4xx(fuzz_target: FuzzTarget) -> None:
    url, owner = fuzz_target.url, {"Authorization": fuzz_target.token, "Content-Type": "application/json"}
    # A token whose claims cannot be read: API Gateway's 401 (the local authorizer used to drop the connection).
    for token in ("garbage", "Bearer a.b.c", "Bearer x.WzFd.y"):
        status, body = _raw(f"{url}/workspaces", headers={"Authorization": token})
        assert (status, body["error"]["code"]) == (401, "unauthenticated") and token not in json.dumps(body)
    # A method no route has: refused by the app (http.server used to answer 501).
    assert _raw(f"{url}/invoices", "TRACE", owner)[0] == 405
    # An id too long to be a DynamoDB key: not found (the store's ValidationException used to be a 500).
    status, body = _raw(f"{url}/workspaces/{'x' * 3000}/licence", headers=owner)
    assert (status, body["error"]["code"]) == (404, "not_found")
    # A body nested deeper than the JSON parser recurses: 400 (a RecursionError used to be a 500).
    status, body = _raw(f"{url}/workspaces", "POST", owner, b"[" * 100_000)
    assert (status, body["error"]["code"]) == (400, "bad_request")
