"""PynamoDB models of the single ``billing`` table.

Item layout (pk / sk):
  PARTNER#<partner_id>   / PLAN                         the partner's plan (VersionAttribute)
  PARTNER#<partner_id>   / PAYMENT#<purpose>#<attempt>  one item per successful payment, written once
  PARTNER#<partner_id>   / AUDIT#<occurred_at>#<uuid>   append-only audit trail
  PARTNER#<partner_id>   / WORKSPACE#<created>#<ws_id>  the partner's workspace, written with it once: the
                                                         strongly consistent listing (a GSI cannot be)
  WORKSPACE#<ws_id>      / WORKSPACE                    a workspace (VersionAttribute); gsi1 lists by partner
  PARTNER#<partner_id>   / ORDER#<order_id>             an order of licence subscriptions (VersionAttribute)
  PARTNER#<partner_id>   / SUBSCRIPTION#<sub_id>        a subscription with its open charges (VersionAttribute)
  PARTNER#<partner_id>   / SUBCHARGES#<sub_id>#<seq>    settled charges of a subscription, written once
  PARTNER#<partner_id>   / INVOICE#<YYYY-MM>            an invoice: created once, then its state (VersionAttribute)
  PARTNER#<partner_id>   / INVLINES#<YYYY-MM>#<nnn>     a big invoice's lines, in chunks written with it once
  CATALOG                / PRICELIST#<version>          a published price-list document, written once
  CATALOG                / EFFECTIVE#<YYYY-MM-DD>       guard: one price list per effective day

Table names come from settings at run time (``bind_billing_table``), not from import-time constants.
"""

from __future__ import annotations

from typing import Any

