"""The two eligibility matrices of seed 002, one case per cell.

The expected answers are written here from the seed's tables, independently of the domain's data
(``SCHEDULED_FREQUENCY_CHANGES`` / ``IMMEDIATE_TERM_CHANGES``): every current term x billing frequency
(the six rows) against every target, for the scheduled change (frequency only) and for the immediate
change (term with a billing frequency). A cell the seed does not list is refused, with a reason.
"""

from __future__ import annotations

import pytest

from billing_core.domain.catalog import ALL_CYCLES, BillingFrequency, Cycle, Term
from billing_core.domain.subscriptions import (
    IMMEDIATE_TERM_CHANGES,
    SCHEDULED_FREQUENCY_CHANGES,
    immediate_refusals,
    scheduled_refusals,
)

# Seed table 1 (scheduled, "Nur Abrechnungshäufigkeit ändern"): row -> accepted new frequencies.
SCHEDULED_ACCEPTED = {
    ("P3Y", "monthly"): {"annual"},  # Ja (monatlich bis jährlich)
    ("P3Y", "triennial"): set(),  # Keine
    ("P3Y", "annual"): {"monthly"},  # Ja (jährlich bis monatlich)
    ("P1Y", "annual"): set(),  # Keine
    ("P1Y", "monthly"): set(),  # Keine
    ("P1M", "monthly"): set(),  # Keine
}
# Seed table 2 (immediate, with the term): row -> accepted (term, frequency).
P3Y_ALL = {("P3Y", "monthly"), ("P3Y", "triennial"), ("P3Y", "annual")}
IMMEDIATE_ACCEPTED = {
    ("P3Y", "monthly"): set(),
    ("P3Y", "triennial"): set(),
    ("P3Y", "annual"): set(),
    ("P1Y", "annual"): P3Y_ALL,  # Jährlich bis Triennial, monthly / triennial / annual billing
    ("P1Y", "monthly"): P3Y_ALL,
    ("P1M", "monthly"): {("P1Y", "monthly"), ("P1Y", "annual")} | P3Y_ALL,
}
ROWS = list(SCHEDULED_ACCEPTED)
FREQUENCIES = ("monthly", "annual", "triennial")


def cycle(term: str, frequency: str) -> Cycle:
    return Cycle(Term(term), BillingFrequency(frequency))


def test_the_rows_are_the_six_cycles_that_exist() -> None:
    assert {(c.term.value, c.frequency.value) for c in ALL_CYCLES} == set(ROWS)
    assert set(SCHEDULED_FREQUENCY_CHANGES) == set(IMMEDIATE_TERM_CHANGES) == set(ALL_CYCLES)


SCHEDULED_CELLS = [
    pytest.param(row, frequency, id=f"scheduled {row[0]}/{row[1]} -> {frequency}")
    for row in ROWS
    for frequency in FREQUENCIES
    if frequency != row[1]
]


@pytest.mark.parametrize(("row", "frequency"), SCHEDULED_CELLS)
def test_scheduled_frequency_change_cell(row: tuple[str, str], frequency: str) -> None:
    current = cycle(*row)
    refusals = scheduled_refusals(current, BillingFrequency(frequency))
    accepted = frequency in SCHEDULED_ACCEPTED[row]
    assert (not refusals) == accepted, refusals
    assert (frequency in SCHEDULED_FREQUENCY_CHANGES[current]) == accepted
    if not accepted:
        assert refusals[0].code in ("not_in_matrix", "upfront_only_at_purchase") and refusals[0].message


IMMEDIATE_CELLS = [
    pytest.param(row, target, id=f"immediate {row[0]}/{row[1]} -> {target[0]}/{target[1]}")
    for row in ROWS
    for target in ROWS
    if target != row
]


@pytest.mark.parametrize(("row", "target"), IMMEDIATE_CELLS)
def test_immediate_term_change_cell(row: tuple[str, str], target: tuple[str, str]) -> None:
    current, wanted = cycle(*row), cycle(*target)
    refusals = immediate_refusals(current, wanted)
    accepted = target in IMMEDIATE_ACCEPTED[row]
    assert (not refusals) == accepted, refusals
    assert (wanted in IMMEDIATE_TERM_CHANGES[current]) == accepted
    if not accepted:
        expected = "shorter_term" if wanted.term.months < current.term.months else None
        if expected:
            assert refusals[0].code == expected
        assert refusals[0].message


@pytest.mark.parametrize("row", ROWS, ids=[f"{t}/{f}" for t, f in ROWS])
def test_a_scheduled_change_never_goes_to_an_upfront_plan(row: tuple[str, str]) -> None:
    """Upfront plans (billing period = term) are offered at purchase only, never as a mid-term change."""
    current = cycle(*row)
    for frequency in BillingFrequency:
        if frequency is not current.frequency and frequency.months == current.term.months:
            assert scheduled_refusals(current, frequency)[0].code == "upfront_only_at_purchase"
