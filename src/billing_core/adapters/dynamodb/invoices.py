"""InvoiceStore on the billing table: PARTNER#<partner> / INVOICE#<YYYY-MM>."""

from __future__ import annotations

import base64
import json
from datetime import date
from typing import Any

from pynamodb.exceptions import PutError

from billing_core.adapters.dynamodb.models import InvoiceItem, partner_pk
from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth, parse_iso, to_iso
from billing_core.domain.errors import BadRequest, ConcurrentModification
from billing_core.domain.invoicing import (
    CreditedCharge,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    LineKind,
    SubscriptionLineDetail,
)
from billing_core.domain.money import Money

INVOICE_PREFIX = "INVOICE#"


# Lines and events are stored as compact JSON arrays (no repeated keys): an invoice of 20 workspaces
# with its whole audit trail stays within 2-3 KB, so each of its few writes costs 2-3 WCU.
# A seat line is the 9 fields below (as stored before line kinds existed). A line with a kind or a
# subscription detail appends two more: the kind (or null) and the detail (a small object, or null);
# a stored line of 9 fields has no kind, which reads as seats / seat adjustment.
def _line_to_json(line: InvoiceLine) -> list[Any]:
    stored: list[Any] = [
        line.workspace_id,
        line.description,
        line.edition,
        line.seats,
        line.devices,
        line.unit_price.amount_minor,
        line.amount.amount_minor,
        str(line.month),
        int(line.adjustment),
    ]
    if line.line_kind is not None or line.subscription is not None:
        kind = line.line_kind.value if line.line_kind is not None else None
        detail = _detail_to_json(line.subscription) if line.subscription is not None else None
        stored += [kind, detail]
    return stored


def _line_from_json(data: list[Any], currency: str) -> InvoiceLine:
    workspace_id, description, edition, seats, devices, unit_minor, amount_minor, month, adjustment = data[:9]
    kind, detail = (data[9], data[10]) if len(data) > 9 else (None, None)
    return InvoiceLine(
        workspace_id=workspace_id,
        description=description,
        edition=edition,
        seats=int(seats),
        devices=int(devices),
        unit_price=Money(int(unit_minor), currency),
        amount=Money(int(amount_minor), currency),
        month=BillingMonth.parse(month),
        adjustment=bool(adjustment),
        line_kind=LineKind(kind) if kind is not None else None,
        subscription=_detail_from_json(detail, currency) if detail is not None else None,
    )


# Keys of a stored subscription detail; optional ones are left out when unset.
def _detail_to_json(detail: SubscriptionLineDetail) -> dict[str, Any]:
    stored: dict[str, Any] = {
        "sub": detail.subscription_id,
        "order": detail.order_id,
        "start": detail.period_start.isoformat(),
        "end": detail.period_end.isoformat(),
        "qty": detail.quantity,
        "cycle": detail.cycle,
    }
    optional: dict[str, Any] = {
        "customer": detail.customer_id,
        "seq": detail.charge_seq,
        "plv": detail.price_list_version,
        "promo": detail.promotion,
    }
    stored.update({key: value for key, value in optional.items() if value is not None})
    if detail.credit_for is not None:
        credited = detail.credit_for
        stored["credit_for"] = [
            credited.seq,
            credited.period_start.isoformat(),
            credited.period_end.isoformat(),
            credited.amount.amount_minor,
        ]
    return stored


def _detail_from_json(data: dict[str, Any], currency: str) -> SubscriptionLineDetail:
    credit_for = None
    if data.get("credit_for") is not None:
        seq, start, end, amount_minor = data["credit_for"]
        credit_for = CreditedCharge(
            seq=int(seq),
            period_start=date.fromisoformat(start),
            period_end=date.fromisoformat(end),
            amount=Money(int(amount_minor), currency),
        )
    return SubscriptionLineDetail(
        subscription_id=data["sub"],
        order_id=data["order"],
        period_start=date.fromisoformat(data["start"]),
        period_end=date.fromisoformat(data["end"]),
        quantity=int(data["qty"]),
        cycle=data["cycle"],
        customer_id=data.get("customer"),
        charge_seq=int(data["seq"]) if data.get("seq") is not None else None,
        price_list_version=data.get("plv"),
        promotion=data.get("promo"),
        credit_for=credit_for,
    )


def _event_to_json(event: AuditEvent) -> list[Any]:
    details = {key: value for key, value in event.details.items() if key != "month"}
    return [to_iso(event.occurred_at), event.event_type, event.actor, details]


def _event_from_json(data: list[Any], partner_id: str, month: BillingMonth) -> AuditEvent:
    occurred_at, event_type, actor, details = data
    return AuditEvent(partner_id, event_type, parse_iso(occurred_at), actor, {"month": str(month), **details})


def _invoice_from_item(item: InvoiceItem) -> Invoice:
    month = BillingMonth.parse(item.month)
    return Invoice(
        partner_id=item.partner_id,
        month=month,
        currency=item.currency,
        price_list_version=item.price_list_version,
        lines=tuple(_line_from_json(line, item.currency) for line in item.lines),
        created_at=item.created_at,
        status=InvoiceStatus(item.status),
        payment_attempts=int(item.payment_attempts),
        payment_attempt_started_at=item.payment_attempt_started_at,
        payment_lease_until=item.payment_lease_until,
        next_retry_on=date.fromisoformat(item.next_retry_on) if item.next_retry_on else None,
        failure_code=item.failure_code,
        payment_id=item.payment_id,
        paid_at=item.paid_at,
        reported_at=item.reported_at,
        failures_notified=int(item.failures_notified),
        events=tuple(_event_from_json(event, item.partner_id, month) for event in item.events),
        version=item.version,
    )


class DynamoInvoiceStore:
    def load_invoice(self, partner_id: str, month: BillingMonth) -> Invoice | None:
        try:
            item = InvoiceItem.get(partner_pk(partner_id), f"{INVOICE_PREFIX}{month}", consistent_read=True)
        except InvoiceItem.DoesNotExist:
            return None
        return _invoice_from_item(item)

    def save_invoice(self, invoice: Invoice) -> Invoice:
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
            payment_lease_until=invoice.payment_lease_until,
            next_retry_on=invoice.next_retry_on.isoformat() if invoice.next_retry_on else None,
            failure_code=invoice.failure_code,
            payment_id=invoice.payment_id,
            paid_at=invoice.paid_at,
            reported_at=invoice.reported_at,
            failures_notified=invoice.failures_notified,
            events=[_event_to_json(event) for event in invoice.events],
        )
        if invoice.version is not None:  # unset: the write requires that no invoice exists yet
            item.version = invoice.version
        try:
            item.save()  # VersionAttribute makes this conditional
        except PutError as error:
            if error.cause_response_code == "ConditionalCheckFailedException":
                raise ConcurrentModification(
                    f"invoice {invoice.partner_id}/{invoice.month} was changed concurrently"
                ) from error
            raise
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
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        pk, sk = key["pk"]["S"], key["sk"]["S"]
        well_formed = set(key) == {"pk", "sk"} and key["pk"] == {"S": pk} and key["sk"] == {"S": sk}
        if not (well_formed and isinstance(sk, str) and pk == partner_pk(partner_id) and sk.startswith(INVOICE_PREFIX)):
            raise ValueError("not a cursor of this listing")
    except Exception as error:  # any undecodable or foreign cursor is the client's mistake
        raise BadRequest("invalid pagination cursor") from error
    return {"pk": {"S": pk}, "sk": {"S": sk}}
