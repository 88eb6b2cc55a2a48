"""Invoices of big partners on DynamoDB Local (issue 27, item 6): an invoice of 5,000 workspaces is stored (lines
in chunk items beside the invoice's own item, DynamoDB items being at most 400 KB), charged once, e-mailed and
listed; the chunking boundary, a race of two creators, and small invoices kept in one item as before.

Sizes are measured on the stored items as DynamoDB counts them (attribute names and values, UTF-8), printed
with ``-s``.
"""

from __future__ import annotations

import csv
import io
import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import pytest
from chalice.test import Client
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from pynamodb.models import Model

from billing_core.adapters.dynamodb.invoices import (
    INLINE_LINES_MAX_BYTES,
    LINE_CHUNK_MAX_BYTES,
    DynamoInvoiceStore,
    inline_lines_bytes,
)
from billing_core.adapters.dynamodb.models import PartnerWorkspaceItem, WorkspaceItem, partner_pk, workspace_pk
from billing_core.adapters.dynamodb.repositories import WORKSPACE_SK
from billing_core.adapters.dynamodb.usage import DeviceMonthItem, device_month_pk, device_sk
from billing_core.domain.calendar import BillingMonth
from billing_core.domain.errors import ConcurrentModification, TransientFailure
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.invoicing import Invoice, InvoiceLine, InvoiceStatus
from billing_core.domain.metering import Billability
from billing_core.domain.money import Money
from billing_core.domain.payments import ChargeOutcome, ChargeRequest
from billing_core.domain.reporting import reconciliation_key, usage_report_key
from billing_core.schemas import ActivatePlanRequest, CreateWorkspaceRequest
from billing_core.settings import BillingSettings
from billing_core.wiring import Services
from infra.stack import LocalStack
from tests.fakes import FixedClock, RecordingPaymentProvider
from tests.helpers import auth_headers, new_partner_id

pytestmark = pytest.mark.integration

OCTOBER = BillingMonth(2026, 10)
WORKSPACES = 5_000
EDITIONS = {"business-security": 350, "anti-malware": 250}  # unit prices (USD minor units), price list 2026-01
CAP = 2  # max devices of every workspace: a third of them report 3 devices and are capped


@dataclass
class AmountRecordingProvider(RecordingPaymentProvider):
    """The recording sandbox provider, also keeping the amount of each charge request."""

    amounts: list[tuple[str, Money]] = field(default_factory=list)

    def charge(self, request: ChargeRequest) -> ChargeOutcome:
        self.amounts.append((request.idempotency_key, request.amount))
        return super().charge(request)


def item_bytes(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB bills it: attribute names plus values (strings in UTF-8, numbers about a byte
    per two digits, lists and maps 3 bytes plus their elements)."""

    def value_bytes(value: dict[str, Any]) -> int:
        ((kind, inner),) = value.items()
        if kind == "S":
            return len(inner.encode("utf-8"))
        if kind == "N":
            return math.ceil(len(inner.lstrip("-").replace(".", "")) / 2) + 1
        if kind in ("BOOL", "NULL"):
            return 1
        if kind == "L":
            return 3 + sum(1 + value_bytes(element) for element in inner)
        if kind == "M":
            return 3 + sum(1 + len(key.encode()) + value_bytes(element) for key, element in inner.items())
        raise AssertionError(f"unexpected attribute type {kind}")

    return sum(len(name.encode("utf-8")) + value_bytes(value) for name, value in item.items())


def stored_items(settings: BillingSettings, partner: str, month: BillingMonth) -> dict[str, dict[str, Any]]:
    """The invoice's items as DynamoDB holds them, by sort key: its own item and its line chunks, if any."""
    client = boto3.client("dynamodb", region_name=settings.aws_region)
    found: dict[str, dict[str, Any]] = {}
    for prefix in (f"INVOICE#{month}", f"INVLINES#{month}#"):
        pages = client.get_paginator("query").paginate(
            TableName=settings.billing_table,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :sk)",
            ExpressionAttributeValues={":pk": {"S": partner_pk(partner)}, ":sk": {"S": prefix}},
            ConsistentRead=True,
        )
        found |= {item["sk"]["S"]: item for page in pages for item in page["Items"]}
    return found


