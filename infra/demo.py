"""The full billing lifecycle on one machine, in a few minutes of wall time.

Partners activate, create workspaces and switch them onto the plan through the partner API (HTTP);
simulated agents report their devices every day to the metering queue; the local test clock moves
day by day and fires the template's schedules on the way (the monthly runs on the 1st, 3rd, 5th,
7th) and the one-time end-of-plan schedules. One partner's first charge each month is declined and
retried, one activates mid-month, one cancels, one cancels and then reactivates. The agents keep the
ground truth (which devices each workspace reported while its licence was valid), and every invoice
is checked against it. Two partners also buy licence subscriptions (seed 002): one a three-year term
billed annually that it then switches to monthly billing (a scheduled change, from its next period), one
a one-month term it moves to a one-year term (an immediate change: the unused days are credited on the
next invoice). The demo keeps its own account of those charges (plain calendar arithmetic on the price
list) and checks every invoice's total against seats and licences together.
"""

from __future__ import annotations

import calendar
import functools
import json
import random
import shutil
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage
from fractions import Fraction
from pathlib import Path
from typing import Any

import boto3

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.catalog import BillingFrequency, Cycle, Term
from billing_core.domain.identity import Role
from billing_core.domain.plan import plan_end_instant
from billing_core.services.monthly_charge import previous_month
from infra import LOCAL_STATE_DIR
from infra.catalog import example_price_list
from infra.dev_tokens import development_token
from infra.stack import LocalStack

DEMO_OUTPUT_DIR = LOCAL_STATE_DIR / "demo"
EDITIONS = ("anti-malware", "business-security", "enterprise-security")
REPORT_HOUR = 12  # agents report at noon UTC


class DemoFailure(RuntimeError):
    pass


@dataclass
class SimulatedWorkspace:
    """One end customer's workspace and its agent: the devices it has and what it reported when."""

    name: str
    edition: str
    max_devices: int
    fleet: list[str]
    workspace_id: str = ""
    licence_ends_after: datetime | None = None
    # Ground truth: devices reported per month while the workspace's plan licence was valid.
    seen: dict[BillingMonth, set[str]] = field(default_factory=dict)

    def licence_valid_at(self, moment: datetime) -> bool:
        return self.licence_ends_after is None or moment < self.licence_ends_after


def plus_months(day: date, months: int) -> date:
    """``day`` plus whole calendar months, the day clamped to the month (the demo's own arithmetic)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


@dataclass
class LicenceStep:
    """What a partner does with its licence subscriptions at a moment: buy, or change the order."""

    at: datetime
    kind: str  # "buy", "schedule" (the billing frequency, from the next period) or "immediate" (a longer term)
    sku: str = ""
    quantity: int = 0
    term: str = ""
    frequency: str = ""


@dataclass
class ExpectedLicences:
    """The demo's own account of one order's charges: periods billed in advance in the month they start,
    a change's credit from the amount charged for the period it cuts short (unused days / period days)."""

    sku: str = ""
    quantity: int = 0
    unit_minor: int = 0
    anchor: date | None = None
    period_months: int = 1
    next_offset: int = 0
    current: tuple[date, date, int] | None = None  # the period in progress: start, end, amount
    charges: dict[BillingMonth, int] = field(default_factory=dict)

    def start(self, day: date, unit_minor: int, period_months: int) -> None:
        """A new series of periods from ``day`` (a purchase, or a change to a longer term)."""
        self.anchor, self.unit_minor, self.period_months, self.next_offset = day, unit_minor, period_months, 0
        self.through(day)

    def through(self, day: date) -> None:
        """Charge every period that starts on or before ``day``."""
        assert self.anchor is not None
        while (start := plus_months(self.anchor, self.next_offset)) <= day:
            end = plus_months(self.anchor, self.next_offset + self.period_months)
            self.current = (start, end, self.quantity * self.unit_minor)
            self._add(start, self.current[2])
            self.next_offset += self.period_months

    def credit_unused(self, day: date) -> None:
        self.through(day)
        assert self.current is not None
        start, end, amount = self.current
        self._add(day, -round(Fraction(amount * (end - day).days, (end - start).days)))  # half to even

    def _add(self, day: date, amount: int) -> None:
        month = BillingMonth.containing_date(day)
        self.charges[month] = self.charges.get(month, 0) + amount


