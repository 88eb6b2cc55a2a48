"""The catalog is the vendor's data: a price-list document is validated on load with errors naming the
entry, and the shipped example file is exactly the price list the system bills with."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest
import yaml

from billing_core.catalog_documents import document_fingerprint, parse_price_list, price_list_document
from billing_core.domain.catalog import BillingFrequency, Cycle, Term
from billing_core.domain.errors import InvalidRequest
from infra import PROJECT_ROOT

EXAMPLE = PROJECT_ROOT / "catalog" / "price-list-2026-01.yaml"


def example() -> dict[str, Any]:
    loaded = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def problems_of(document: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidRequest) as refused:
        parse_price_list(document)
    return {problem.field: problem.message for problem in refused.value.problems}


def test_the_example_file_reads_as_the_price_list_it_describes() -> None:
    effective_from, prices = parse_price_list(example())
    assert (effective_from, prices.version) == (date(2026, 1, 1), "2026-01")
    assert prices.activation_fee("USD").amount_minor == 1000 and prices.currencies == ["EUR", "USD"]
    assert prices.seat_price("business-security", "EUR").amount_minor == 320
    assert prices.licence_price("edr-business", Cycle(Term.P3Y, BillingFrequency.TRIENNIAL), "USD") is not None
    assert prices.licence_price("backup-standard", Cycle(Term.P3Y, BillingFrequency.TRIENNIAL), "USD") is None
    assert prices.catalog.skus["backup-extra-storage"].add_on_for == frozenset({"backup-standard"})
    assert prices.catalog.skus["edr-trial"].trial
    assert [p.code for p in prices.promotions] == ["EDR-1Y-LAUNCH", "EDR-3Y-LOYALTY"]


def test_a_document_round_trips_and_its_fingerprint_ignores_layout() -> None:
    effective_from, prices = parse_price_list(example())
    document = price_list_document(prices, effective_from)
    assert parse_price_list(document) == (effective_from, prices)
    reordered = dict(reversed(list(document.items())))
    assert document_fingerprint(reordered) == document_fingerprint(document)
    changed = copy.deepcopy(document)
    changed["activation_fee"]["USD"] = 1100
    assert document_fingerprint(changed) != document_fingerprint(document)


def test_a_missing_or_unknown_field_is_named() -> None:
    document = example()
    del document["effective_from"]
    document["products"][0]["skus"][0]["colour"] = "blue"
    assert set(problems_of(document)) == {"effective_from", "products.0.skus.0.colour"}


def test_prices_are_integer_minor_units_never_negative_or_fractional() -> None:
    document = example()
    document["products"][1]["skus"][0]["prices"]["P1Y/monthly"]["EUR"] = 9.99
    document["products"][2]["skus"][0]["prices"]["P1M/monthly"]["USD"] = -1
    assert set(problems_of(document)) == {
        "products.1.skus.0.prices.P1Y/monthly.EUR",
        "products.2.skus.0.prices.P1M/monthly.USD",
    }


def test_a_cycle_that_does_not_exist_is_named() -> None:
    document = example()
    document["products"][0]["skus"][0]["prices"]["P1M/annual"] = {"USD": 1, "EUR": 1}
    document["promotions"][0]["cycles"].append("P2Y/monthly")
    problems = problems_of(document)
    assert set(problems) == {"products.0.skus.0.prices.P1M/annual", "promotions.0.cycles.2"}
    assert "term/frequency" in problems["promotions.0.cycles.2"]


def test_every_price_is_in_every_currency_of_the_list_and_no_other() -> None:
    document = example()
    del document["products"][0]["skus"][0]["prices"]["P1Y/annual"]["EUR"]
    document["products"][2]["skus"][2]["prices"]["P1M/monthly"]["GBP"] = 400
    problems = problems_of(document)
    assert "no price in EUR" in problems["products.0.skus.0.prices.P1Y/annual"]
    assert "GBP is not a currency" in problems["products.2.skus.2.prices.P1M/monthly.GBP"]


def test_references_between_entries_must_resolve() -> None:
    document = example()
    document["products"][1]["skus"][1]["add_on_for"] = ["edr-business"]  # a SKU of another product
    document["promotions"][1]["skus"] = ["edr-enterprise"]
    document["products"][1]["skus"][0]["code"] = "edr-business"  # listed twice
    problems = problems_of(document)
    assert set(problems) >= {"promotions.1.skus.0", "products.1.skus.0.code"}


def test_a_promotion_ends_after_it_starts() -> None:
    document = example()
    document["promotions"][0]["ends_on"] = "2025-12-31"
    assert set(problems_of(document)) == {"promotions.0.ends_on"}


def test_the_monthly_plan_is_the_one_usage_product_priced_like_any_sku() -> None:
    """One catalog and one price table: the editions are the usage product's SKUs, a seat priced per month."""
    _, prices = parse_price_list(example())
    usage = prices.usage_product()
    assert (usage.code, usage.skus) == ("monthly-seats", ("anti-malware", "business-security", "enterprise-security"))
    seat = Cycle(Term.P1M, BillingFrequency.MONTHLY)
    assert prices.seat_price("anti-malware", "USD") == prices.licence_price("anti-malware", seat, "USD")
    with pytest.raises(InvalidRequest):
        prices.require_licence_sku("anti-malware")  # an edition is not bought as a licence subscription


def test_the_usage_product_is_there_once_and_its_editions_are_seats_per_month() -> None:
    document = example()
    document["products"][2]["skus"][1]["prices"]["P1Y/monthly"] = {"USD": 1, "EUR": 1}
    document["products"][2]["skus"][2]["add_on_for"] = ["anti-malware"]
    problems = problems_of(document)
    assert "P1M/monthly only" in problems["products.2.skus.1.prices.P1Y/monthly"]
    assert "neither an add-on nor a trial" in problems["products.2.skus.2"]
    without = example()
    del without["products"][2]
    assert "exactly one product of kind usage" in problems_of(without)["products"]