from pynamodb.attributes import (
    BooleanAttribute,
    JSONAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
    VersionAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

UNBOUND = "unbound-billing-table"


def partner_pk(partner_id: str) -> str:
    return f"PARTNER#{partner_id}"


def workspace_pk(workspace_id: str) -> str:
    return f"WORKSPACE#{workspace_id}"


class PartnerItemsIndex(GlobalSecondaryIndex["WorkspaceItem"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "PartnerItems"
        projection = AllProjection()

    gsi1pk = UnicodeAttribute(hash_key=True)
    gsi1sk = UnicodeAttribute(range_key=True)


class ChargeablePlansIndex(GlobalSecondaryIndex["PlanItem"]):  # type: ignore[no-untyped-call]
    """Sparse index of the plans a monthly run must visit: live plans, and cancelled ones until their final
    month is behind the runs, carry ``charge_index``."""

    class Meta:
        index_name = "ChargeablePlans"
        projection = KeysOnlyProjection()

    charge_index = UnicodeAttribute(hash_key=True)
    partner_id = UnicodeAttribute(range_key=True)


class PlanItem(Model):
    class Meta:
        table_name = UNBOUND

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    partner_id = UnicodeAttribute()
    state = UnicodeAttribute()
    currency = UnicodeAttribute(null=True)
    price_list_version = UnicodeAttribute(null=True)
    activated_at = UTCDateTimeAttribute(null=True)
    activation_attempt = NumberAttribute(default=0)
    activation_started_at = UTCDateTimeAttribute(null=True)
    payment_customer_ref = UnicodeAttribute(null=True)
    payment_method_ref = UnicodeAttribute(null=True)
    last_charged_month = UnicodeAttribute(null=True)  # YYYY-MM
    billing_email = UnicodeAttribute(null=True)
    cancellation_ends_on = UnicodeAttribute(null=True)  # YYYY-MM-DD
    ended_on = UnicodeAttribute(null=True)  # YYYY-MM-DD
    left_monthly_runs = BooleanAttribute(default=False)
    past_due_month = UnicodeAttribute(null=True)  # YYYY-MM
    # An activation payment awaiting the customer's authentication (PendingAuthentication.to_dict()).
    pending_authentication: JSONAttribute = JSONAttribute(null=True)
    charge_index = UnicodeAttribute(null=True)
    updated_at = UTCDateTimeAttribute()
    version = VersionAttribute()
    chargeable_plans = ChargeablePlansIndex()


class PlanRunsItem(Model):
    """The plan item as a late sighting of an ended plan updates it: only the attributes that bring the plan
    back into the monthly runs (for its closing invoice). No version attribute, so the update can bump the
    version without reading it: every concurrent plan write (a run retiring the plan) then fails and decides
    again, and concurrent sightings never conflict with each other."""

    class Meta:
        table_name = UNBOUND

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    last_charged_month = UnicodeAttribute(null=True)
    left_monthly_runs = BooleanAttribute(default=False)
    charge_index = UnicodeAttribute(null=True)
    updated_at = UTCDateTimeAttribute()
    version = NumberAttribute(null=True)


class PaymentItem(Model):
    class Meta:
        table_name = UNBOUND

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    partner_id = UnicodeAttribute()
    purpose = UnicodeAttribute()
    attempt = NumberAttribute()
    amount_minor = NumberAttribute()
    currency = UnicodeAttribute()
    provider = UnicodeAttribute()
    provider_payment_id = UnicodeAttribute()
    idempotency_key = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()


class AuditItem(Model):
    class Meta:
        table_name = UNBOUND

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    partner_id = UnicodeAttribute()
    event_type = UnicodeAttribute()
    actor = UnicodeAttribute()
    occurred_at = UTCDateTimeAttribute()
    details: JSONAttribute = JSONAttribute(default=dict)


class WorkspaceItem(Model):
    class Meta:
        table_name = UNBOUND

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    workspace_id = UnicodeAttribute()
    partner_id = UnicodeAttribute()
    name = UnicodeAttribute()
    on_plan = BooleanAttribute(default=False)
    edition = UnicodeAttribute(null=True)
    max_devices = NumberAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    joined_plan_at = UTCDateTimeAttribute(null=True)
    licence_ended_on = UnicodeAttribute(null=True)  # YYYY-MM-DD
    # [{"from": ISO instant, "edition": ..., "max_devices": n}, ...], oldest first (bounded, see the domain).
    licence_history: JSONAttribute = JSONAttribute(default=list)
    gsi1pk = UnicodeAttribute()
    gsi1sk = UnicodeAttribute()
    version = VersionAttribute()
    partner_items = PartnerItemsIndex()


class PartnerWorkspaceItem(Model):
    """PARTNER#<partner_id> / WORKSPACE#<created_at>#<ws_id>: which workspaces a partner has, in creation order."""

    class Meta:
        table_name = UNBOUND

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    workspace_id = UnicodeAttribute()


def partner_workspace_sk(created_at_iso: str, workspace_id: str) -> str:
    return f"WORKSPACE#{created_at_iso}#{workspace_id}"


class InvoiceItem(Model):
    """PARTNER#<partner_id> / INVOICE#<YYYY-MM>: one per partner and month (created conditionally). Its lines
    are inline (``lines``) or, for a big invoice, in ``line_chunks`` InvoiceLinesItem items (``lines`` empty)."""

    class Meta:
        table_name = UNBOUND

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    partner_id = UnicodeAttribute()
    month = UnicodeAttribute()
    status = UnicodeAttribute()
    currency = UnicodeAttribute()
    price_list_version = UnicodeAttribute()
    total_minor = NumberAttribute()
    lines: JSONAttribute = JSONAttribute(default=list)
    line_count = NumberAttribute(null=True)  # unset on invoices stored before big invoices: len(lines)
    line_chunks = NumberAttribute(default=0)  # 0: the lines are inline
    created_at = UTCDateTimeAttribute()
    payment_attempts = NumberAttribute(default=0)
    payment_attempt_started_at = UTCDateTimeAttribute(null=True)
    payment_lease_until = UTCDateTimeAttribute(null=True)
    next_retry_on = UnicodeAttribute(null=True)
    failure_code = UnicodeAttribute(null=True)
    payment_id = UnicodeAttribute(null=True)
    paid_at = UTCDateTimeAttribute(null=True)
    reported_at = UTCDateTimeAttribute(null=True)
    failures_notified = NumberAttribute(default=0)
    events: JSONAttribute = JSONAttribute(default=list)  # the invoice's audit trail
    version = VersionAttribute()


class InvoiceLinesItem(Model):
    """PARTNER#<partner_id> / INVLINES#<YYYY-MM>#<nnn>: one chunk of a big invoice's lines (compact JSON text of
    a list of stored lines), written once in the transaction that creates the invoice, never rewritten. The
    sort key does not start with ``INVOICE#``, so listings of invoices never meet it."""

    class Meta:
        table_name = UNBOUND

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    lines_json = UnicodeAttribute()


class OrderItem(Model):
    class Meta:
        table_name = UNBOUND

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    order_id = UnicodeAttribute()
    partner_id = UnicodeAttribute()
    customer_id = UnicodeAttribute(null=True)
    subscription_ids: JSONAttribute = JSONAttribute(default=list)
    experience = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()
    request_fingerprint = UnicodeAttribute(default="")
    change_keys: JSONAttribute = JSONAttribute(default=list)
    version = VersionAttribute()


class SubscriptionItem(Model):
    class Meta:
        table_name = UNBOUND

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    subscription_id = UnicodeAttribute()
    order_id = UnicodeAttribute()
    partner_id = UnicodeAttribute()
    customer_id = UnicodeAttribute(null=True)
    sku = UnicodeAttribute()
    quantity = NumberAttribute()
    term = UnicodeAttribute()
    frequency = UnicodeAttribute()
    anchor = UnicodeAttribute()  # YYYY-MM-DD
    price: JSONAttribute = JSONAttribute()
    created_at = UTCDateTimeAttribute()
    add_on_of = UnicodeAttribute(null=True)
    auto_renew = BooleanAttribute(default=True)
    ends_at_offset = NumberAttribute(null=True)
    next_offset = NumberAttribute(default=0)
    state = UnicodeAttribute()
    pending_change: JSONAttribute = JSONAttribute(null=True)
    charges: JSONAttribute = JSONAttribute(default=list)
    last_charge_seq = NumberAttribute(default=0)
    changes_made = NumberAttribute(default=0)
    version = VersionAttribute()


class SubscriptionChargesItem(Model):
    """Settled charges of one subscription (invoiced, no longer changeable), moved out of its item."""

    class Meta:
        table_name = UNBOUND

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    subscription_id = UnicodeAttribute()
    charges: JSONAttribute = JSONAttribute(default=list)


class PriceListItem(Model):
    """CATALOG / PRICELIST#<version> (the document) or EFFECTIVE#<day> (the guard that keeps effective days
    distinct); both written once, in one transaction."""

    class Meta:
        table_name = UNBOUND

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    version = UnicodeAttribute()
    effective_from = UnicodeAttribute()  # YYYY-MM-DD
    fingerprint = UnicodeAttribute()
    document: JSONAttribute = JSONAttribute(null=True)
    published_at = UTCDateTimeAttribute()


BILLING_MODELS: tuple[type[Model], ...] = (
    OrderItem,
    SubscriptionItem,
    SubscriptionChargesItem,
    PriceListItem,
    PlanItem,
    PlanRunsItem,
    PaymentItem,
    AuditItem,
    WorkspaceItem,
    PartnerWorkspaceItem,
    InvoiceItem,
    InvoiceLinesItem,
)


def bind_billing_table(table_name: str, region: str) -> None:
    """Point every model of the billing table at its real table (set once at cold start)."""
    for model in BILLING_MODELS:
        meta: Any = model.Meta
        meta.table_name = table_name
        meta.region = region