def emails_to(address: str, region: str) -> list[Any]:
    """The messages the moto server (run in this process by the local stack) sent to ``address``."""
    sent = ses_backends[DEFAULT_ACCOUNT_ID][region].sent_messages
    return [m for m in sent if address in [a for addresses in m.destinations.values() for a in addresses]]


def seed_big_partner(wired: Services, owner: PartnerIdentity) -> dict[str, tuple[str, str, int]]:
    """5,000 workspaces on the plan with October usage. The first is made through the service; the others are
    copies of its stored items (new ids, names, editions), written in batches with their partner pointers, and
    every workspace's devices are written as the meter records them: 1, 2 or 3 devices each. Returns the
    workspaces by id: (name, edition, devices)."""
    first = wired.workspaces.create_workspace(
        owner, CreateWorkspaceRequest(name="Customer 0000", edition="business-security", max_devices=CAP)
    )
    template = WorkspaceItem.get(workspace_pk(first.workspace_id), WORKSPACE_SK, consistent_read=True)
    workspaces = {first.workspace_id: ("Customer 0000", "business-security", 1)}
    for number in range(1, WORKSPACES):
        edition = list(EDITIONS)[number % 2]
        workspaces[f"ws_big_{uuid.uuid4().hex[:16]}"] = (f"Customer {number:04d}", edition, 1 + number % 3)
    items: list[list[Model]] = [[], [], [], []]  # workspaces, pointers, devices (in two halves)
    for workspace_id, (name, edition, _) in workspaces.items():
        if workspace_id == first.workspace_id:
            continue
        sk = template.gsi1sk.replace(first.workspace_id, workspace_id)
        items[0].append(
            WorkspaceItem(
                pk=workspace_pk(workspace_id),
                sk=WORKSPACE_SK,
                workspace_id=workspace_id,
                partner_id=owner.partner_id,
                name=name,
                on_plan=True,
                edition=edition,
                max_devices=CAP,
                created_at=template.created_at,
                joined_plan_at=template.joined_plan_at,
                licence_history=[{**term, "edition": edition} for term in template.licence_history],
                gsi1pk=template.gsi1pk,
                gsi1sk=sk,
                version=1,
            )
        )
        items[1].append(PartnerWorkspaceItem(pk=partner_pk(owner.partner_id), sk=sk, workspace_id=workspace_id))
    seen = datetime(2026, 10, 6, 8, tzinfo=UTC)
    for number, (workspace_id, (_, _, count)) in enumerate(workspaces.items()):
        items[2 + number % 2] += [
            DeviceMonthItem(
                pk=device_month_pk(workspace_id, OCTOBER, Billability.BILLABLE),
                sk=device_sk(f"PC-{device}"),
                first_seen_at=seen,
                event_id=uuid.uuid4().hex,
                billability=Billability.BILLABLE.value,
                partner_id=owner.partner_id,
                recorded_at=seen,
                expires_at=seen + timedelta(days=400),
            )
            for device in range(count)
        ]

    def write(batch_items: list[Model]) -> None:
        with type(batch_items[0]).batch_write() as batch:
            for item in batch_items:
                batch.save(item)

    with ThreadPoolExecutor(max_workers=len(items)) as pool:  # BatchWriteItem calls of 25 items, 4 at a time
        list(pool.map(write, items))
    return workspaces


