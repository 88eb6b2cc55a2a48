"""Versioned price lists. A price list never changes once published; a new version is added instead,
so every charge can name the exact prices it used."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

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

# The usage plan's product: its SKUs are the editions (seat prices below), billed in arrears.
USAGE_PRODUCT = "monthly-seats"


@dataclass(frozen=True)
class Edition:
    code: str
    name: str
    # Monthly price of one occupied seat, per currency, in minor units.
    seat_price_minor: dict[str, int]


@dataclass(frozen=True)
class PriceList:
    version: str
    # Activation fee per currency, in minor units. Never prorated.
    activation_fee_minor: dict[str, int]
    editions: dict[str, Edition]
    # Licence products, SKUs and add-ons (the usage product is derived from the editions).
    catalog: Catalog = field(default_factory=lambda: Catalog({}))
    # currency -> (sku, cycle) -> price of one unit for one billing period, in minor units.
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
        """The monthly MSP plan as a product of the catalog: one SKU per edition."""
        return Product(USAGE_PRODUCT, "Monthly MSP plan (seats)", ProductKind.USAGE, tuple(sorted(self.editions)))

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


M, A, T = BillingFrequency.MONTHLY, BillingFrequency.ANNUAL, BillingFrequency.TRIENNIAL
P1M_MONTHLY, P1Y_MONTHLY, P1Y_ANNUAL = Cycle(Term.P1M, M), Cycle(Term.P1Y, M), Cycle(Term.P1Y, A)
P3Y_MONTHLY, P3Y_ANNUAL, P3Y_TRIENNIAL = Cycle(Term.P3Y, M), Cycle(Term.P3Y, A), Cycle(Term.P3Y, T)

CATALOG_2026_01 = Catalog(
    products={
        "edr": Product("edr", "Endpoint Detection and Response", ProductKind.LICENCE, ("edr-business", "edr-trial")),
        "backup": Product("backup", "Cloud Backup", ProductKind.LICENCE, ("backup-standard", "backup-extra-storage")),
    },
    skus={
        "edr-business": Sku("edr-business", "EDR Business", "edr"),
        "edr-trial": Sku("edr-trial", "EDR Business (30-day trial)", "edr", trial=True),
        "backup-standard": Sku("backup-standard", "Cloud Backup Standard", "backup"),
        "backup-extra-storage": Sku(
            "backup-extra-storage", "Cloud Backup extra 100 GB", "backup", add_on_for=frozenset({"backup-standard"})
        ),
    },
)


def _prices(scale_percent: int) -> dict[tuple[str, Cycle], int]:
    """One currency's licence prices: a unit per billing period (EUR at ``scale_percent`` of USD)."""
    usd = {
        ("edr-business", P1M_MONTHLY): 600,
        ("edr-business", P1Y_MONTHLY): 500,
        ("edr-business", P1Y_ANNUAL): 6000,
        ("edr-business", P3Y_MONTHLY): 450,
        ("edr-business", P3Y_ANNUAL): 5400,
        ("edr-business", P3Y_TRIENNIAL): 16200,
        ("edr-trial", P1M_MONTHLY): 0,
        # No triennial billing for backup (not every SKU offers every combination).
        ("backup-standard", P1M_MONTHLY): 1200,
        ("backup-standard", P1Y_MONTHLY): 1000,
        ("backup-standard", P1Y_ANNUAL): 12000,
        ("backup-standard", P3Y_MONTHLY): 900,
        ("backup-standard", P3Y_ANNUAL): 10800,
        ("backup-extra-storage", P1M_MONTHLY): 300,
        ("backup-extra-storage", P1Y_MONTHLY): 250,
        ("backup-extra-storage", P1Y_ANNUAL): 3000,
        ("backup-extra-storage", P3Y_MONTHLY): 200,
        ("backup-extra-storage", P3Y_ANNUAL): 2400,
    }
    return {key: price * scale_percent // 100 for key, price in usd.items()}


PRICE_LIST_2026_01 = PriceList(
    version="2026-01",
    activation_fee_minor={"USD": 1000, "EUR": 1000},
    editions={
        "anti-malware": Edition("anti-malware", "Anti-Malware", {"USD": 250, "EUR": 230}),
        "business-security": Edition("business-security", "Business Security", {"USD": 350, "EUR": 320}),
        "enterprise-security": Edition("enterprise-security", "Enterprise Security", {"USD": 450, "EUR": 410}),
    },
    catalog=CATALOG_2026_01,
    licence_prices={"USD": _prices(100), "EUR": _prices(90)},
    promotions=(
        Promotion(
            "EDR-1Y-LAUNCH",
            "EDR Business launch: 20 % off one-year terms",
            frozenset({"edr-business"}),
            frozenset({P1Y_MONTHLY, P1Y_ANNUAL}),
            2000,
            date(2026, 1, 1),
            date(2026, 6, 30),
        ),
        Promotion(
            "EDR-3Y-LOYALTY",
            "EDR Business: 10 % off three-year terms",
            frozenset({"edr-business"}),
            frozenset({P3Y_MONTHLY, P3Y_ANNUAL, P3Y_TRIENNIAL}),
            1000,
            date(2026, 1, 1),
            date(2028, 12, 31),
        ),
    ),
)

PRICE_LISTS: dict[str, PriceList] = {PRICE_LIST_2026_01.version: PRICE_LIST_2026_01}


def price_list(version: str) -> PriceList:
    try:
        return PRICE_LISTS[version]
    except KeyError:
        raise ValueError(f"unknown price list version {version!r}; known: {', '.join(PRICE_LISTS)}") from None
