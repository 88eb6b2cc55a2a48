"""InvoiceStore on the billing table: PARTNER#<partner> / INVOICE#<YYYY-MM>, and for a big invoice its lines in
PARTNER#<partner> / INVLINES#<YYYY-MM>#<nnn>.

Storage rule (DynamoDB items are at most 400 KB, a transaction at most 4 MB): an invoice whose encoded lines
fit in ``INLINE_LINES_MAX_BYTES`` keeps them in its own item, as always (one item, one read). A bigger one is
created as its header item plus line chunks of at most ``LINE_CHUNK_MAX_BYTES`` each, all in one
``TransactWriteItems`` whose header put is the same conditional creation (so no chunk ever exists without its
invoice, and a creator that lost the race wrote nothing). Lines never change after the creation: every later
write is an ``UpdateItem`` of the header's state (status, payment, events) that cannot touch them, so a
status change of a 5,000-line invoice writes about 1 KB instead of the whole invoice.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import date
from typing import Any

from pynamodb.connection import Connection
from pynamodb.exceptions import PutError, TransactWriteError, UpdateError
from pynamodb.expressions.update import Action
from pynamodb.transactions import TransactWrite

from billing_core.adapters.dynamodb.models import InvoiceItem, InvoiceLinesItem, partner_pk
from billing_core.domain.audit import AuditEvent
from billing_core.domain.calendar import BillingMonth, parse_iso, to_iso
from billing_core.domain.errors import BadRequest, ConcurrentModification, TransientFailure
from billing_core.domain.invoicing import (
    CreditedCharge,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    InvoiceSummary,
    LineKind,
    SubscriptionLineDetail,
)
from billing_core.domain.money import Money

INVOICE_PREFIX = "INVOICE#"
LINES_PREFIX = "INVLINES#"
# Lines stay inline up to this size (about 500 seat lines): every state write of an invoice rewrites its whole
# item (an UpdateItem costs the item's full size in WCU), so an inline invoice costs at most 64 WCU a write.
INLINE_LINES_MAX_BYTES = 64 * 1024
# Chunks stay well under the 400 KB item limit (keys and attribute names count too).
LINE_CHUNK_MAX_BYTES = 300 * 1024
# A TransactWriteItems carries at most 4 MB (4,194,304 bytes) in all; the header and each chunk's key
# and attribute names are kept out of that budget.
TRANSACTION_MAX_BYTES = 4 * 1024 * 1024
LINES_BUDGET_BYTES = TRANSACTION_MAX_BYTES - 64 * 1024


class InvoiceTooLarge(Exception):
    """An invoice whose lines exceed what one transaction can create (about 34,000 seat lines with typical
    names): refused before anything is written, so the charge of that partner fails loudly (DLQ and alarm)
    instead of storing half an invoice."""


# Lines and events are stored as compact JSON arrays (no repeated keys): an invoice of 20 workspaces
# with its whole audit trail stays within 2-3 KB, so each of its few writes costs 2-3 WCU; a seat line is
# about 120 bytes.
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


def _stored_line_count(item: InvoiceItem) -> int:
    return int(item.line_count) if item.line_count is not None else len(item.lines or [])


def _invoice_from_item(item: InvoiceItem, lines: tuple[InvoiceLine, ...]) -> Invoice:
    month = BillingMonth.parse(item.month)
    return Invoice(
        partner_id=item.partner_id,
        month=month,
        currency=item.currency,
        price_list_version=item.price_list_version,
        lines=lines,
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


def _inline_lines(item: InvoiceItem) -> tuple[InvoiceLine, ...]:
    return tuple(_line_from_json(line, item.currency) for line in item.lines or [])


def _summary_from_item(item: InvoiceItem) -> InvoiceSummary:
    chunked = int(item.line_chunks or 0) > 0
    return InvoiceSummary(
        partner_id=item.partner_id,
        month=BillingMonth.parse(item.month),
        status=InvoiceStatus(item.status),
        total=Money(int(item.total_minor), item.currency),
        line_count=_stored_line_count(item),
        lines=None if chunked else _inline_lines(item),
        price_list_version=item.price_list_version,
        created_at=item.created_at,
        payment_attempts=int(item.payment_attempts),
        next_retry_on=date.fromisoformat(item.next_retry_on) if item.next_retry_on else None,
        failure_code=item.failure_code,
        payment_id=item.payment_id,
        paid_at=item.paid_at,
    )


def inline_lines_bytes(lines: Sequence[InvoiceLine]) -> int:
    """The size of the lines as the invoice's own item holds them (JSONAttribute's encoding): what the inline
    rule measures."""
    return len(json.dumps([_line_to_json(line) for line in lines]).encode("utf-8"))


def _compact_json(value: Any) -> str:
    # UTF-8 without escapes or spaces: the chunks' size is what they hold, and a non-Latin name costs its UTF-8
    # bytes (2-3 a character) instead of a 6-byte escape.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def chunk_encoded_lines(encoded_lines: list[str], max_bytes: int) -> list[str]:
    """The lines (each a compact JSON array) packed in order into as few JSON arrays of at most ``max_bytes``
    UTF-8 bytes as the order allows."""
    chunks: list[str] = []
    current: list[str] = []
    size = 2  # the brackets
    for encoded in encoded_lines:
        line_bytes = len(encoded.encode("utf-8"))
        if 2 + line_bytes > max_bytes:
            raise InvoiceTooLarge(f"an invoice line of {line_bytes} bytes exceeds a chunk of {max_bytes}")
        added = line_bytes + (1 if current else 0)  # and its comma
        if size + added > max_bytes:
            chunks.append("[" + ",".join(current) + "]")
            current, size = [], 2
            added = line_bytes
        current.append(encoded)
        size += added
    if current:
        chunks.append("[" + ",".join(current) + "]")
    return chunks


def lines_sk(month: BillingMonth, chunk: int) -> str:
    return f"{LINES_PREFIX}{month}#{chunk:03d}"


def _state_actions(invoice: Invoice) -> list[Action]:
    """What a later write of an invoice sets: its state and audit trail; never its lines, total or identity."""
    values: list[tuple[Any, Any]] = [
        (InvoiceItem.status, invoice.status.value),
        (InvoiceItem.payment_attempts, invoice.payment_attempts),
        (InvoiceItem.payment_attempt_started_at, invoice.payment_attempt_started_at),
        (InvoiceItem.payment_lease_until, invoice.payment_lease_until),
        (InvoiceItem.next_retry_on, invoice.next_retry_on.isoformat() if invoice.next_retry_on else None),
        (InvoiceItem.failure_code, invoice.failure_code),
        (InvoiceItem.payment_id, invoice.payment_id),
        (InvoiceItem.paid_at, invoice.paid_at),
        (InvoiceItem.reported_at, invoice.reported_at),
        (InvoiceItem.failures_notified, invoice.failures_notified),
        (InvoiceItem.events, [_event_to_json(event) for event in invoice.events]),
    ]
    return [attribute.remove() if value is None else attribute.set(value) for attribute, value in values]


class DynamoInvoiceStore:
    def __init__(self, region: str | None = None) -> None:
        # One low-level connection for the creation transactions; endpoint resolution is botocore's (env vars).
        self._connection = Connection(region=region)

    def load_invoice(self, partner_id: str, month: BillingMonth) -> Invoice | None:
        try:
            item = InvoiceItem.get(partner_pk(partner_id), f"{INVOICE_PREFIX}{month}", consistent_read=True)
        except InvoiceItem.DoesNotExist:
            return None
        return _invoice_from_item(item, self._lines_of(item))

    def save_invoice(self, invoice: Invoice) -> Invoice:
        if invoice.version is None:
            return self._create(invoice)
        item = InvoiceItem(pk=partner_pk(invoice.partner_id), sk=f"{INVOICE_PREFIX}{invoice.month}")
        item.version = invoice.version
        try:
            item.update(actions=_state_actions(invoice))  # VersionAttribute makes this conditional
        except UpdateError as error:
            if error.cause_response_code == "ConditionalCheckFailedException":
                raise _changed_concurrently(invoice) from error
            raise
        # The lines as they were stored (inline: read back with the update's answer; in chunks: this invoice's own).
        return _invoice_from_item(item, invoice.lines if int(item.line_chunks or 0) else _inline_lines(item))

    def _create(self, invoice: Invoice) -> Invoice:
        stored_lines = [_line_to_json(line) for line in invoice.lines]
        item = InvoiceItem(
            pk=partner_pk(invoice.partner_id),
            sk=f"{INVOICE_PREFIX}{invoice.month}",
            partner_id=invoice.partner_id,
            month=str(invoice.month),
            status=invoice.status.value,
            currency=invoice.currency,
            price_list_version=invoice.price_list_version,
            total_minor=invoice.total.amount_minor,
            lines=stored_lines,
            line_count=len(stored_lines),
            line_chunks=0,
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
        if inline_lines_bytes(invoice.lines) <= INLINE_LINES_MAX_BYTES:
            try:
                item.save()  # VersionAttribute (unset) makes this conditional: no invoice exists yet
            except PutError as error:
                if error.cause_response_code == "ConditionalCheckFailedException":
                    raise _changed_concurrently(invoice) from error
                raise
            return _invoice_from_item(item, _inline_lines(item))
        chunks = chunk_encoded_lines([_compact_json(line) for line in stored_lines], LINE_CHUNK_MAX_BYTES)
        lines_bytes = sum(len(chunk.encode("utf-8")) for chunk in chunks)
        if lines_bytes > LINES_BUDGET_BYTES:
            raise InvoiceTooLarge(
                f"invoice {invoice.partner_id}/{invoice.month}: {len(stored_lines)} lines of {lines_bytes} bytes "
                f"exceed the {LINES_BUDGET_BYTES} bytes one transaction can create"
            )
        item.lines, item.line_chunks = [], len(chunks)
        try:
            with TransactWrite(connection=self._connection) as transaction:
                transaction.save(item)  # the header: its unset VersionAttribute makes it a conditional creation
                for number, chunk in enumerate(chunks):
                    part = InvoiceLinesItem(pk=item.pk, sk=lines_sk(invoice.month, number), lines_json=chunk)
                    transaction.save(part)  # no condition needed: it is written only if the header is
        except TransactWriteError as error:
            reasons = [reason.code for reason in error.cancellation_reasons if reason is not None]
            if "ConditionalCheckFailed" in reasons:
                raise _changed_concurrently(invoice) from error
            if "TransactionConflict" in reasons:
                # Another creator's transaction was in flight: its outcome is not known yet, so the caller must
                # not read the invoice as created by it (the charge queue redelivers the message).
                raise TransientFailure(f"invoice {invoice.partner_id}/{invoice.month} is being created") from error
            raise
        return _invoice_from_item(item, invoice.lines)

    def _lines_of(self, item: InvoiceItem) -> tuple[InvoiceLine, ...]:
        chunk_count = int(item.line_chunks or 0)
        if not chunk_count:
            return _inline_lines(item)
        chunks = InvoiceLinesItem.query(
            item.pk, InvoiceLinesItem.sk.startswith(f"{LINES_PREFIX}{item.month}#"), consistent_read=True
        )
        stored = [line for chunk in chunks for line in json.loads(chunk.lines_json)]
        if len(stored) != _stored_line_count(item):  # written in one transaction: only a bug or a hand edit
            raise RuntimeError(
                f"invoice {item.partner_id}/{item.month}: {len(stored)} stored lines, its header says "
                f"{_stored_line_count(item)} in {chunk_count} chunks"
            )
        return tuple(_line_from_json(line, item.currency) for line in stored)

    def list_invoices(self, partner_id: str, *, limit: int, after: str | None) -> tuple[list[Invoice], str | None]:
        items, cursor = self._list_headers(partner_id, limit=limit, after=after)
        return [_invoice_from_item(item, self._lines_of(item)) for item in items], cursor

    def list_invoice_summaries(
        self, partner_id: str, *, limit: int, after: str | None
    ) -> tuple[list[InvoiceSummary], str | None]:
        items, cursor = self._list_headers(partner_id, limit=limit, after=after)
        return [_summary_from_item(item) for item in items], cursor

    def _list_headers(self, partner_id: str, *, limit: int, after: str | None) -> tuple[list[InvoiceItem], str | None]:
        start_key = _decode_cursor(after, partner_id) if after else None
        query = InvoiceItem.query(
            partner_pk(partner_id),
            InvoiceItem.sk.startswith(INVOICE_PREFIX),
            scan_index_forward=False,
            limit=limit,
            last_evaluated_key=start_key,
        )
        items = list(query)
        next_key = query.last_evaluated_key
        return items, _encode_cursor(next_key) if next_key else None


def _changed_concurrently(invoice: Invoice) -> ConcurrentModification:
    return ConcurrentModification(f"invoice {invoice.partner_id}/{invoice.month} was changed concurrently")


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
