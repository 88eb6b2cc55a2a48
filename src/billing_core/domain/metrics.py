"""Daily billing metrics from many product modules (seed 001): what each module reports per organisation,
billing type and day, how a month of reports becomes billable units, and how module organisations are
matched to the partner's clients.

- A report counts units of one billing type (users, devices, IP addresses...) of one organisation on one
  day, with the units' identities where the module has them. The latest report for the same module,
  organisation, type and day replaces the earlier ones: never added twice (``latest_reports``).
- A billing type is aggregated on a **daily** basis (each day's count at a daily rate, or the average
  over the month's days) or a **monthly** basis (the peak day, the distinct units over the month, or the
  last day reported). The seed-000 device count is ``MONTHLY_DISTINCT`` (distinct devices per month).
- Amounts are integer minor units, rounded once (``proration.scale``), like every other amount.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.proration import scale


class Aggregation(StrEnum):
    DAILY_SUM = "daily_sum"  # every day's count, each at the daily rate
    DAILY_AVERAGE = "daily_average"  # the average count over the month's days, at the monthly rate
    MONTHLY_PEAK = "monthly_peak"  # the highest day's count, at the monthly rate
    MONTHLY_DISTINCT = "monthly_distinct"  # distinct units over the month (needs identities): seed 000's devices
    MONTHLY_LAST_DAY = "monthly_last_day"  # the count of the last day reported in the month


@dataclass(frozen=True)
class MetricReport:
    module: str  # e.g. "edr"
    organisation_id: str  # the module's own id, e.g. "org-4711"
    organisation_name: str  # the module's own name, e.g. "Zahnarzt Meyer GmbH"
    billing_type: str  # e.g. "devices"
    day: date
    count: int
    reported_at: datetime
    unit_ids: frozenset[str] | None = None  # the units' identities, when the module has them

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError("a count is never negative")
        if self.unit_ids is not None and len(self.unit_ids) != self.count:
            raise ValueError(f"{self.count} units reported with {len(self.unit_ids)} identities")

    @property
    def key(self) -> tuple[str, str, str, date]:
        """What a later report replaces: the same module, organisation, billing type and day."""
        return (self.module, self.organisation_id, self.billing_type, self.day)


def latest_reports(reports: Iterable[MetricReport]) -> list[MetricReport]:
    """One report per module, organisation, type and day: the latest (ties: the later in the sequence)."""
    latest: dict[tuple[str, str, str, date], MetricReport] = {}
    for report in reports:
        known = latest.get(report.key)
        if known is None or report.reported_at >= known.reported_at:
            latest[report.key] = report
    return sorted(latest.values(), key=lambda r: r.key)


@dataclass(frozen=True)
class BilledQuantity:
    """A month of one billing type of one organisation, aggregated: the amount and how it was reached."""

    aggregation: Aggregation
    units: int  # the units the amount is for (for an average: the sum of the daily counts)
    days: int  # days reported (for an average: the days of the month it is divided by)
    amount_minor: int


def aggregate_month(
    reports: Sequence[MetricReport], month: BillingMonth, aggregation: Aggregation, unit_price_minor: int
) -> BilledQuantity:
    """The month's billable quantity and amount of one billing type of one organisation. ``unit_price_minor``
    is per unit and day for ``DAILY_SUM``, per unit and month otherwise."""
    days = [r for r in latest_reports(reports) if BillingMonth.containing_date(r.day) == month]
    if len({(r.module, r.organisation_id, r.billing_type) for r in days}) > 1:
        raise ValueError("aggregate one module, organisation and billing type at a time")
    counts = [r.count for r in days]
    if aggregation is Aggregation.DAILY_SUM:
        units = sum(counts)
        return BilledQuantity(aggregation, units, len(days), units * unit_price_minor)
    if aggregation is Aggregation.DAILY_AVERAGE:
        month_days = (month.next().first_day - month.first_day).days
        units = sum(counts)  # a day without a report counts 0
        return BilledQuantity(aggregation, units, month_days, scale(units * unit_price_minor, 1, month_days))
    if aggregation is Aggregation.MONTHLY_PEAK:
        units = max(counts, default=0)
    elif aggregation is Aggregation.MONTHLY_LAST_DAY:
        units = max(days, key=lambda r: r.day).count if days else 0
    else:
        missing = [r.day.isoformat() for r in days if r.unit_ids is None]
        if missing:
            raise ValueError(f"distinct units need the units' identities; none reported for {', '.join(missing)}")
        units = len(frozenset().union(*(r.unit_ids or frozenset() for r in days)))
    return BilledQuantity(aggregation, units, len(days), units * unit_price_minor)


# Legal forms that differ between how modules spell a client's name; dropped before names are compared.
_LEGAL_FORMS = re.compile(
    r"\b(gmbh|mbh|ag|ug|kg|ohg|gbr|e\s?k|e\s?v|co|ltd|limited|inc|llc|plc|sa|sarl|sas|bv|nv|srl|spa|ab|as|oy)\b"
)


def normalise_organisation_name(name: str) -> str:
    """A name for matching across modules: case, accents, punctuation and legal forms do not matter
    ("Zahnarzt Meyer GmbH" and "ZAHNARZT MEYER" match; "Müller & Co. KG" and "Mueller" do not: umlauts fold
    to their base letter, not to a spelling)."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    words = re.sub(r"[^a-z0-9]+", " ", folded)
    return " ".join(_LEGAL_FORMS.sub(" ", words).split())


def suggest_client(organisation_name: str, clients: dict[str, str]) -> str | None:
    """The client (id -> name) whose normalised name equals the organisation's, else the one sharing the
    most words (at least half of the organisation's); None when nothing is close."""
    wanted = normalise_organisation_name(organisation_name)
    if not wanted:
        return None
    scored = []
    for client_id, name in sorted(clients.items()):
        candidate = normalise_organisation_name(name)
        if candidate == wanted:
            return client_id
        shared = len(set(candidate.split()) & set(wanted.split()))
        scored.append((shared, client_id))
    best = max(scored, default=(0, None))
    return best[1] if best[0] * 2 >= len(wanted.split()) and best[0] > 0 else None
