"""Authorisation matrix of the partner API: every route of template.yaml x every kind of caller, with the
status each must get, against DynamoDB Local and the moto server.

Each case gets a fresh world: an *owner* partner with an active plan, a workspace on the plan, one off it
and a reported invoice (with its usage report and reconciliation file in S3), and *another* partner
without a plan. Requests are made as the owner partner's users (owner, billing-admin, technician),
without a token, or as the other partner's owner, who addresses the owner partner's resources by id and
also passes the owner partner's id as a query parameter: the partner id must come from the token's claims
only, so that caller acts on its own (empty) data or gets 404, and nothing of the owner partner appears
in its answers.

A new route in template.yaml fails ``test_the_matrix_covers_exactly_the_routes_of_the_template`` until
it has a row in ``ROWS``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple
from urllib.parse import urlencode

import pytest
from chalice.test import Client

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.identity import Role
from billing_core.domain.invoicing import Invoice, InvoiceLine, InvoiceStatus
from billing_core.domain.money import Money
from billing_core.domain.reporting import reconciliation_csv, reconciliation_key, usage_report_key
from billing_core.settings import BillingSettings
from billing_core.wiring import Services
from infra.template import api_functions, load_template
from tests.helpers import auth_headers, body, new_partner_id

pytestmark = pytest.mark.integration


class Caller(StrEnum):
    NO_TOKEN = "no-token"
    OTHER_PARTNER = "other-partner"  # the owner role of another partner
    TECHNICIAN = "technician"  # the owner partner's technician: workspaces yes, billing no
    OWNER = "owner"
    BILLING_ADMIN = "billing-admin"


class Expect(NamedTuple):
    """The status each caller gets; every row names all of them."""

    no_token: int
    other_partner: int
    technician: int
    owner: int
    billing_admin: int

    def status_for(self, caller: Caller) -> int:
        return int(getattr(self, caller.value.replace("-", "_")))


@dataclass(frozen=True)
class World:
    owner: str  # the partner whose resources every request addresses
    other: str  # another partner, without a plan
    workspace_on_plan: str
    workspace_off_plan: str
    invoiced_month: str  # has an invoice, a usage report and a reconciliation file ready to download
    order_id: str  # an order of one P3Y subscription billed annually (a scheduled change to monthly is allowed)
    subscription_id: str

    def owner_ids(self) -> list[str]:
        return [self.owner, self.workspace_on_plan, self.workspace_off_plan, self.order_id, self.subscription_id]


JsonBody = dict[str, Any]


@dataclass(frozen=True)
class Row:
    """One route. ``path`` as template.yaml declares it; its placeholders are filled from the world
    (``DEFAULT_RESOURCES``, or ``resources`` to pick another attribute of ``World``). ``body`` may be
    computed for the world (an end date the API offers it, say); ``prepare`` may put the world into the
    state the route needs before the request (a cancellation to take back)."""

    method: str
    path: str
    expect: Expect
    body: JsonBody | Callable[[Client, World], JsonBody] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[Client, World], None] | None = None


DEFAULT_RESOURCES = {
    "workspace_id": "workspace_on_plan",
    "month": "invoiced_month",
    "order_id": "order_id",
    "subscription_id": "subscription_id",
}


def answer(response: Any) -> tuple[int, Any]:
    return response.status_code, json.loads(response.body or b"{}")


def first_end_date(client: Client, world: World) -> JsonBody:
    """The first end date the owner partner is offered (the end of this month)."""
    status, offered = answer(client.http.get("/plan/cancellation/options", headers=auth_headers(world.owner)))
    assert status == 200, offered
    return {"ends_on": offered["options"][0]["ends_on"]}


def cancel(client: Client, world: World) -> None:
    """Schedule the owner partner's cancellation, so that there is one to take back."""
    payload = first_end_date(client, world)
    status, cancelled = answer(
        client.http.post("/plan/cancellation", headers=auth_headers(world.owner), body=body(payload))
    )
    assert status == 200, cancelled


ORDER: JsonBody = {"items": [{"sku": "backup-standard", "quantity": 2, "term": "P3Y", "billing_frequency": "annual"}]}
TO_MONTHLY: JsonBody = {"mode": "scheduled", "billing_frequency": "monthly"}


def schedule_change(client: Client, world: World) -> None:
    """Schedule a change of the owner partner's order, so that there is one to withdraw."""
    headers = auth_headers(world.owner, **{"Idempotency-Key": "matrix-schedule"})
    status, changed = answer(
        client.http.post(f"/orders/{world.order_id}/changes", headers=headers, body=body(TO_MONTHLY))
    )
    assert status == 200, changed