@dataclass
class SimulatedPartner:
    name: str
    story: str
    payment_method: str
    activate_at: datetime
    workspaces: list[SimulatedWorkspace]
    partner_id: str = ""
    cancel_at: datetime | None = None
    cancel_option: int = 0  # which offered end date: 0 = end of that month
    reactivate_at: datetime | None = None
    ends_on: date | None = None  # set once the end date is fixed (and not withdrawn)
    active: bool = False
    licences: list[LicenceStep] = field(default_factory=list)
    order_id: str = ""
    expected_licences: ExpectedLicences = field(default_factory=ExpectedLicences)

    def seat_month(self, month: BillingMonth) -> bool:
        return month in self.billable_months(month)

    def invoiced_months(self, through: BillingMonth) -> list[BillingMonth]:
        """Months with seats billed, and months with licence charges (the activation month too)."""
        if self.expected_licences.anchor is not None:
            self.expected_licences.through(through.last_day)
        licence_months = {m for m in self.expected_licences.charges if m <= through}
        return sorted(set(self.billable_months(through)) | licence_months)

    def billable_months(self, through: BillingMonth) -> list[BillingMonth]:
        month = BillingMonth.containing(self.activate_at).next()  # the activation month is covered
        final = BillingMonth.containing_date(self.ends_on) if self.ends_on else None
        months = []
        while month <= through and (final is None or month <= final):
            months.append(month)
            month = month.next()
        return months

    def expected_invoice(self, month: BillingMonth) -> tuple[int, dict[str, tuple[int, int]]]:
        """Total (minor units) and (seats, devices) per workspace, from the ground truth: the seats of a
        billed month and the licence charges of the month."""
        lines: dict[str, tuple[int, int]] = {}
        total = self.expected_licences.charges.get(month, 0)
        if not self.seat_month(month):
            return total, lines
        for workspace in self.workspaces:
            devices = len(workspace.seen.get(month, set()))
            seats = min(devices, workspace.max_devices)
            lines[workspace.workspace_id] = (seats, devices)
            total += seats * example_price_list().seat_price(workspace.edition, "USD").amount_minor
        return total, lines


@dataclass
class InvoiceCheck:
    partner: SimulatedPartner
    month: BillingMonth
    status: str
    attempts: int
    total_minor: int
    expected_minor: int
    seats: int
    licences_minor: int  # the licence lines' part of the total (charges less credits)
    matches: bool


@dataclass
class DemoResult:
    partners: list[SimulatedPartner]
    checks: list[InvoiceCheck]
    unexpected_invoices: list[str]
    emails: list[Path]
    reports: list[Path]
    started_at: datetime
    ended_at: datetime
    fired: list[str]
    summary: Path

    @property
    def correct(self) -> bool:
        return all(check.matches for check in self.checks) and not self.unexpected_invoices


