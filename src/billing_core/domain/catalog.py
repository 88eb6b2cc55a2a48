"""The catalog: products, their SKUs (editions) and add-ons, terms and billing frequencies.

Two product kinds share this core:

- ``usage``: the monthly MSP plan (seats metered per workspace, billed in arrears each month; the
  activation fee covers the activation month). Its SKUs are the editions of the price list.
- ``licence``: licence-based subscriptions with a term (P1M, P1Y, P3Y) and a billing frequency
  (monthly, annual, triennial), billed in advance for each billing period.

Prices live in the versioned price list (``pricing.py``): one price per SKU x term x billing frequency
and currency, the price of one unit for one billing period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum


class Term(StrEnum):
    P1M = "P1M"
    P1Y = "P1Y"
    P3Y = "P3Y"

    @property
    def months(self) -> int:
        return {"P1M": 1, "P1Y": 12, "P3Y": 36}[self.value]


class BillingFrequency(StrEnum):
    """How often a term is billed (the "billing plan" of Microsoft's Partner Center)."""

    MONTHLY = "monthly"
    ANNUAL = "annual"
    TRIENNIAL = "triennial"

    @property
    def months(self) -> int:
        return {"monthly": 1, "annual": 12, "triennial": 36}[self.value]


@dataclass(frozen=True, order=True)
class Cycle:
    """A term together with its billing frequency, e.g. P3Y billed annually."""

    term: Term
    frequency: BillingFrequency

    def __post_init__(self) -> None:
        if self.frequency.months > self.term.months or self.term.months % self.frequency.months:
            raise ValueError(f"a {self.term.value} term cannot be billed {self.frequency.value}")

    @property
    def upfront(self) -> bool:
        """The billing period is the whole term (P1M monthly, P1Y annual, P3Y triennial): offered only at
        purchase, or as part of an immediate term change where the matrix lists it."""
        return self.frequency.months == self.term.months

    def __str__(self) -> str:
        return f"{self.term.value}/{self.frequency.value}"


# Every term x billing-frequency combination that exists (the six rows of the seed's matrices).
ALL_CYCLES: tuple[Cycle, ...] = tuple(
    Cycle(term, frequency)
    for term in Term
    for frequency in BillingFrequency
    if frequency.months <= term.months and term.months % frequency.months == 0
)


class ProductKind(StrEnum):
    USAGE = "usage"  # metered seats, billed monthly in arrears (the monthly MSP plan)
    LICENCE = "licence"  # licences with a term, billed in advance per billing period

    @property
    def billed_in_advance(self) -> bool:
        return self is ProductKind.LICENCE


@dataclass(frozen=True)
class Sku:
    code: str
    name: str
    product: str
    # For an add-on: the SKU codes it may be bought with (its subscription follows its base's cycle).
    add_on_for: frozenset[str] = frozenset()
    # A free trial is not a paid subscription: it cannot change its billing frequency.
    trial: bool = False

    @property
    def is_add_on(self) -> bool:
        return bool(self.add_on_for)


@dataclass(frozen=True)
class Product:
    code: str
    name: str
    kind: ProductKind
    skus: tuple[str, ...]


@dataclass(frozen=True)
class Promotion:
    """A percentage off the list price of some SKUs and cycles while it runs (dates inclusive). Eligible
    promotions apply automatically: at purchase, and again after a change removed the old one."""

    code: str
    description: str
    skus: frozenset[str]
    cycles: frozenset[Cycle]
    percent_off_basis_points: int  # 2000 = 20 %
    starts_on: date
    ends_on: date

    def active_on(self, day: date) -> bool:
        return self.starts_on <= day <= self.ends_on

    def applies_to(self, sku: str, cycle: Cycle, day: date) -> bool:
        return sku in self.skus and cycle in self.cycles and self.active_on(day)


@dataclass(frozen=True)
class Catalog:
    products: dict[str, Product]
    skus: dict[str, Sku] = field(default_factory=dict)

    def product_of(self, sku: str) -> Product:
        return self.products[self.skus[sku].product]