# Would be charged if it got through to an inactive plan; declined instead, so no money moves and the
# answer says whose plan was addressed: 409 (the owner partner's, active) or 402 (the caller's own).
DECLINED_CARD: JsonBody = {"payment_method": "pm_card_chargeDeclined", "currency": "USD"}
VISA: JsonBody = {"payment_method": "pm_card_visa", "currency": "USD"}

ROWS: list[Row] = [
    Row(
        "POST",
        "/plan/activation",
        Expect(no_token=401, other_partner=402, technician=403, owner=409, billing_admin=409),
        body=DECLINED_CARD,
        headers={"Idempotency-Key": "matrix-activation"},
    ),
    Row("GET", "/plan", Expect(401, 200, 403, 200, 200)),
    Row(
        "PUT",
        "/plan/payment-method",
        # The other partner never activated: no customer to save the card for.
        Expect(no_token=401, other_partner=409, technician=403, owner=200, billing_admin=200),
        body={"payment_method": "pm_card_mastercard"},
        headers={"Idempotency-Key": "matrix-payment-method"},
    ),
    Row(
        "POST",
        "/workspaces",
        # The other partner's own plan is not active.
        Expect(no_token=401, other_partner=409, technician=201, owner=201, billing_admin=201),
        body={"name": "Matrix", "edition": "anti-malware", "max_devices": 3},
    ),
    Row("GET", "/workspaces", Expect(401, 200, 200, 200, 200)),
    Row("GET", "/workspaces/{workspace_id}", Expect(401, 404, 200, 200, 200)),
    Row(
        "PUT",
        "/workspaces/{workspace_id}/plan",
        Expect(401, 404, 200, 200, 200),
        body={"edition": "business-security", "max_devices": 2},
        resources={"workspace_id": "workspace_off_plan"},
    ),
    Row("PATCH", "/workspaces/{workspace_id}/licence", Expect(401, 404, 200, 200, 200), body={"max_devices": 4}),
    Row("GET", "/workspaces/{workspace_id}/licence", Expect(401, 404, 200, 200, 200)),
    Row("GET", "/invoices", Expect(401, 200, 403, 200, 200)),
    Row("GET", "/invoices/{month}", Expect(401, 404, 403, 200, 200)),
    Row("GET", "/invoices/{month}/usage-report", Expect(401, 404, 403, 200, 200)),
    Row("GET", "/invoices/{month}/reconciliation", Expect(401, 404, 403, 200, 200)),
    # The other partner's own plan is not active: nothing to cancel or reactivate.
    Row("GET", "/plan/cancellation/options", Expect(401, 409, 403, 200, 200)),
    Row("POST", "/plan/cancellation", Expect(401, 409, 403, 200, 200), body=first_end_date),
    Row("DELETE", "/plan/cancellation", Expect(401, 409, 403, 200, 200), prepare=cancel),
    Row(
        "POST",
        "/orders",
        # The other partner's own plan is not active: subscriptions are billed on the plan's invoice.
        Expect(no_token=401, other_partner=409, technician=403, owner=201, billing_admin=201),
        body=ORDER,
        headers={"Idempotency-Key": "matrix-order"},
    ),
    Row("GET", "/orders/{order_id}", Expect(401, 404, 403, 200, 200)),
    Row("GET", "/subscriptions", Expect(401, 200, 403, 200, 200)),
    Row("GET", "/subscriptions/{subscription_id}", Expect(401, 404, 403, 200, 200)),
    Row("GET", "/orders/{order_id}/changes", Expect(401, 404, 403, 200, 200)),
    Row("POST", "/orders/{order_id}/changes/preview", Expect(401, 404, 403, 200, 200), body=TO_MONTHLY),
    Row(
        "POST",
        "/orders/{order_id}/changes",
        Expect(401, 404, 403, 200, 200),
        body=TO_MONTHLY,
        headers={"Idempotency-Key": "matrix-change"},
    ),
    Row("DELETE", "/orders/{order_id}/changes/pending", Expect(401, 404, 403, 200, 200), prepare=schedule_change),
]


def template_routes() -> set[tuple[str, str]]:
    return {route for function in api_functions(load_template()) for route in function.routes}


def test_the_matrix_covers_exactly_the_routes_of_the_template() -> None:
    rows = [(row.method, row.path) for row in ROWS]
    assert len(rows) == len(set(rows)), "one row per route"
    missing, stale = template_routes() - set(rows), set(rows) - template_routes()
    assert not missing, f"routes of template.yaml without a row in ROWS: {sorted(missing)}"
    assert not stale, f"rows for routes template.yaml does not declare: {sorted(stale)}"


