"""Pydantic models of every request body and response of the partner API (no AWS imports).

Request models forbid unknown fields so a typo is a 422 naming the field, not silently ignored.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from billing_core.domain.workspace import MAX_DEVICES_LIMIT
from billing_core.iso_dates import IsoDate


def examples(*values: dict[str, Any]) -> ConfigDict:
    """A model's examples in the OpenAPI document (JSON Schema ``examples``); tests/unit/test_openapi.py checks
    that each one is valid for its model."""
    return ConfigDict(json_schema_extra={"examples": list(values)})


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


# Shared by the examples below: one partner, one workspace, November 2026.
WORKSPACE_ID_EXAMPLE = "ws_3f2a9c0d4b6e4f1a8c7d2e5b6a9f0c1d"
FEE_EXAMPLE = {"amount_minor": 1000, "currency": "USD", "display": "USD 10.00"}


class ActivatePlanRequest(RequestModel):
    model_config = examples(
        {"payment_method": "pm_card_visa", "currency": "USD", "billing_email": "billing@acme-it.example"}
    )

    payment_method: str = Field(
        min_length=1, max_length=255, description="Payment method token, e.g. pm_card_visa in the sandbox"
    )
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="ISO-4217 code from the price list")
    billing_email: str | None = Field(
        default=None,
        max_length=254,
        pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
        description="Where billing reports go; defaults to the e-mail address of the activating user",
    )


# Names end up in e-mail subjects, CSV files and licence documents: printable text only.
PRINTABLE_TEXT = r"^[^\x00-\x1f\x7f]+$"


class CreateWorkspaceRequest(RequestModel):
    model_config = examples(
        {"name": "Dental practice Meyer", "edition": "business-security", "max_devices": 25},
        {"name": "Law office Kraus (trial)", "on_plan": False},
    )

    name: str = Field(min_length=1, max_length=200, pattern=PRINTABLE_TEXT)
    on_plan: bool = Field(default=True, strict=True, description="Create the workspace directly on the monthly plan")
    # edition and max_devices are required when on_plan is true (checked by the use case, naming each).
    edition: str | None = Field(default=None, min_length=1, max_length=64)
    max_devices: int | None = Field(default=None, ge=1, le=MAX_DEVICES_LIMIT, strict=True)


class SwitchWorkspaceToPlanRequest(RequestModel):
    model_config = examples({"edition": "anti-malware", "max_devices": 10})

    edition: str = Field(min_length=1, max_length=64)
    max_devices: int = Field(ge=1, le=MAX_DEVICES_LIMIT, strict=True)


class ChangeWorkspaceLicenceRequest(RequestModel):
    model_config = examples({"max_devices": 40}, {"edition": "enterprise-security", "max_devices": 40})

    edition: str | None = Field(default=None, min_length=1, max_length=64)
    max_devices: int | None = Field(default=None, ge=1, le=MAX_DEVICES_LIMIT, strict=True)


class MoneyView(BaseModel):
    amount_minor: int
    currency: str
    display: str


WORKSPACE_EXAMPLE: dict[str, Any] = {
    "workspace_id": WORKSPACE_ID_EXAMPLE,
    "name": "Dental practice Meyer",
    "on_plan": True,
    "edition": "business-security",
    "max_devices": 25,
    "created_at": "2026-11-02T09:14:00Z",
    "joined_plan_at": "2026-11-02T09:14:00Z",
}
PLAN_WORKSPACE_EXAMPLE = WORKSPACE_EXAMPLE | {"devices_this_month": 27, "seats_this_month": 25}
PLAN_EXAMPLE: dict[str, Any] = {
    "partner_id": "acme-it",
    "state": "active",
    "currency": "USD",
    "price_list_version": "2026-01",
    "activated_at": "2026-10-14T08:30:00Z",
    "covered_through": "2026-10-31",
    "next_charge_date": "2026-12-01",
    "month": "2026-11",
    "cancellation_ends_on": None,
    "ended_on": None,
    "workspaces_on_plan": [PLAN_WORKSPACE_EXAMPLE],
}


class WorkspaceView(BaseModel):
    model_config = examples(WORKSPACE_EXAMPLE)

    workspace_id: str
    name: str
    on_plan: bool
    edition: str | None
    max_devices: int | None
    created_at: datetime
    joined_plan_at: datetime | None


class PlanWorkspaceView(WorkspaceView):
    model_config = examples(PLAN_WORKSPACE_EXAMPLE)

    devices_this_month: int = Field(description="Distinct devices seen on the plan this month so far")
    seats_this_month: int = Field(description="Billable seats so far: devices capped at max_devices")


class AwaitingAuthenticationView(BaseModel):
    payment_id: str
    amount: MoneyView
    expires_at: datetime = Field(description="After this, the next activation request cancels the payment")


class PlanStatusView(BaseModel):
    model_config = examples(PLAN_EXAMPLE)

    partner_id: str
    state: str
    currency: str | None
    price_list_version: str | None
    activated_at: datetime | None
    covered_through: date | None
    next_charge_date: date | None
    month: str = Field(description="The current billing month (UTC), YYYY-MM")
    cancellation_ends_on: date | None = Field(
        default=None, description="Set while a cancellation is scheduled: the plan's last day (reactivate until then)"
    )
    ended_on: date | None = Field(default=None, description="Set when the plan was cancelled: its last day")
    workspaces_on_plan: list[PlanWorkspaceView]
    awaiting_authentication: AwaitingAuthenticationView | None = Field(
        default=None,
        description="Set while the activation payment waits for the customer's 3-D Secure authentication: send "
        "the same activation request again once it is done",
    )


class ActivationOutcome(BaseModel):
    """Result of one activation request. A final one (``activated``, ``declined``) is stored by the idempotency
    layer and replayed verbatim; ``requires_action`` (202) is not stored: the same request sent again looks the
    payment up and answers where it stands now."""

    model_config = examples(
        {
            "status": "activated",
            "plan": PLAN_EXAMPLE | {"month": "2026-10", "next_charge_date": "2026-11-01", "workspaces_on_plan": []},
            "activation_fee": FEE_EXAMPLE,
            "payment_id": "pi_sandbox_5e1c0f0b2a",
            "decline_code": None,
            "message": None,
        },
        {
            "status": "requires_action",
            "plan": None,
            "activation_fee": {"amount_minor": 1000, "currency": "EUR", "display": "EUR 10.00"},
            "payment_id": "pi_3PqR8sLk2eZvKYlo0x1Yb2cD",
            "client_secret": "pi_3PqR8sLk2eZvKYlo0x1Yb2cD_secret_Ab3dE5fG7hJ9kL1m",
            "authentication_expires_at": "2026-10-14T09:30:00Z",
            "decline_code": None,
            "message": "The card requires authentication (3-D Secure): run Stripe.js handleNextAction with the "
            "client_secret, then send the same request again",
        },
    )

    status: Literal["activated", "declined", "requires_action"]
    plan: PlanStatusView | None = None
    activation_fee: MoneyView | None = None
    payment_id: str | None = None
    # requires_action only: never stored with the idempotency record.
    client_secret: str | None = Field(
        default=None,
        description="requires_action only: the payment's client secret for the customer's browser "
        "(Stripe.js `handleNextAction` / `confirmCardPayment`); the customer's alone, do not log or store it",
    )
    authentication_expires_at: datetime | None = Field(
        default=None,
        description="requires_action only: until when the customer can authenticate; a request after it cancels "
        "the payment (402 `authentication_abandoned`)",
    )
    decline_code: str | None = None
    message: str | None = None


class LicenceDocumentView(BaseModel):
    model_config = examples(
        {
            "workspace_id": WORKSPACE_ID_EXAMPLE,
            "plan": "monthly",
            "edition": "business-security",
            "max_devices": 25,
            "status": "active",
            "valid_through": "2026-11-30",
            "ends_on": None,
        }
    )

    workspace_id: str
    plan: str | None
    edition: str | None
    max_devices: int | None
    status: str
    valid_through: date | None
    ends_on: date | None = Field(
        default=None, description="Set while the plan's cancellation is scheduled: the licence ends with this day"
    )


class CreditedChargeView(BaseModel):
    seq: int = Field(description="The credited period's entry in the subscription's charge schedule")
    period_first_day: date
    period_last_day: date
    amount: MoneyView = Field(description="What was charged for that period")


class SubscriptionLineView(BaseModel):
    subscription_id: str
    order_id: str
    customer_id: str | None = Field(description="The partner's customer who holds the subscription, if any")
    sku: str
    cycle: str = Field(description="Term and billing frequency, e.g. P1Y/annual")
    quantity: int
    period_first_day: date
    period_last_day: date = Field(description="The period's last day (inclusive)")
    charge_seq: int | None = Field(default=None, description="The line's entry in the subscription's charge schedule")
    price_list_version: str | None = None
    promotion: str | None = None
    credit_for: CreditedChargeView | None = Field(
        default=None, description="A change credit: the period charge it gives back from"
    )


# The values of ``domain.invoicing.LineKind`` (not imported here: every API function loads this module).
LineKindName = Literal[
    "seats", "seat_adjustment", "licence_period", "change_credit", "credit_brought_forward", "credit_carried_forward"
]


class InvoiceLineView(BaseModel):
    kind: LineKindName = Field(
        description="seats / seat_adjustment: a workspace's seats (late usage); licence_period / change_credit: a "
        "licence subscription's charge or credit (see `subscription`); credit_brought_forward / "
        "credit_carried_forward: credit from the previous invoice (negative) / credit beyond this invoice's "
        "charges, taken to the next (positive, so the total is 0)"
    )
    workspace_id: str = Field(description="Empty on lines that are not a workspace's seats")
    description: str
    edition: str = Field(description="The edition, or the SKU of a subscription line")
    month: str = Field(description="The month the seats were used in (earlier than the invoice for adjustments)")
    seats: int
    devices: int
    unit_price: MoneyView
    amount: MoneyView
    adjustment: bool
    subscription: SubscriptionLineView | None = Field(
        default=None, description="Licence period and change credit lines"
    )


INVOICE_EXAMPLE: dict[str, Any] = {
    "month": "2026-11",
    "status": "paid",
    "total": {"amount_minor": 8750, "currency": "USD", "display": "USD 87.50"},
    "lines": [
        {
            "kind": "seats",
            "workspace_id": WORKSPACE_ID_EXAMPLE,
            "description": "Dental practice Meyer - Business Security",
            "edition": "business-security",
            "month": "2026-11",
            "seats": 25,
            "devices": 27,
            "unit_price": {"amount_minor": 350, "currency": "USD", "display": "USD 3.50"},
            "amount": {"amount_minor": 8750, "currency": "USD", "display": "USD 87.50"},
            "adjustment": False,
            "subscription": None,
        }
    ],
    "line_count": 1,
    "price_list_version": "2026-01",
    "created_at": "2026-12-01T00:05:12Z",
    "payment_attempts": 1,
    "next_retry_on": None,
    "failure_code": None,
    "payment_id": "pi_sandbox_9b2d41c7e0",
    "paid_at": "2026-12-01T00:05:14Z",
}


class InvoiceView(BaseModel):
    model_config = examples(INVOICE_EXAMPLE)

    month: str
    status: str
    total: MoneyView
    lines: list[InvoiceLineView] | None = Field(
        description=(
            "Every line of the invoice. In a listing, null for an invoice of more lines than a listing carries "
            "(see `line_count`): `GET /invoices/{month}` gives them"
        )
    )
    line_count: int = Field(description="How many lines the invoice has")
    price_list_version: str
    created_at: datetime
    payment_attempts: int
    next_retry_on: date | None
    failure_code: str | None
    payment_id: str | None
    paid_at: datetime | None


class InvoicePage(BaseModel):
    model_config = examples({"items": [INVOICE_EXAMPLE], "next": "eyJtb250aCI6ICIyMDI2LTExIn0"})

    items: list[InvoiceView]
    next: str | None = Field(description="Pass as `after` to get the next (older) page; null on the last page")


class DownloadLink(BaseModel):
    model_config = examples(
        {
            "url": "https://msp-billing-reports.s3.amazonaws.com/usage-reports/acme-it/2026-11.csv?X-Amz-Expires=900",
            "expires_in_seconds": 900,
        }
    )

    url: str
    expires_in_seconds: int


class CancelPlanRequest(RequestModel):
    model_config = examples({"ends_on": "2026-12-31"})

    ends_on: IsoDate = Field(
        strict=True, description="One of the offered end dates (GET /plan/cancellation/options), YYYY-MM-DD"
    )


class CancellationOptionView(BaseModel):
    ends_on: date = Field(description="The plan's last day; licences end when it is over (00:00 UTC next day)")
    final_invoice_on: date = Field(description="The monthly run that invoices the final month")


class CancellationOptionsView(BaseModel):
    model_config = examples(
        {
            "options": [
                {"ends_on": "2026-11-30", "final_invoice_on": "2026-12-01"},
                {"ends_on": "2026-12-31", "final_invoice_on": "2027-01-01"},
                {"ends_on": "2027-01-31", "final_invoice_on": "2027-02-01"},
            ],
            "scheduled_ends_on": None,
        }
    )

    options: list[CancellationOptionView]
    scheduled_ends_on: date | None = Field(description="The end date already chosen, if a cancellation is scheduled")


class EndingWorkspaceView(BaseModel):
    workspace_id: str
    name: str
    edition: str | None
    max_devices: int | None
    devices_this_month: int = Field(description="Devices seen this month: they lose protection at the end date")


class CancellationView(BaseModel):
    model_config = examples(
        {
            "state": "cancellation_scheduled",
            "ends_on": "2026-12-31",
            "licences_end_at": "2027-01-01T00:00:00Z",
            "final_invoice_on": "2027-01-01",
            "workspaces_losing_protection": [
                {
                    "workspace_id": WORKSPACE_ID_EXAMPLE,
                    "name": "Dental practice Meyer",
                    "edition": "business-security",
                    "max_devices": 25,
                    "devices_this_month": 27,
                }
            ],
            "confirmation_email_sent": True,
        }
    )

    state: str
    ends_on: date
    licences_end_at: datetime = Field(description="When every licence on the plan ends (UTC)")
    final_invoice_on: date | None = Field(description="The monthly run that invoices the final month, if any is due")
    workspaces_losing_protection: list[EndingWorkspaceView]
    confirmation_email_sent: bool


class UpdatePaymentMethodRequest(RequestModel):
    model_config = examples({"payment_method": "pm_card_mastercard"})

    payment_method: str = Field(
        min_length=1,
        max_length=255,
        description="Payment method token of the new card (from Stripe.js; e.g. pm_card_mastercard in the sandbox)",
    )


class SettledInvoiceView(BaseModel):
    month: str
    status: str
    total: MoneyView
    payment_id: str | None
    failure_code: str | None


class PaymentMethodUpdate(BaseModel):
    """The new payment method is saved for every later charge, and each unpaid invoice was charged with it now,
    oldest first: ``settled`` were paid, ``unpaid`` were declined again (``failure_code``). A plan past due
    is active again once no invoice is past due any more."""

    model_config = examples(
        {
            "plan_state": "active",
            "payment_method": "pm_card_mastercard",
            "settled": [
                {
                    "month": "2026-11",
                    "status": "paid",
                    "total": {"amount_minor": 7500, "currency": "USD", "display": "USD 75.00"},
                    "payment_id": "pi_sbx_2f6c1e0d9a8b7c6d5e4f3a2b",
                    "failure_code": None,
                }
            ],
            "unpaid": [],
        }
    )

    plan_state: str
    payment_method: str
    settled: list[SettledInvoiceView]
    unpaid: list[SettledInvoiceView]
