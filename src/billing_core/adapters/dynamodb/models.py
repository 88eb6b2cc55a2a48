"""PynamoDB models of the single ``billing`` table.

Item layout (pk / sk):
  PARTNER#<partner_id>   / PLAN                         the partner's plan (VersionAttribute)
  PARTNER#<partner_id>   / PAYMENT#<purpose>#<attempt>  one item per successful payment, written once
  PARTNER#<partner_id>   / AUDIT#<occurred_at>#<uuid>   append-only audit trail
  WORKSPACE#<ws_id>      / WORKSPACE                    a workspace (VersionAttribute); gsi1 lists by partner

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
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
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
    updated_at = UTCDateTimeAttribute()
    version = VersionAttribute()


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
    gsi1pk = UnicodeAttribute()
    gsi1sk = UnicodeAttribute()
    version = VersionAttribute()
    partner_items = PartnerItemsIndex()


BILLING_MODELS: tuple[type[Model], ...] = (PlanItem, PaymentItem, AuditItem, WorkspaceItem)


def bind_billing_table(table_name: str, region: str) -> None:
    """Point every model of the billing table at its real table (set once at cold start)."""
    for model in BILLING_MODELS:
        meta: Any = model.Meta
        meta.table_name = table_name
        meta.region = region
