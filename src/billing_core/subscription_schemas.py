"""Pydantic models of the subscriptions part of the partner API: orders, subscriptions, change options,
change previews and changes (seed 002). Request models forbid unknown fields (a typo is a 422)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# From where they are defined, not the subscriptions facade: the schemas need two limits, not the whole
# subscription domain (change rules, invoice lines, proration) at the import of the function.
from billing_core.domain.ordering import MAX_QUANTITY, MAX_SUBSCRIPTIONS_PER_ORDER
from billing_core.schemas import MoneyView, examples

TermCode = Literal["P1M", "P1Y", "P3Y"]
FrequencyCode = Literal["monthly", "annual", "triennial"]
SkuCode = str


class RequestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AddOnLine(RequestModel):
    sku: SkuCode = Field(min_length=1, max_length=64, description="An add-on SKU of the base subscription's SKU")
    quantity: int = Field(ge=1, le=MAX_QUANTITY, strict=True)
    # Add-ons are billed on their base's cycle; given here, they must equal it (else 422).
    term: TermCode | None = None
    billing_frequency: FrequencyCode | None = None


class OrderLineRequest(RequestModel):
    sku: SkuCode = Field(min_length=1, max_length=64, description="A licence SKU of the price list")
    quantity: int = Field(ge=1, le=MAX_QUANTITY, strict=True)
    term: TermCode
    billing_frequency: FrequencyCode
    add_ons: list[AddOnLine] = Field(default_factory=list, max_length=MAX_SUBSCRIPTIONS_PER_ORDER - 1)


def _money(minor: int) -> dict[str, Any]:
    return {"amount_minor": minor, "currency": "USD", "display": f"USD {minor // 100}.{minor % 100:02d}"}


# Shared by the examples below: 10 seats of EDR Business for three years, billed monthly, bought 23 June 2026.
SUBSCRIPTION_EXAMPLE: dict[str, Any] = {
    "subscription_id": "sub_7c1e2a9d",
    "order_id": "ord_5b8f0e3a",
    "customer_id": "dental-meyer",
    "sku": "edr-business",
    "name": "EDR Business",
    "quantity": 10,
    "term": "P3Y",
    "billing_frequency": "monthly",
    "add_on_of": None,
    "state": "active",
    "term_started_on": "2026-06-23",
    "term_ends_on": "2029-06-23",
    "next_period_starts_on": "2026-07-23",
    "auto_renew": True,
    "price": {
        "unit_price": _money(405),
        "list_price": _money(450),
        "promotion": "EDR-3Y-LOYALTY",
        "price_list_version": "2026-01",
    },
    "pending_change": None,
}
ORDER_EXAMPLE: dict[str, Any] = {
    "order_id": "ord_5b8f0e3a",
    "customer_id": "dental-meyer",
    "experience": "new",
    "created_at": "2026-06-23T10:02:00Z",
    "subscriptions": [SUBSCRIPTION_EXAMPLE],
}
PREVIEW_EXAMPLE: dict[str, Any] = {
    "order_id": "ord_5b8f0e3a",
    "lines": [
        {
            "kind": "change_credit",
            "subscription_id": "sub_7c1e2a9d",
            "description": "EDR Business x 10: credit for 2026-07-23 to 2026-08-22 (change to P3Y/annual)",
            "period_start": "2026-08-01",
            "period_end": "2026-08-22",
            "quantity": 10,
            "amount": _money(-2940),
            "invoice_month": "2026-08",
            "credit_for_period_start": "2026-07-23",
        },
        {
            "kind": "licence_period",
            "subscription_id": "sub_7c1e2a9d",
            "description": "EDR Business x 10, P3Y/annual, 2026-08-01 to 2027-07-31",
            "period_start": "2026-08-01",
            "period_end": "2027-07-31",
            "quantity": 10,
            "amount": _money(48600),
            "invoice_month": "2026-08",
            "credit_for_period_start": None,
        },
    ],
    "total": _money(45660),
    "effective_on": "2026-08-01",
}


class CreateOrderRequest(RequestModel):
    model_config = examples(
        {
            "items": [
                {"sku": "edr-business", "quantity": 10, "term": "P3Y", "billing_frequency": "monthly"},
                {
                    "sku": "backup-standard",
                    "quantity": 2,
                    "term": "P1Y",
                    "billing_frequency": "annual",
                    "add_ons": [{"sku": "backup-extra-storage", "quantity": 4}],
                },
            ],
            "experience": "new",
            "customer_id": "dental-meyer",
        }
    )

    items: list[OrderLineRequest] = Field(min_length=1, max_length=MAX_SUBSCRIPTIONS_PER_ORDER)
    experience: Literal["new", "legacy"] = Field(
        default="new",
        description="The commerce experience the order is bought under: it decides the changes it may make",
    )
    customer_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="The partner's customer it is for (billed to the partner)",
    )


class ChangeOrderRequest(RequestModel):
    model_config = examples(
        {"mode": "immediate", "term": "P3Y", "billing_frequency": "annual"},
        {"mode": "scheduled", "billing_frequency": "annual"},
    )

    mode: Literal["scheduled", "immediate", "legacy_frequency"] = Field(
        description="scheduled: the billing frequency from the next period; immediate: a longer term (with a "
        "billing frequency) from today; legacy_frequency: the legacy experience's immediate frequency change"
    )
    term: TermCode | None = Field(default=None, description="The new term (immediate changes only)")
    billing_frequency: FrequencyCode


class PriceView(BaseModel):
    unit_price: MoneyView = Field(description="Of one unit for one billing period, after the promotion")
    list_price: MoneyView
    promotion: str | None
    price_list_version: str


class PendingChangeView(BaseModel):
    billing_frequency: FrequencyCode
    effective_on: date
    price: PriceView


class SubscriptionView(BaseModel):
    model_config = examples(SUBSCRIPTION_EXAMPLE)

    subscription_id: str
    order_id: str
    customer_id: str | None
    sku: str
    name: str
    quantity: int
    term: TermCode
    billing_frequency: FrequencyCode
    add_on_of: str | None
    state: Literal["active", "expired"]
    term_started_on: date
    term_ends_on: date = Field(description="The first day after the current term")
    next_period_starts_on: date | None
    auto_renew: bool
    price: PriceView
    pending_change: PendingChangeView | None


class OrderView(BaseModel):
    model_config = examples(ORDER_EXAMPLE)

    order_id: str
    customer_id: str | None
    experience: Literal["new", "legacy"]
    created_at: datetime
    subscriptions: list[SubscriptionView]


class RefusalView(BaseModel):
    code: str
    message: str


class ChangeOptionView(BaseModel):
    mode: Literal["scheduled", "immediate", "legacy_frequency"]
    term: TermCode
    billing_frequency: FrequencyCode
    effective_on: date | None
    allowed: bool
    refusals: list[RefusalView]


class ChangeOptionsView(BaseModel):
    model_config = examples(
        {
            "order_id": "ord_5b8f0e3a",
            "experience": "new",
            "pending_change": None,
            "options": [
                {
                    "mode": "scheduled",
                    "term": "P3Y",
                    "billing_frequency": "annual",
                    "effective_on": "2026-07-23",
                    "allowed": True,
                    "refusals": [],
                },
                {
                    "mode": "immediate",
                    "term": "P1Y",
                    "billing_frequency": "monthly",
                    "effective_on": None,
                    "allowed": False,
                    "refusals": [
                        {"code": "not_in_matrix", "message": "P3Y/monthly accepts no immediate change to P1Y/monthly"}
                    ],
                },
            ],
        }
    )

    order_id: str
    experience: Literal["new", "legacy"]
    pending_change: PendingChangeView | None
    options: list[ChangeOptionView]


class ChangeLineView(BaseModel):
    kind: Literal["licence_period", "change_credit"]
    subscription_id: str
    description: str
    period_start: date
    period_end: date = Field(description="The last day of the period")
    quantity: int
    amount: MoneyView
    invoice_month: str = Field(description="YYYY-MM: the invoice the line goes on")
    credit_for_period_start: date | None = None


class ChangePreviewView(BaseModel):
    model_config = examples(PREVIEW_EXAMPLE)

    order_id: str
    lines: list[ChangeLineView] = Field(description="What the change adds to invoices (credits negative)")
    total: MoneyView
    effective_on: date


class ChangeResultView(ChangePreviewView):
    model_config = examples(PREVIEW_EXAMPLE | {"order": ORDER_EXAMPLE})

    order: OrderView