class PartnerApi:
    """A partner's portal session: JSON over HTTP with the partner's development token."""

    def __init__(self, base_url: str, partner_id: str) -> None:
        self.base_url = base_url
        self.token = development_token(partner_id, Role.OWNER)

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        request = urllib.request.Request(  # noqa: S310 - the local API on loopback
            self.base_url + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": self.token, "Content-Type": "application/json", **headers},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def expect(self, status: int, method: str, path: str, body: Any = None, **headers: str) -> Any:
        got, answer = self.call(method, path, body, **headers)
        if got != status:
            raise DemoFailure(f"{method} {path}: expected {status}, got {got}: {answer}")
        return answer


def cast_partners(count: int, start: datetime, seed: int) -> list[SimulatedPartner]:
    """The stories, in order of importance, then steady partners up to ``count``."""
    rng = random.Random(seed)
    month0 = BillingMonth.containing(start)
    month1 = month0.next()

    def workspaces(prefix: str, number: int) -> list[SimulatedWorkspace]:
        made = []
        for index in range(number):
            cap = rng.randint(3, 8)
            fleet = [f"{prefix}-dev-{index}-{n}" for n in range(rng.randint(2, cap + 2))]  # some exceed the cap
            made.append(SimulatedWorkspace(f"{prefix} customer {index + 1}", rng.choice(EDITIONS), cap, fleet))
        return made

    def at(month: BillingMonth, day: int, hour: int = 9) -> datetime:
        return datetime.combine(month.first_day + timedelta(days=day - 1), time(hour), tzinfo=UTC)

    stories = [
        SimulatedPartner(
            "Northwind IT",
            "steady; buys Cloud Backup for 3 years billed annually, then switches it to monthly billing from its "
            "next period (a scheduled change)",
            "pm_card_visa",
            start,
            workspaces("nw", 2),
            licences=[
                LicenceStep(start + timedelta(hours=1), "buy", "backup-standard", 5, "P3Y", "annual"),
                LicenceStep(at(month1, 10), "schedule", frequency="monthly"),
            ],
        ),
        SimulatedPartner(
            "Contoso Managed",
            "first charge each month declined (insufficient funds), paid on the retry",
            "pm_card_insufficientFundsFirstAttempt",
            start,
            workspaces("co", 2),
        ),
        SimulatedPartner(
            "Fabrikam Secure",
            "cancels in its first billed month; the plan and its licences end with that month",
            "pm_card_visa",
            start,
            workspaces("fa", 2),
            cancel_at=at(month1, 10),
        ),
        SimulatedPartner(
            "Tailspin Ops",
            "cancels (end of the following month), then changes its mind and reactivates",
            "pm_card_visa",
            start,
            workspaces("ta", 1),
            cancel_at=at(month1, 5),
            cancel_option=1,
            reactivate_at=at(month1, 25),
        ),
        SimulatedPartner(
            "Litware Partners",
            "activates mid-month; buys EDR for one month, moves it to a one-year term five days later (the unused "
            "days are credited on the next invoice)",
            "pm_card_mastercard",
            at(month1, 15, 10),
            workspaces("li", 2),
            licences=[
                LicenceStep(at(month1, 15, 11), "buy", "edr-business", 3, "P1M", "monthly"),
                LicenceStep(at(month1, 20), "immediate", term="P1Y", frequency="monthly"),
            ],
        ),
    ]
    for extra in range(len(stories), count):
        stories.append(
            SimulatedPartner(f"Partner {extra + 1}", "steady", "pm_card_visa", start, workspaces(f"p{extra + 1}", 2))
        )
    return stories[:count]


class BillingDemo:
    def __init__(
        self,
        stack: LocalStack,
        api_url: str,
        *,
        partners: int = 5,
        months: int = 3,
        seed: int = 2026,
        output_dir: Path = DEMO_OUTPUT_DIR,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        self.stack = stack
        self.api_url = api_url
        self.schedules = stack.schedules()
        self.clock = stack.clock
        self.rng = random.Random(seed)
        self.started_at = self.clock.now()
        self.partners = cast_partners(partners, self.started_at, seed)
        # From now to the 8th of the month ``months`` later: every run, retry day and end date on the way.
        self.until = datetime.combine(
            _add_months(BillingMonth.containing(self.started_at), months).first_day + timedelta(days=7),
            time(12),
            tzinfo=UTC,
        )
        self.output_dir = output_dir
        self.invoices: dict[str, list[dict[str, Any]]] = {}  # as the partner API answered, per partner
        self._progress = progress or (lambda _label, _done, _total: None)
        self._sqs = boto3.client("sqs", endpoint_url=stack.moto_url, region_name=stack.config.region)
        self._metering_queue = self._sqs.get_queue_url(QueueName=stack.names.physical("MeteringQueue"))["QueueUrl"]

    # -- the story -------------------------------------------------------------------------------
    def run(self) -> DemoResult:
        days = (self.until.date() - self.started_at.date()).days
        for partner in self.partners:
            partner.partner_id = f"demo-{partner.name.split()[0].lower()}-{uuid.uuid4().hex[:6]}"
        for done in range(days + 1):
            day = self.started_at.date() + timedelta(days=done)
            self._live_through(day)
            self._progress(f"{day.isoformat()}", done, days)
        self.schedules.advance_to(self.until)
        checks, unexpected = self._check_invoices()
        emails, reports = self._export()
        return DemoResult(
            self.partners,
            checks,
            unexpected,
            emails,
            reports,
            self.started_at,
            self.clock.now(),
            self.schedules.fired,
            self.output_dir / "summary.json",
        )

    def _live_through(self, day: date) -> None:
        """One day: partners act at their moments (clock moved there first), agents report at noon."""
        moments: list[tuple[datetime, int, Callable[[], None]]] = []
        for order, partner in enumerate(self.partners):
            actions: list[tuple[datetime | None, Callable[[SimulatedPartner], None]]] = [
                (partner.activate_at, self._activate),
                (partner.cancel_at, self._cancel),
                (partner.reactivate_at, self._reactivate),
            ]
            for moment, action in actions:
                if moment is not None and moment.date() == day:
                    moments.append((max(moment, self.clock.now()), order, functools.partial(action, partner)))
            for step in partner.licences:
                if step.at.date() == day:
                    moments.append(
                        (max(step.at, self.clock.now()), order, functools.partial(self._licence_step, partner, step))
                    )
        noon = datetime.combine(day, time(REPORT_HOUR), tzinfo=UTC)
        moments.append((max(noon, self.clock.now()), len(self.partners), self._agents_report))
        for moment, _, act in sorted(moments, key=lambda entry: entry[:2]):
            self.schedules.advance_to(moment)
            act()

    def _activate(self, partner: SimulatedPartner) -> None:
        api = PartnerApi(self.api_url, partner.partner_id)
        api.expect(
            201,
            "POST",
            "/plan/activation",
            {"payment_method": partner.payment_method, "billing_email": f"billing@{partner.partner_id}.example"},
            **{"Idempotency-Key": uuid.uuid4().hex},
        )
        for workspace in partner.workspaces:
            created = api.expect(
                201,
                "POST",
                "/workspaces",
                {"name": workspace.name, "edition": workspace.edition, "max_devices": workspace.max_devices},
            )
            workspace.workspace_id = created["workspace_id"]
        partner.active = True

    def _licence_step(self, partner: SimulatedPartner, step: LicenceStep) -> None:
        api = PartnerApi(self.api_url, partner.partner_id)
        today = self.clock.now().date()
        expected = partner.expected_licences
        key = {"Idempotency-Key": uuid.uuid4().hex}
        if step.kind == "buy":
            item = {"sku": step.sku, "quantity": step.quantity, "term": step.term, "billing_frequency": step.frequency}
            partner.order_id = api.expect(201, "POST", "/orders", {"items": [item]}, **key)["order_id"]
            expected.sku, expected.quantity = step.sku, step.quantity
            expected.start(today, *_unit_and_period(expected.sku, step.term, step.frequency, today))
            return
        path = f"/orders/{partner.order_id}/changes"
        if step.kind == "schedule":
            changed = api.expect(200, "POST", path, {"mode": "scheduled", "billing_frequency": step.frequency}, **key)
            pending = changed["order"]["subscriptions"][0]["pending_change"]
            if pending is None or pending["billing_frequency"] != step.frequency:
                raise DemoFailure(f"{partner.name}: the scheduled change is not pending: {changed}")
            return  # nothing changes before the next period (a year later, past the demo)
        change = {"mode": "immediate", "term": step.term, "billing_frequency": step.frequency}
        api.expect(200, "POST", path, change, **key)
        expected.credit_unused(today)
        expected.start(today, *_unit_and_period(expected.sku, step.term, step.frequency, today))

    def _cancel(self, partner: SimulatedPartner) -> None:
        api = PartnerApi(self.api_url, partner.partner_id)
        options = api.expect(200, "GET", "/plan/cancellation/options")["options"]
        ends_on = date.fromisoformat(options[partner.cancel_option]["ends_on"])
        api.expect(200, "POST", "/plan/cancellation", {"ends_on": ends_on.isoformat()})
        partner.ends_on = ends_on
        if partner.reactivate_at is None:
            for workspace in partner.workspaces:
                workspace.licence_ends_after = plan_end_instant(ends_on)

    def _reactivate(self, partner: SimulatedPartner) -> None:
        PartnerApi(self.api_url, partner.partner_id).expect(200, "DELETE", "/plan/cancellation")
        partner.ends_on = None

    def _agents_report(self) -> None:
        """Devices join and leave; every installed agent reports its workspace's devices once a day."""
        at = self.clock.now()
        month = BillingMonth.containing(at)
        for partner in self.partners:
            if not partner.active:
                continue
            for workspace in partner.workspaces:
                if self.rng.random() < 0.15:
                    workspace.fleet.append(f"{workspace.fleet[0].rsplit('-', 1)[0]}-{uuid.uuid4().hex[:6]}")
                if len(workspace.fleet) > 1 and self.rng.random() < 0.10:
                    workspace.fleet.pop(self.rng.randrange(len(workspace.fleet)))
                if workspace.licence_valid_at(at):
                    workspace.seen.setdefault(month, set()).update(workspace.fleet)
                self._sqs.send_message(
                    QueueUrl=self._metering_queue,
                    MessageBody=json.dumps(
                        {
                            "type": "daily_report",
                            "schema_version": 1,
                            "event_id": uuid.uuid4().hex,
                            "workspace_id": workspace.workspace_id,
                            "observed_at": at.isoformat(),
                            "device_ids": list(workspace.fleet),
                            "agent": {"product": "msp-billing demo agent", "version": "1"},
                        }
                    ),
                )
        if not self.stack.wait_for_queues(60):
            raise DemoFailure("the meter function did not consume the day's reports")

    # -- results ---------------------------------------------------------------------------------
    def _check_invoices(self) -> tuple[list[InvoiceCheck], list[str]]:
        last_charged = previous_month(self.until)  # the last monthly run on the way charged this month
        checks: list[InvoiceCheck] = []
        unexpected: list[str] = []
        for partner in self.partners:
            api = PartnerApi(self.api_url, partner.partner_id)
            invoices = {item["month"]: item for item in api.expect(200, "GET", "/invoices?limit=50")["items"]}
            self.invoices[partner.partner_id] = list(invoices.values())
            expected_months = partner.invoiced_months(last_charged)
            for month in expected_months:
                expected_total, expected_lines = partner.expected_invoice(month)
                invoice = invoices.pop(str(month), None)
                if invoice is None:
                    unexpected.append(f"{partner.name}: no invoice for {month}")
                    continue
                if invoice["lines"] is None:  # listed without its lines (a big invoice): read it on its own
                    invoice = api.expect(200, "GET", f"/invoices/{month}")
                lines = {
                    line["workspace_id"]: (line["seats"], line["devices"])
                    for line in invoice["lines"]
                    if line["kind"] in ("seats", "seat_adjustment")
                }
                matches = (
                    invoice["total"]["amount_minor"] == expected_total
                    and lines == expected_lines
                    and invoice["status"] in ("paid", "nothing_due")
                )
                checks.append(
                    InvoiceCheck(
                        partner,
                        month,
                        invoice["status"],
                        invoice["payment_attempts"],
                        invoice["total"]["amount_minor"],
                        expected_total,
                        sum(seats for seats, _ in lines.values()),
                        sum(
                            line["amount"]["amount_minor"]
                            for line in invoice["lines"]
                            if line["kind"] in ("licence_period", "change_credit")
                        ),
                        matches,
                    )
                )
            unexpected += [f"{partner.name}: unexpected invoice for {month}" for month in invoices]
        return checks, unexpected

    def _export(self) -> tuple[list[Path], list[Path]]:
        """The e-mails moto's SES accepted (as .eml) and the usage reports in S3 (CSV), as files."""
        if self.output_dir.exists():
            shutil.rmtree(self.output_dir)
        emails_dir, reports_dir = self.output_dir / "emails", self.output_dir / "reports"
        emails_dir.mkdir(parents=True)
        reports_dir.mkdir(parents=True)
        ours = {partner.partner_id for partner in self.partners}
        emails = []
        for index, message in enumerate(_ses_sent_messages(self.stack.config.region), start=1):
            recipients = [address for addresses in message.destinations.values() for address in addresses]
            partner_id = recipients[0].split("@", 1)[1].removesuffix(".example") if recipients else ""
            if partner_id not in ours:
                continue
            email = EmailMessage()
            email["From"], email["To"], email["Subject"] = message.source, ", ".join(recipients), message.subject
            email.set_content(message.body, subtype="html", cte="8bit")  # readable in a text editor too
            path = emails_dir / f"{index:03d}-{_slug(message.subject)}.eml"
            path.write_bytes(bytes(email))
            emails.append(path)
        s3 = boto3.client("s3", endpoint_url=self.stack.moto_url, region_name=self.stack.config.region)
        bucket = self.stack.names.bucket("ReportsBucket")
        reports = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="usage-reports/"):
            for item in page.get("Contents", []):
                partner_id = item["Key"].split("/")[1]
                if partner_id in ours:
                    target = reports_dir / item["Key"].removeprefix("usage-reports/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    s3.download_file(bucket, item["Key"], str(target))
                    reports.append(target)
        self._write_summary()
        return emails, sorted(reports)

    def _write_summary(self) -> None:
        """Ground truth and invoices side by side (summary.json), for a reader or a test to check."""
        summary = {
            "started_at": self.started_at.isoformat(),
            "ended_at": self.clock.now().isoformat(),
            "partners": [
                {
                    "name": partner.name,
                    "partner_id": partner.partner_id,
                    "story": partner.story,
                    "activated_at": partner.activate_at.isoformat(),
                    "ends_on": partner.ends_on.isoformat() if partner.ends_on else None,
                    "order_id": partner.order_id or None,
                    # The demo's own account of the licence charges per invoice month (minor units).
                    "expected_licences": {
                        str(month): amount for month, amount in sorted(partner.expected_licences.charges.items())
                    },
                    "workspaces": [
                        {
                            "workspace_id": w.workspace_id,
                            "edition": w.edition,
                            "max_devices": w.max_devices,
                            "seen": {str(month): sorted(devices) for month, devices in sorted(w.seen.items())},
                        }
                        for w in partner.workspaces
                    ],
                    "invoices": self.invoices.get(partner.partner_id, []),
                }
                for partner in self.partners
            ],
        }
        (self.output_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _ses_sent_messages(region: str) -> list[Any]:
    """What moto's SES (in this process: the local stack runs the moto server in-process) has sent."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return list(ses_backends[DEFAULT_ACCOUNT_ID][region].sent_messages)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")[:60]


def _add_months(month: BillingMonth, count: int) -> BillingMonth:
    for _ in range(count):
        month = month.next()
    return month


def _unit_and_period(sku: str, term: str, frequency: str, day: date) -> tuple[int, int]:
    """One unit for one billing period on the price list (less the promotion running that day), and the
    period's length in months."""
    cycle = Cycle(Term(term), BillingFrequency(frequency))
    prices = example_price_list()
    price = prices.licence_price(sku, cycle, "USD")
    if price is None:
        raise DemoFailure(f"{sku} is not sold as {cycle}")
    promotion = prices.best_promotion(sku, cycle, day)
    percent = promotion.percent_off_basis_points if promotion else 0
    return price.amount_minor - round(Fraction(price.amount_minor * percent, 10_000)), cycle.frequency.months
