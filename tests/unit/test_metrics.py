"""Seed 001 on the domain: daily metric reports replaced, never added twice; every aggregation type; and
organisation names matched across modules."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from billing_core.domain.calendar import BillingMonth
from billing_core.domain.metrics import (
    Aggregation,
    MetricReport,
    aggregate_month,
    latest_reports,
    normalise_organisation_name,
    suggest_client,
)

MARCH = BillingMonth(2027, 3)
AT = datetime(2027, 3, 5, 0, 30, tzinfo=UTC)


def report(day: int, count: int, *, ids: set[str] | None = None, at: datetime = AT, month: int = 3) -> MetricReport:
    return MetricReport(
        "edr",
        "org-4711",
        "Zahnarzt Meyer GmbH",
        "devices",
        date(2027, month, day),
        count,
        at,
        frozenset(ids) if ids is not None else None,
    )


def test_a_later_report_for_the_same_day_replaces_the_earlier_one_never_adds() -> None:
    first, correction = report(4, 37), report(4, 35, at=AT + timedelta(hours=2))
    assert latest_reports([first, correction, first]) == [correction]
    assert aggregate_month([first, correction], MARCH, Aggregation.MONTHLY_PEAK, 100).units == 35


def test_daily_sum_bills_each_day_at_the_daily_rate() -> None:
    billed = aggregate_month([report(1, 10), report(2, 12), report(3, 0)], MARCH, Aggregation.DAILY_SUM, 5)
    assert (billed.units, billed.days, billed.amount_minor) == (22, 3, 110)


def test_daily_average_divides_by_the_days_of_the_month_rounding_once() -> None:
    """10 devices on each of 20 days of March: 200 / 31 = 6.45 devices at 3.50 = 22.58 (2258.06 -> 2258)."""
    reports = [report(day, 10) for day in range(1, 21)]
    billed = aggregate_month(reports, MARCH, Aggregation.DAILY_AVERAGE, 350)
    assert (billed.units, billed.days, billed.amount_minor) == (200, 31, round(200 * 350 / 31))


def test_peak_last_day_and_distinct_over_the_month() -> None:
    reports = [
        report(1, 2, ids={"a", "b"}),
        report(15, 3, ids={"b", "c", "d"}),
        report(31, 1, ids={"e"}),
        report(1, 9, ids={str(n) for n in range(9)}, month=4),  # another month: ignored
    ]
    assert aggregate_month(reports, MARCH, Aggregation.MONTHLY_PEAK, 100).units == 3
    assert aggregate_month(reports, MARCH, Aggregation.MONTHLY_LAST_DAY, 100).units == 1
    distinct = aggregate_month(reports, MARCH, Aggregation.MONTHLY_DISTINCT, 100)
    assert (distinct.units, distinct.amount_minor) == (5, 500)


def test_distinct_units_need_identities_of_every_day() -> None:
    with pytest.raises(ValueError, match="2027-03-02"):
        aggregate_month([report(1, 1, ids={"a"}), report(2, 4)], MARCH, Aggregation.MONTHLY_DISTINCT, 100)
    reports = [report(1, 2, ids={"a", "b"}), report(2, 2, ids={"b", "c"})]
    assert aggregate_month(reports, MARCH, Aggregation.MONTHLY_DISTINCT, 1).units == 3


def test_a_month_without_reports_bills_nothing() -> None:
    for aggregation in Aggregation:
        assert aggregate_month([], MARCH, aggregation, 100).amount_minor == 0


def test_counts_and_identities_must_agree() -> None:
    with pytest.raises(ValueError, match="identities"):
        report(1, 3, ids={"a"})
    with pytest.raises(ValueError, match="negative"):
        report(1, -1)


@pytest.mark.parametrize(
    ("module_name", "normalised"),
    [
        ("Zahnarzt Meyer GmbH", "zahnarzt meyer"),
        ("ZAHNARZT  MEYER", "zahnarzt meyer"),
        ("Zahnarzt-Meyer GmbH & Co. KG", "zahnarzt meyer"),
        ("Müller Steuerberatung e.K.", "muller steuerberatung"),
        ("Acme Ltd.", "acme"),
    ],
)
def test_organisation_names_are_normalised_for_matching(module_name: str, normalised: str) -> None:
    assert normalise_organisation_name(module_name) == normalised


def test_a_client_is_suggested_by_name_across_modules() -> None:
    clients = {"c1": "Zahnarzt Meyer", "c2": "Kanzlei Schulz & Partner", "c3": "Meyer Logistik GmbH"}
    assert suggest_client("ZAHNARZT MEYER GMBH", clients) == "c1"
    assert suggest_client("Kanzlei Schulz", clients) == "c2"
    assert suggest_client("Bäckerei Wagner", clients) is None