def test_a_partner_with_5000_workspaces_is_invoiced_charged_once_emailed_and_listed(
    local_stack: LocalStack, settings: BillingSettings, client: Client
) -> None:
    started = time.perf_counter()
    clock = FixedClock(datetime(2026, 9, 10, 9, tzinfo=UTC))
    provider = AmountRecordingProvider()
    wired = Services(settings, clock=clock, payments=provider)
    partner = new_partner_id()
    owner = PartnerIdentity(partner, Role.OWNER, "owner", email=f"billing@{partner}.example")
    wired.activation.activate_monthly_billing(owner, "k", ActivatePlanRequest(payment_method="pm_card_visa"))
    workspaces = seed_big_partner(wired, owner)
    seeded = time.perf_counter()

    clock.current = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
    invoice = wired.monthly_charge.charge_partner_for_month(partner, OCTOBER)
    charged = time.perf_counter()

    # Stored: what was rated, one line per workspace (by name), the total the sum of the lines.
    assert invoice is not None and invoice.status is InvoiceStatus.PAID and invoice.reported_at is not None
    expected = sorted(
        (name, workspace_id, edition, min(devices, CAP), devices)
        for workspace_id, (name, edition, devices) in workspaces.items()
    )
    assert [(li.description, li.workspace_id, li.edition, li.seats, li.devices) for li in invoice.lines] == expected
    assert all(line.amount == line.unit_price.times(line.seats) for line in invoice.lines)
    assert all(line.unit_price.amount_minor == EDITIONS[line.edition] for line in invoice.lines)
    expected_total = sum(EDITIONS[edition] * min(devices, CAP) for _, edition, devices in workspaces.values())
    assert (
        invoice.total
        == Money(expected_total, "USD")
        == Money(sum(line.amount.amount_minor for line in invoice.lines), "USD")
    )
    assert wired.invoices.load_invoice(partner, OCTOBER) == invoice

    # As DynamoDB holds it: the invoice's own item (its state and audit trail) and line chunks, each well under
    # the 400 KB item limit.
    items = stored_items(settings, partner, OCTOBER)
    header = items.pop(f"INVOICE#{OCTOBER}")
    sizes = {sk: item_bytes(item) for sk, item in items.items()}
    assert int(header["line_chunks"]["N"]) == len(items) >= 2 and int(header["line_count"]["N"]) == WORKSPACES
    assert all(size <= LINE_CHUNK_MAX_BYTES + 200 for size in sizes.values())
    assert item_bytes(header) < 4_000
    print(
        f"\n5,000-line invoice: header {item_bytes(header)} B, {len(items)} chunks {sorted(sizes.values())} B, "
        f"lines {sum(sizes.values())} B in all; creation {2 * sum(math.ceil(s / 1024) for s in sizes.values())}"
        f"+{2 * math.ceil(item_bytes(header) / 1024)} WCU (transactional), each later write "
        f"{math.ceil(item_bytes(header) / 1024)} WCU"
    )

    # Charged exactly once, the invoice's total.
    assert [(key, amount) for key, amount in provider.amounts if key.startswith("month:")] == [
        (f"month:{partner}:2026-10:attempt-1", invoice.total)
    ]
    assert provider.successful_charges == 2  # the activation fee and October

    # E-mailed once: the seat lines summed per edition, well within what a mail client shows unclipped.
    (email,) = emails_to(owner.email or "", settings.aws_region)
    assert f"{WORKSPACES:,} workspace lines" in email.body and "reconciliation file" in email.body
    assert len(email.body.encode()) < 60_000
    assert invoice.total.format() in email.body

    # The reconciliation file (one row per line, adding up to the total) and the usage report (one row per device).
    s3 = boto3.client("s3", region_name=settings.aws_region)
    bucket = settings.reports_bucket
    assert bucket is not None
    reconciliation = s3.get_object(Bucket=bucket, Key=reconciliation_key(partner, OCTOBER))["Body"].read().decode()
    rows = list(csv.DictReader(io.StringIO(reconciliation)))
    assert len(rows) == WORKSPACES and sum(Decimal(row["amount"]) for row in rows) * 100 == expected_total
    usage = s3.get_object(Bucket=bucket, Key=usage_report_key(partner, OCTOBER))["Body"].read().decode()
    assert len(list(csv.DictReader(io.StringIO(usage)))) == sum(devices for _, _, devices in workspaces.values())

    # A re-run changes nothing: no second charge, no second e-mail, the same invoice.
    again = wired.monthly_charge.charge_partner_for_month(partner, OCTOBER)
    assert again == invoice and provider.successful_charges == 2
    assert len(emails_to(owner.email or "", settings.aws_region)) == 1

    # Listed: by the store with every line; by the API with its total and line count (the invoice itself carries
    # the lines).
    (listed,), _ = wired.invoices.list_invoices(partner, limit=12, after=None)
    assert listed == invoice
    headers = auth_headers(partner)
    listing = client.http.get("/invoices", headers=headers)
    (entry,) = listing.json_body["items"]
    assert entry["month"] == "2026-10" and entry["status"] == "paid" and entry["line_count"] == WORKSPACES
    assert entry["total"]["amount_minor"] == expected_total and entry["lines"] is None
    single = client.http.get("/invoices/2026-10", headers=headers)
    assert single.status_code == 200 and len(single.json_body["lines"]) == single.json_body["line_count"] == WORKSPACES
    assert sum(line["amount"]["amount_minor"] for line in single.json_body["lines"]) == expected_total
    assert len(single.body) < 6 * 1024 * 1024
    print(
        f"seeding {seeded - started:.1f} s, monthly charge {charged - seeded:.1f} s, checks "
        f"{time.perf_counter() - charged:.1f} s; GET /invoices {len(listing.body)} B, GET /invoices/2026-10 "
        f"{len(single.body)} B, e-mail {len(email.body.encode())} B"
    )


