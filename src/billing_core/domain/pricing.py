"""Versioned price lists. A price list never changes once published; a new version is added instead,
so every charge can name the exact prices it used."""

from __future__ import annotations

from dataclasses import dataclass

from billing_core.domain.errors import InvalidRequest
from billing_core.domain.money import Money


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


PRICE_LIST_2026_01 = PriceList(
    version="2026-01",
    activation_fee_minor={"USD": 1000, "EUR": 1000},
    editions={
        "anti-malware": Edition("anti-malware", "Anti-Malware", {"USD": 250, "EUR": 230}),
        "business-security": Edition("business-security", "Business Security", {"USD": 350, "EUR": 320}),
        "enterprise-security": Edition("enterprise-security", "Enterprise Security", {"USD": 450, "EUR": 410}),
    },
)

PRICE_LISTS: dict[str, PriceList] = {PRICE_LIST_2026_01.version: PRICE_LIST_2026_01}


def price_list(version: str) -> PriceList:
    try:
        return PRICE_LISTS[version]
    except KeyError:
        raise ValueError(f"unknown price list version {version!r}; known: {', '.join(PRICE_LISTS)}") from None
