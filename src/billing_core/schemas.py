"""Pydantic models of every request body and response of the partner API (no AWS imports).

Request models forbid unknown fields so a typo is a 422 naming the field, not silently ignored.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from billing_core.domain.workspace import MAX_DEVICES_LIMIT


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ActivatePlanRequest(RequestModel):
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
    name: str = Field(min_length=1, max_length=200, pattern=PRINTABLE_TEXT)
    on_plan: bool = Field(default=True, strict=True, description="Create the workspace directly on the monthly plan")
    # edition and max_devices are required when on_plan is true (checked by the use case, naming each).
    edition: str | None = Field(default=None, min_length=1, max_length=64)
    max_devices: int | None = Field(default=None, ge=1, le=MAX_DEVICES_LIMIT, strict=True)


class SwitchWorkspaceToPlanRequest(RequestModel):
    edition: str = Field(min_length=1, max_length=64)
    max_devices: int = Field(ge=1, le=MAX_DEVICES_LIMIT, strict=True)


class ChangeWorkspaceLicenceRequest(RequestModel):
    edition: str | None = Field(default=None, min_length=1, max_length=64)
    max_devices: int | None = Field(default=None, ge=1, le=MAX_DEVICES_LIMIT, strict=True)


class MoneyView(BaseModel):
    amount_minor: int
    currency: str
    display: str


class WorkspaceView(BaseModel):
    workspace_id: str
    name: str
    on_plan: bool
    edition: str | None
    max_devices: int | None
    created_at: datetime
    joined_plan_at: datetime | None


class PlanWorkspaceView(WorkspaceView):
    devices_this_month: int = Field(description="Distinct devices seen on the plan this month so far")
    seats_this_month: int = Field(description="Billable seats so far: devices capped at max_devices")


class PlanStatusView(BaseModel):
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


class ActivationOutcome(BaseModel):
    """Result of one activation request; stored by the idempotency layer and replayed verbatim."""

    status: Literal["activated", "declined"]
    plan: PlanStatusView | None = None
    activation_fee: MoneyView | None = None
    payment_id: str | None = None
    decline_code: str | None = None
    message: str | None = None


class LicenceDocumentView(BaseModel):
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


class InvoiceView(BaseModel):
    month: str
    status: str
    total: MoneyView
    lines: list[InvoiceLineView]
    price_list_version: str
    created_at: datetime
    payment_attempts: int
    next_retry_on: date | None
    failure_code: str | None
    payment_id: str | None
    paid_at: datetime | None


class InvoicePage(BaseModel):
    items: list[InvoiceView]
    next: str | None = Field(description="Pass as `after` to get the next (older) page; null on the last page")


class DownloadLink(BaseModel):
    url: str
    expires_in_seconds: int


class CancelPlanRequest(RequestModel):
    ends_on: date = Field(
        strict=True, description="One of the offered end dates (GET /plan/cancellation/options), YYYY-MM-DD"
    )


class CancellationOptionView(BaseModel):
    ends_on: date = Field(description="The plan's last day; licences end when it is over (00:00 UTC next day)")
    final_invoice_on: date = Field(description="The monthly run that invoices the final month")


class CancellationOptionsView(BaseModel):
    options: list[CancellationOptionView]
    scheduled_ends_on: date | None = Field(description="The end date already chosen, if a cancellation is scheduled")


class EndingWorkspaceView(BaseModel):
    workspace_id: str
    name: str
    edition: str | None
    max_devices: int | None
    devices_this_month: int = Field(description="Devices seen this month: they lose protection at the end date")


class CancellationView(BaseModel):
    state: str
    ends_on: date
    licences_end_at: datetime = Field(description="When every licence on the plan ends (UTC)")
    final_invoice_on: date | None = Field(description="The monthly run that invoices the final month, if any is due")
    workspaces_losing_protection: list[EndingWorkspaceView]
    confirmation_email_sent: bool