# ---------------------------------------------------------------------------------------------------
# The storage rule at its edges, on the store alone
# ---------------------------------------------------------------------------------------------------


def seat_line(number: int, price: int = 350) -> InvoiceLine:
    unit = Money(price, "USD")
    name = f"Customer {number:06d}"
    return InvoiceLine(f"ws_{number:06d}", name, "business-security", 2, 3, unit, unit.times(2), OCTOBER)


def invoice_of(partner: str, lines: list[InvoiceLine]) -> Invoice:
    return Invoice(partner, OCTOBER, "USD", "2026-01", tuple(lines), datetime(2026, 11, 1, 0, 5, tzinfo=UTC))


def lines_up_to(max_bytes: int) -> list[InvoiceLine]:
    """As many seat lines as fit inline: one more would not."""
    lines: list[InvoiceLine] = []
    while inline_lines_bytes([*lines, seat_line(len(lines))]) <= max_bytes:
        lines.append(seat_line(len(lines)))
    return lines


@pytest.fixture
def store(settings: BillingSettings) -> DynamoInvoiceStore:
    Services(settings)  # binds the models to the stack's tables
    return DynamoInvoiceStore(settings.aws_region)


def test_lines_just_within_the_inline_size_stay_in_the_invoice_item_and_one_line_more_moves_them_out(
    store: DynamoInvoiceStore, settings: BillingSettings
) -> None:
    within = lines_up_to(INLINE_LINES_MAX_BYTES)
    assert INLINE_LINES_MAX_BYTES - 200 < inline_lines_bytes(within) <= INLINE_LINES_MAX_BYTES

    small, big = new_partner_id(), new_partner_id()
    saved_small = store.save_invoice(invoice_of(small, within))
    saved_big = store.save_invoice(invoice_of(big, [*within, seat_line(len(within))]))

    (only,) = stored_items(settings, small, OCTOBER).values()  # one item, lines inline, as before
    assert int(only["line_chunks"]["N"]) == 0 and len(only["lines"]["S"]) == inline_lines_bytes(within)
    big_items = stored_items(settings, big, OCTOBER)
    assert sorted(big_items) == [f"INVLINES#{OCTOBER}#000", f"INVOICE#{OCTOBER}"]
    assert big_items[f"INVOICE#{OCTOBER}"]["lines"]["S"] == "[]"
    for partner, saved in ((small, saved_small), (big, saved_big)):
        assert store.load_invoice(partner, OCTOBER) == saved
        assert store.list_invoices(partner, limit=5, after=None)[0] == [saved]
    (summary,), _ = store.list_invoice_summaries(big, limit=5, after=None)
    assert summary.lines is None and summary.line_count == len(within) + 1 and summary.total == saved_big.total
    (summary,), _ = store.list_invoice_summaries(small, limit=5, after=None)
    assert summary.lines == saved_small.lines


