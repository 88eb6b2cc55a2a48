"""Versioned price lists. A price list never changes once published; a new version is added instead,
so every charge can name the exact prices it used. The lists are the vendor's data (documents loaded with
`msp-billing catalog load`, see ``catalog_documents``); none is built into the code."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from billing_core.domain.catalog import (
    ALL_CYCLES,
    BillingFrequency,
    Catalog,
    Cycle,
    Product,
    ProductKind,
    Promotion,
    Sku,
    Term,
)
from billing_core.domain.errors import InvalidRequest
from billing_core.domain.money import Money

# A seat of the usage plan is priced like any SKU: one unit for one billing period of a one-month term.
SEAT_CYCLE = Cycle(Term.P1M, BillingFrequency.MONTHLY)


@dataclass(frozen=True)
class Edition:
    """A SKU of the usage product seen as what a workspace is licensed for."""

    code: str
    name: str
    # Monthly price of one occupied seat, per currency, in minor units.
    seat_price_minor: dict[str, int]


@dataclass(frozen=True)
class PriceList:
    version: str
    # Activation fee per currency, in minor units. Never prorated.
    activation_fee_minor: dict[str, int]
    # Every product: the usage product (the monthly plan: its SKUs are the editions, seats billed in arrears)
    # and the licence products with their SKUs and add-ons. One catalog, one price table.
    catalog: Catalog = field(default_factory=lambda: Catalog({}))
    # currency -> (sku, cycle) -> price of one unit for one billing period, in minor units (a seat: SEAT_CYCLE).
    licence_prices: dict[str, dict[tuple[str, Cycle], int]] = field(default_factory=dict)
    promotions: tuple[Promotion, ...] = ()

    @property
    def currencies(self) -> list[str]:
        return sorted(self.activation_fee_minor)

    def require_currency(self, currency: str, *, field_name: str = "currency") -> str:
        if currency not in self.activation_fee_minor:
            raise InvalidRequest.for_field(field_name, f"unsupported currency; offered: {', '.join(self.currencies)}")
        return currency

    def activation_fee(self, currency: str) -> Money:
        return Money(self.activation_fee_minor[self.require_currency(currency)], currency)

    @property
    def editions(self) -> dict[str, Edition]:
        """The usage product's SKUs with their seat prices, read from the one price table."""
        product = self.usage_product()
        return {
            code: Edition(
                code,
                self.catalog.skus[code].name,
                {
                    currency: prices[(code, SEAT_CYCLE)]
                    for currency, prices in self.licence_prices.items()
                    if (code, SEAT_CYCLE) in prices
                },
            )
            for code in product.skus
        }

    def require_edition(self, code: str, *, field_name: str = "edition") -> Edition:
        edition = self.editions.get(code)
        if edition is None:
            offered = ", ".join(sorted(self.editions))
            raise InvalidRequest.for_field(field_name, f"unknown edition {code!r}; offered: {offered}")
        return edition

    def seat_price(self, edition_code: str, currency: str) -> Money:
        edition = self.require_edition(edition_code)
        return Money(edition.seat_price_minor[self.require_currency(currency)], currency)

    # -- licence subscriptions -------------------------------------------------------------------
    def usage_product(self) -> Product:
        """The monthly MSP plan: the catalog's one product of kind ``usage`` (its SKUs are the editions)."""
        for product in self.catalog.products.values():
            if product.kind is ProductKind.USAGE:
                return product
        return Product("monthly-seats", "Monthly MSP plan (seats)", ProductKind.USAGE, ())

    def require_licence_sku(self, code: str, *, field_name: str = "sku") -> Sku:
        sku = self.catalog.skus.get(code)
        if sku is None or self.catalog.product_of(code).kind is not ProductKind.LICENCE:
            offered = ", ".join(sorted(self.catalog.skus))
            raise InvalidRequest.for_field(field_name, f"unknown SKU {code!r}; offered: {offered}")
        return sku

    def licence_price(self, sku: str, cycle: Cycle, currency: str) -> Money | None:
        """List price of one unit for one billing period of ``cycle``; None if the SKU is not offered so."""
        minor = self.licence_prices.get(currency, {}).get((sku, cycle))
        return Money(minor, currency) if minor is not None else None

    def offered_cycles(self, sku: str, currency: str) -> list[Cycle]:
        return [cycle for cycle in ALL_CYCLES if (sku, cycle) in self.licence_prices.get(currency, {})]

    def best_promotion(self, sku: str, cycle: Cycle, day: date) -> Promotion | None:
        """The eligible promotion with the largest discount on ``day`` (ties: the earlier code)."""
        eligible = [p for p in self.promotions if p.applies_to(sku, cycle, day)]
        return min(eligible, key=lambda p: (-p.percent_off_basis_points, p.code)) if eligible else None

    def promotion(self, code: str) -> Promotion | None:
        return next((p for p in self.promotions if p.code == code), None)

    def sells(self, sku: str, cycle: Cycle, currency: str) -> bool:
        """Whether the offer is on this list: what seed 002's "on the current price list" asks of a
        subscription (the offer is still sold), whatever list version the subscription was priced from."""
        return self.licence_price(sku, cycle, currency) is not None

    def on(self, day: date) -> PriceList:
        """A single list is in effect every day (see ``PriceBook`` for several)."""
        return self


class Prices(Protocol):
    """Where prices come from: the list in effect on a day. A ``PriceList`` (in effect every day), a
    ``PriceBook`` of effective-dated lists, or the published lists read from the store."""

    def on(self, day: date) -> PriceList: ...


@dataclass(frozen=True)
class PriceBook:
    """Every published price list with the first day it is in effect. A period is priced from the list in
    effect on the day it starts (a renewal re-prices from the list then current); a published list never
    changes, a new version is added with a later effective day."""

    lists: tuple[tuple[date, PriceList], ...]

    def __post_init__(self) -> None:
        days = [day for day, _ in self.lists]
        if not days or days != sorted(set(days)):
            raise ValueError("a price book needs lists with distinct effective days, in order")

    def on(self, day: date) -> PriceList:
        """The list in effect on ``day`` (before the first list's day: the first list)."""
        current = self.lists[0][1]
        for effective, prices in self.lists:
            if effective <= day:
                current = prices
        return current

    def version(self, version: str) -> PriceList:
        """A published list by its version (what a plan or an invoice names)."""
        for _, prices in self.lists:
            if prices.version == version:
                return prices
        known = ", ".join(prices.version for _, prices in self.lists)
        raise ValueError(f"unknown price list version {version!r}; known: {known}")