# ---------------------------------------------------------------- the world each case starts from


def build_world(client: Client, settings: BillingSettings) -> World:
    owner, other = new_partner_id(), new_partner_id()
    headers = auth_headers(owner, **{"Idempotency-Key": "matrix-setup"})
    status, activated = answer(client.http.post("/plan/activation", headers=headers, body=body(VISA)))
    assert status == 201, activated
    workspaces = []
    for payload in (
        {"name": "On plan", "edition": "anti-malware", "max_devices": 5},
        {"name": "Off", "on_plan": False},
    ):
        status, created = answer(client.http.post("/workspaces", headers=auth_headers(owner), body=body(payload)))
        assert status == 201, created
        workspaces.append(created["workspace_id"])

    month = BillingMonth(2026, 10)
    wired = Services(settings)
    price = Money(250, "USD")
    line = InvoiceLine(workspaces[0], "On plan", "anti-malware", 2, 2, price, price.times(2), month)
    reported = datetime(2026, 11, 1, 0, 10, tzinfo=UTC)
    invoice = Invoice(
        owner,
        month,
        "USD",
        "2026-01",
        (line,),
        created_at=reported,
        status=InvoiceStatus.PAID,
        payment_attempts=1,
        payment_id="pi_matrix",
        paid_at=reported,
        reported_at=reported,
    )
    wired.invoices.save_invoice(invoice)
    wired.usage_reports.put(usage_report_key(owner, month), "workspace_id,device_id,status\n")
    wired.usage_reports.put(reconciliation_key(owner, month), reconciliation_csv(invoice))
    headers = auth_headers(owner, **{"Idempotency-Key": "matrix-setup-order"})
    status, order = answer(client.http.post("/orders", headers=headers, body=body(ORDER)))
    assert status == 201, order
    return World(
        owner,
        other,
        workspaces[0],
        workspaces[1],
        str(month),
        order["order_id"],
        order["subscriptions"][0]["subscription_id"],
    )


# ---------------------------------------------------------------- one request


def caller_headers(caller: Caller, world: World) -> dict[str, str]:
    if caller is Caller.NO_TOKEN:
        return {"Content-Type": "application/json"}
    if caller is Caller.OTHER_PARTNER:
        return auth_headers(world.other, Role.OWNER)
    return auth_headers(world.owner, Role(caller.value))


def request_path(row: Row, caller: Caller, world: World) -> str:
    def fill(match: re.Match[str]) -> str:
        placeholder = match.group(1)
        attribute = row.resources.get(placeholder) or DEFAULT_RESOURCES.get(placeholder)
        assert attribute, f"no world resource for {{{placeholder}}} of {row.path}: add it to DEFAULT_RESOURCES"
        return str(getattr(world, attribute))

    path = re.sub(r"\{(\w+)\}", fill, row.path)
    if caller is Caller.OTHER_PARTNER:  # asking for the owner partner explicitly changes nothing
        path += "?" + urlencode({"partner_id": world.owner})
    return path


def owner_view(client: Client, world: World) -> list[Any]:
    """What the owner partner sees of its plan, workspaces and invoices."""
    headers = auth_headers(world.owner)
    return [answer(client.http.get(path, headers=headers)) for path in ("/plan", "/workspaces", "/invoices")]


CASES = [
    pytest.param(row, caller, id=f"{row.method} {row.path} as {caller.value}") for row in ROWS for caller in Caller
]


@pytest.mark.parametrize(("row", "caller"), CASES)
def test_authorisation_matrix(client: Client, settings: BillingSettings, row: Row, caller: Caller) -> None:
    world = build_world(client, settings)
    if row.prepare:
        row.prepare(client, world)
    before = owner_view(client, world)
    payload = row.body(client, world) if callable(row.body) else row.body
    path = request_path(row, caller, world)
    response = client.http.request(
        row.method,
        path,
        headers={**caller_headers(caller, world), **row.headers},
        body=body(payload).encode() if payload is not None else b"",
    )
    status, answered = answer(response)

    expected = row.expect.status_for(caller)
    assert status == expected, (caller.value, answered)
    if status >= 400:
        assert answered["error"]["code"], answered
        # A refused request changes nothing of the owner partner's.
        assert owner_view(client, world) == before
    if caller is Caller.OTHER_PARTNER:
        text = response.body.decode() if isinstance(response.body, bytes) else str(response.body)
        # Ids the caller sent itself may be echoed ("workspace ws_... not found"); nothing else may appear.
        leaked = [value for value in world.owner_ids() if value in text and value not in path]
        assert not leaked, f"another partner's answer mentions the owner partner's {leaked}: {text}"
