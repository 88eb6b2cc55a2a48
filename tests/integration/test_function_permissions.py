"""Every DynamoDB call a function makes is allowed by its policy in template.yaml.

Neither DynamoDB Local nor moto enforces IAM, so a function whose code reads the base table where its
policy only grants an index would pass every other test and fail in AWS. Here each function's use cases run
on the local stack while every DynamoDB call is recorded (the action, the table, the index), and each
recorded call must match a statement of that function's policy in template.yaml.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any
from unittest import mock

import pytest
from pynamodb.connection import Connection

from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.catalog import BillingFrequency, Cycle, Term
from billing_core.domain.errors import NotFound
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.subscriptions import Order, OrderLine, Owner, new_subscriptions
from billing_core.schemas import (
    ActivatePlanRequest,
    CancelPlanRequest,
    CreateWorkspaceRequest,
    UpdatePaymentMethodRequest,
)
from billing_core.settings import BillingSettings
from billing_core.subscription_schemas import ChangeOrderRequest, CreateOrderRequest
from billing_core.wiring import Services
from infra.stack import LocalStack
from tests.fakes import FixedClock, RecordingPaymentProvider
from tests.helpers import PRICE_LIST_2026_01, new_partner_id

pytestmark = pytest.mark.integration

ACTIVATED = datetime(2026, 10, 12, 9, tzinfo=UTC)
ORDER = {"items": [{"sku": "edr-business", "quantity": 2, "term": "P1Y", "billing_frequency": "monthly"}]}
RUN_AT = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
Access = tuple[str, str, str | None]  # (action, table logical id, index or None)
TRANSACTION_PARTS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem"}


@contextmanager
def recorded_dynamodb_calls(tables: dict[str, str]) -> Iterator[set[Access]]:
    """Every DynamoDB action made meanwhile, as IAM sees it (a transaction: each of its parts)."""
    original = Connection._make_api_call
    seen: set[Access] = set()

    def table(name: str) -> str:
        return tables.get(name, name)

    def record(connection: Connection, operation: str, kwargs: dict[str, Any]) -> Any:
        if operation == "TransactWriteItems":
            for item in kwargs["TransactItems"]:
                for kind, part in item.items():
                    action = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem"}.get(
                        kind, "ConditionCheckItem"
                    )
                    seen.add((f"dynamodb:{action}", table(part["TableName"]), None))
        elif operation in ("BatchGetItem", "BatchWriteItem"):
            for name in kwargs["RequestItems"]:
                seen.add((f"dynamodb:{operation}", table(name), None))
        else:
            seen.add((f"dynamodb:{operation}", table(kwargs["TableName"]), kwargs.get("IndexName")))
        return original(connection, operation, kwargs)

    with mock.patch.object(Connection, "_make_api_call", record):
        yield seen


def allowed(template: dict[str, Any], function: str) -> set[Access]:
    grants: set[Access] = set()
    for policy in template["Resources"][function]["Properties"].get("Policies", []):
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for resource in resources:
                if isinstance(resource, dict) and "Fn::GetAtt" in resource:
                    target: tuple[str, str | None] = (resource["Fn::GetAtt"][0], None)
                elif isinstance(resource, dict) and "Fn::Sub" in resource:
                    match = re.fullmatch(r"\$\{(\w+)\.Arn\}/index/(\w+)", str(resource["Fn::Sub"]))
                    if not match:
                        continue
                    target = (match.group(1), match.group(2))
                else:
                    continue
                grants |= {(action, *target) for action in statement["Action"] if action.startswith("dynamodb:")}
    return grants


@pytest.fixture
def wired(local_stack: LocalStack, settings: BillingSettings) -> Services:
    return Services(settings, clock=FixedClock(ACTIVATED), payments=RecordingPaymentProvider())


@pytest.fixture
def tables(settings: BillingSettings) -> dict[str, str]:
    return {
        settings.billing_table: "BillingTable",
        settings.usage_table: "UsageTable",
        settings.idempotency_table: "IdempotencyTable",
    }


def partner_with_everything(wired: Services) -> PartnerIdentity:
    """An active plan, a workspace on it, an order of a subscription: what every use case reads."""
    owner = PartnerIdentity(new_partner_id(), Role.OWNER, "owner", email="owner@example.com")
    wired.activation.activate_monthly_billing(owner, "k", ActivatePlanRequest(payment_method="pm_card_visa"))
    wired.workspaces.create_workspace(owner, CreateWorkspaceRequest(name="Acme", edition="anti-malware", max_devices=5))
    lines = [OrderLine("items.0", "backup-standard", 2, Cycle(Term.P1Y, BillingFrequency.MONTHLY))]
    subs = new_subscriptions(
        order_id="ord_p",
        owner=Owner(owner.partner_id),
        lines=lines,
        subscription_ids=["sub_p"],
        prices=PRICE_LIST_2026_01,
        currency="USD",
        now=ACTIVATED,
    )
    wired.subscription_store.save_order(
        Order("ord_p", Owner(owner.partner_id), ("sub_p",), ACTIVATED),
        subs,
        audit=AuditEvent(owner.partner_id, "order_created", ACTIVATED, "test"),
    )
    return owner


def activation(wired: Services, owner: PartnerIdentity) -> None:
    other = PartnerIdentity(new_partner_id(), Role.OWNER, "owner", email="o@example.com")
    wired.activation.activate_monthly_billing(other, "k", ActivatePlanRequest(payment_method="pm_card_visa"))
    wired.activation.plan_status(owner)
    # Dunning's way out: a new card settles the declined invoice (and reports it, as the run does).
    wired.settlement.update_payment_method(owner, "card-2", UpdatePaymentMethodRequest(payment_method="pm_card_visa"))


def a_declined_october(wired: Services, owner: PartnerIdentity) -> None:
    """The owner's card declines monthly charges, and October's invoice (its licence period) was declined."""
    wired.settlement.update_payment_method(
        owner, "card-1", UpdatePaymentMethodRequest(payment_method="pm_card_offSessionDeclined")
    )
    monthly_charge(wired, owner)
    invoice = wired.invoices.load_invoice(owner.partner_id, BillingMonth(2026, 10))
    assert invoice is not None and invoice.unpaid


def workspaces(wired: Services, owner: PartnerIdentity) -> None:
    created = wired.workspaces.create_workspace(
        owner, CreateWorkspaceRequest(name="B", edition="anti-malware", max_devices=3)
    )
    wired.workspaces.list_workspaces(owner)
    wired.workspaces.get_workspace(owner, created.workspace_id)


def monthly_charge(wired: Services, owner: PartnerIdentity) -> None:
    assert isinstance(wired.clock, FixedClock)
    wired.clock.current = RUN_AT
    wired.prices.on(RUN_AT.date())  # also the price lists' query
    wired.monthly_charge.charge_partner_for_month(owner.partner_id, BillingMonth(2026, 10))


def cancellation(wired: Services, owner: PartnerIdentity) -> None:
    options = wired.cancellation.cancellation_options(owner)
    wired.cancellation.cancel_plan(owner, CancelPlanRequest(ends_on=options.options[0].ends_on))
    wired.cancellation.reactivate_plan(owner)


def plan_end(wired: Services, owner: PartnerIdentity) -> None:
    options = wired.cancellation.cancellation_options(owner)
    ends_on: date = options.options[0].ends_on
    wired.cancellation.cancel_plan(owner, CancelPlanRequest(ends_on=ends_on))


def subscriptions(wired: Services, owner: PartnerIdentity) -> None:
    order = wired.subscriptions.buy_order(owner, "order-1", CreateOrderRequest.model_validate(ORDER))
    wired.subscriptions.list_subscriptions(owner)
    wired.subscriptions.change_options(owner, order.order_id)
    change = ChangeOrderRequest(mode="immediate", term="P3Y", billing_frequency="annual")
    wired.subscriptions.preview_change(owner, order.order_id, change)
    wired.subscriptions.apply_change(owner, order.order_id, "change-1", change)


def billing_history(wired: Services, owner: PartnerIdentity) -> None:
    wired.history.list_invoices(owner, limit=12, after=None)
    with contextlib.suppress(NotFound):  # no invoice yet: only the reads matter here
        wired.history.get_invoice(owner, "2026-10")


USE_CASES: dict[str, Callable[[Services, PartnerIdentity], None]] = {
    "SubscriptionsFunction": subscriptions,
    "PortalFunction": billing_history,
    "ActivateFunction": activation,
    "WorkspacesFunction": workspaces,
    "ChargeWorkerFunction": monthly_charge,
    "CancelFunction": cancellation,
}


# What a use case needs that its function does not do itself (made before the calls are recorded).
PREPARED: dict[str, Callable[[Services, PartnerIdentity], None]] = {"ActivateFunction": a_declined_october}


@pytest.mark.parametrize("function", sorted(USE_CASES))
def test_every_dynamodb_call_of_a_function_is_allowed_by_its_policy(
    function: str, wired: Services, tables: dict[str, str], local_stack: LocalStack
) -> None:
    owner = partner_with_everything(wired)
    if function in PREPARED:
        PREPARED[function](wired, owner)
    with recorded_dynamodb_calls(tables) as calls:
        USE_CASES[function](wired, owner)
    grants = allowed(local_stack.template, function)
    denied = sorted(call for call in calls if call not in grants)
    assert not denied, f"{function} calls DynamoDB beyond its policy: {denied}"


def test_the_end_of_plan_finaliser_may_end_subscriptions(
    wired: Services, tables: dict[str, str], local_stack: LocalStack
) -> None:
    owner = partner_with_everything(wired)
    plan_end(wired, owner)
    ends_on = wired.store.load_plan(owner.partner_id).cancellation_ends_on
    assert ends_on is not None
    assert isinstance(wired.clock, FixedClock)
    wired.clock.current = datetime(ends_on.year, ends_on.month, ends_on.day, 23, 59, tzinfo=UTC).replace(
        day=ends_on.day
    )
    wired.clock.current = BillingMonth.containing_date(ends_on).next().starts_at
    with recorded_dynamodb_calls(tables) as calls:
        wired.cancellation.end_plan_as_scheduled(owner.partner_id, ends_on)
    grants = allowed(local_stack.template, "PlanEndFunction")
    denied = sorted(call for call in calls if call not in grants)
    assert not denied, f"PlanEndFunction calls DynamoDB beyond its policy: {denied}"
