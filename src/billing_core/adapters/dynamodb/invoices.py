"""InvoiceStore on the billing table: PARTNER#<partner> / INVOICE#<YYYY-MM>."""

from __future__ import annotations

import base64
import json
from datetime import date
from typing import Any

from billing_core.adapters.dynamodb.models import AuditItem, InvoiceItem, PaymentItem, partner_pk
from billing_core.adapters.dynamodb.repositories import DynamoBillingStore, audit_item, payment_item
from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import BadRequest
from billing_core.domain.invoicing import Invoice, InvoiceLine, InvoiceStatus
from billing_core.domain.money import Money
from billing_core.domain.payments import PaymentRecord

INVOICE_PREFIX = "INVOICE#"


def _line_to_json(line: InvoiceLine) -> dict[str, Any]:
    return {
        "workspace_id": line.workspace_id,
        "description": line.description,
        "edition": line.edition,
        "seats": line.seats,
        "devices": line.devices,
        "unit_price_minor": line.unit_price.amount_minor,
        "amount_minor": line.amount.amount_minor,
        "month": str(line.month),
        "adjustment": line.adjustment,
    }


def _line_from_json(data: dict[str, Any], currency: str) -> InvoiceLine:
    return InvoiceLine(
        workspace_id=data["workspace_id"],
        description=data["description"],
        edition=data["edition"],
        seats=int(data["seats"]),
        devices=int(data["devices"]),
        unit_price=Money(int(data["unit_price_minor"]), currency),
        amount=Money(int(data["amount_minor"]), currency),
        month=BillingMonth.parse(data["month"]),
        adjustment=bool(data["adjustment"]),
    )


def _invoice_from_item(item: InvoiceItem) -> Invoice:
    return Invoice(
        partner_id=item.partner_id,
        month=BillingMonth.parse(item.month),
        currency=item.currency,
        price_list_version=item.price_list_version,
        lines=tuple(_line_from_json(line, item.currency) for line in item.lines),
        created_at=item.created_at,
        status=InvoiceStatus(item.status),
        payment_attempts=int(item.payment_attempts),
        payment_attempt_started_at=item.payment_attempt_started_at,
        next_retry_on=date.fromisoformat(item.next_retry_on) if item.next_retry_on else None,
        failure_code=item.failure_code,
        payment_id=item.payment_id,
        paid_at=item.paid_at,
        reported_at=item.reported_at,
        failures_notified=int(item.failures_notified),
        version=item.version,
    )


class DynamoInvoiceStore:
    def __init__(self, billing: DynamoBillingStore) -> None:
        self._billing = billing  # shares its transaction connection and error mapping

    def load_invoice(self, partner_id: str, month: BillingMonth) -> Invoice | None:
        try:
            item = InvoiceItem.get(partner_pk(partner_id), f"{INVOICE_PREFIX}{month}", consistent_read=True)
        except InvoiceItem.DoesNotExist:
            return None
        return _invoice_from_item(item)

    def save_invoice(self, invoice: Invoice, *, audit: AuditEvent, payment: PaymentRecord | None = None) -> Invoice:
        item = InvoiceItem(
            pk=partner_pk(invoice.partner_id),
            sk=f"{INVOICE_PREFIX}{invoice.month}",
            partner_id=invoice.partner_id,
            month=str(invoice.month),
            status=invoice.status.value,
            currency=invoice.currency,
            price_list_version=invoice.price_list_version,
            total_minor=invoice.total.amount_minor,
            lines=[_line_to_json(line) for line in invoice.lines],
            created_at=invoice.created_at,
            payment_attempts=invoice.payment_attempts,
            payment_attempt_started_at=invoice.payment_attempt_started_at,
            next_retry_on=invoice.next_retry_on.isoformat() if invoice.next_retry_on else None,
            failure_code=invoice.failure_code,
            payment_id=invoice.payment_id,
            paid_at=invoice.paid_at,
            reported_at=invoice.reported_at,
            failures_notified=invoice.failures_notified,
        )
        if invoice.version is not None:  # unset: the write requires that no invoice exists yet
            item.version = invoice.version
        with self._billing.transaction(f"invoice {invoice.partner_id}/{invoice.month}") as transaction:
            transaction.save(item)
            transaction.save(audit_item(audit), condition=AuditItem.pk.does_not_exist())
            if payment is not None:
                transaction.save(payment_item(payment), condition=PaymentItem.pk.does_not_exist())
        return _invoice_from_item(item)

    def list_invoices(self, partner_id: str, *, limit: int, after: str | None) -> tuple[list[Invoice], str | None]:
        start_key = _decode_cursor(after, partner_id) if after else None
        query = InvoiceItem.query(
            partner_pk(partner_id),
            InvoiceItem.sk.startswith(INVOICE_PREFIX),
            scan_index_forward=False,
            limit=limit,
            last_evaluated_key=start_key,
        )
        invoices = [_invoice_from_item(item) for item in query]
        next_key = query.last_evaluated_key
        return invoices, _encode_cursor(next_key) if next_key else None


def _encode_cursor(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode()


def _decode_cursor(cursor: str, partner_id: str) -> dict[str, Any]:
    try:
        key: dict[str, Any] = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        if key["pk"]["S"] != partner_pk(partner_id) or not key["sk"]["S"].startswith(INVOICE_PREFIX):
            raise ValueError("cursor of another listing")
    except (ValueError, KeyError, TypeError) as error:
        raise BadRequest("invalid pagination cursor") from error
    return key