def test_a_small_invoice_stays_one_item_through_its_later_writes(
    store: DynamoInvoiceStore, settings: BillingSettings
) -> None:
    partner = new_partner_id()
    now = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
    saved = store.save_invoice(invoice_of(partner, [seat_line(1), seat_line(2)]))
    paid = store.save_invoice(saved.begin_payment_attempt(now).record_payment("pi_1", now).with_event("paid", now, "t"))
    (only,) = stored_items(settings, partner, OCTOBER).values()
    assert item_bytes(only) < 1_024 and paid.lines == saved.lines and paid.status is InvoiceStatus.PAID
    assert store.load_invoice(partner, OCTOBER) == paid


def test_a_later_write_of_a_big_invoice_updates_its_own_item_only(
    store: DynamoInvoiceStore, settings: BillingSettings
) -> None:
    partner = new_partner_id()
    now = datetime(2026, 11, 1, 0, 5, tzinfo=UTC)
    created = store.save_invoice(invoice_of(partner, [seat_line(n) for n in range(3_000)]))
    chunks_before = {sk: item for sk, item in stored_items(settings, partner, OCTOBER).items() if "INVLINES" in sk}
    claimed = store.save_invoice(created.begin_payment_attempt(now).with_event("payment_attempt_started", now, "t"))
    paid = store.save_invoice(claimed.record_payment("pi_1", now).with_event("invoice_paid", now, "t"))
    after = stored_items(settings, partner, OCTOBER)
    assert {sk: item for sk, item in after.items() if "INVLINES" in sk} == chunks_before
    assert after[f"INVOICE#{OCTOBER}"]["status"]["S"] == "paid" and paid.version == 3
    assert store.load_invoice(partner, OCTOBER) == paid and paid.lines == created.lines
    with pytest.raises(ConcurrentModification):  # a stale copy is refused, as before
        store.save_invoice(replace(claimed, failure_code="late"))


def test_of_two_creators_of_a_big_invoice_one_wins_and_its_lines_are_stored_whole(
    store: DynamoInvoiceStore, settings: BillingSettings
) -> None:
    """Each creator's header and chunks are one transaction: the loser writes nothing, not even the chunks its
    bigger invoice would have added."""
    partner = new_partner_id()
    first = invoice_of(partner, [seat_line(n, price=350) for n in range(3_000)])  # one chunk
    second = invoice_of(partner, [seat_line(n, price=250) for n in range(9_000)])  # three chunks

    # One after the other: the second creation is refused.
    store.save_invoice(first)
    with pytest.raises(ConcurrentModification):
        store.save_invoice(second)
    stored = store.load_invoice(partner, OCTOBER)
    assert stored is not None and stored.lines == first.lines
    assert sorted(stored_items(settings, partner, OCTOBER)) == [f"INVLINES#{OCTOBER}#000", f"INVOICE#{OCTOBER}"]

    # At the same time, from two threads with stores of their own: exactly one wins.
    partner = new_partner_id()
    candidates = [replace(first, partner_id=partner), replace(second, partner_id=partner)]
    outcomes: dict[int, object] = {}
    start = threading.Barrier(2)

    def create(index: int) -> None:
        own = DynamoInvoiceStore(settings.aws_region)
        start.wait()
        try:
            outcomes[index] = own.save_invoice(candidates[index])
        except (ConcurrentModification, TransientFailure) as error:
            outcomes[index] = error

    threads = [threading.Thread(target=create, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [index for index, outcome in outcomes.items() if isinstance(outcome, Invoice)]
    assert len(winners) <= 1 and len(outcomes) == 2
    stored = store.load_invoice(partner, OCTOBER)
    if winners:
        assert stored is not None and stored.lines == candidates[winners[0]].lines
        header = stored_items(settings, partner, OCTOBER)[f"INVOICE#{OCTOBER}"]
        assert int(header["line_chunks"]["N"]) == len(stored_items(settings, partner, OCTOBER)) - 1
    else:  # both met each other's transaction in flight: both retry later, nothing was written
        assert stored is None and stored_items(settings, partner, OCTOBER) == {}
