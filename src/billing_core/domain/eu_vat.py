"""EU VAT on what a vendor invoices to a business (seed 004): which tax an invoice carries, decided from
the bill-to party, with the evidence kept.

- A VAT id is validated offline (``python-stdnum``: format and checksum per member state); the result and
  when it was checked are recorded. An online VIES check is an adapter's job and never blocks a sale.
- Reverse charge (0 %, with the legal note) for a valid VAT id of another EU member state than the
  vendor's; no EU VAT (0 %, with its note) for a buyer outside the EU; the vendor's domestic rate
  otherwise (a buyer in the vendor's country, or an EU buyer without a valid VAT id: OSS rates per buyer
  country are not modelled yet).
- Rates are versioned data (``VatRates``), tax per rate is one rounding of the net (``proration.scale``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from stdnum.eu import vat as eu_vat
from stdnum.exceptions import ValidationError as StdnumValidationError

from billing_core.domain.calendar import require_utc
from billing_core.domain.errors import InvalidRequest
from billing_core.domain.money import Money
from billing_core.domain.proration import scale

BASIS_POINTS = 10_000
# ISO 3166 country codes of the member states; Greece's VAT ids start with EL, not GR.
EU_COUNTRIES = frozenset(
    [
        "AT",
        "BE",
        "BG",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "ES",
        "FI",
        "FR",
        "GR",
        "HR",
        "HU",
        "IE",
        "IT",
        "LT",
        "LU",
        "LV",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
    ]
)
VAT_PREFIX = {"GR": "EL"}


class TaxTreatment(StrEnum):
    DOMESTIC = "domestic"  # the vendor's VAT rate
    REVERSE_CHARGE = "reverse_charge"  # the buyer accounts for the VAT (Art. 196 VAT Directive)
    OUTSIDE_EU = "outside_eu"  # the place of supply is outside the EU: no EU VAT


LEGAL_NOTES = {
    TaxTreatment.REVERSE_CHARGE: {
        "de": "Steuerschuldnerschaft des Leistungsempfängers (Reverse Charge, Art. 196 MwStSystRL)",
        "en": "Reverse charge: VAT to be accounted for by the recipient (Art. 196 Council Directive 2006/112/EC)",
    },
    TaxTreatment.OUTSIDE_EU: {
        "de": "Nicht im Inland steuerbare Leistung (Leistungsort außerhalb der EU)",
        "en": "Not subject to EU VAT: the place of supply is outside the EU",
    },
}


@dataclass(frozen=True)
class VatIdCheck:
    """The evidence of a VAT id's validation, kept on the invoice."""

    vat_id: str  # compacted, e.g. DE136695976
    valid: bool
    country: str | None  # ISO country of the id's prefix, when valid
    checked_at: datetime
    method: str = "offline"  # "offline" (format and checksum) or "vies" (with a consultation number)
    consultation_number: str | None = None


def check_vat_id(vat_id: str, now: datetime) -> VatIdCheck:
    """Validate a VAT id offline (format and checksum of its member state)."""
    try:
        compact = eu_vat.compact(vat_id)
        valid = bool(eu_vat.is_valid(compact))
    except StdnumValidationError:
        compact, valid = vat_id.strip().upper(), False
    prefix = compact[:2]
    country = {v: k for k, v in VAT_PREFIX.items()}.get(prefix, prefix) if valid else None
    return VatIdCheck(compact, valid, country, require_utc(now))


@dataclass(frozen=True)
class VatRates:
    """Standard VAT rates per member state, in basis points (1900 = 19 %), in effect from a day."""

    version: str
    effective_from: date
    standard_basis_points: dict[str, int]

    def standard(self, country: str) -> int:
        try:
            return self.standard_basis_points[country]
        except KeyError:
            raise InvalidRequest.for_field("country", f"no VAT rate for {country} in rates {self.version}") from None


@dataclass(frozen=True)
class TaxDecision:
    treatment: TaxTreatment
    rate_basis_points: int
    legal_note: dict[str, str]  # per language, empty for domestic VAT
    vat_id_check: VatIdCheck | None

    def tax_on(self, net: Money) -> Money:
        """The tax of a net amount at this rate (one rounding, half to even)."""
        return Money(scale(net.amount_minor, self.rate_basis_points, BASIS_POINTS), net.currency)


def decide_tax(
    *,
    vendor_country: str,
    buyer_country: str,
    vat_id_check: VatIdCheck | None,
    rates: VatRates,
) -> TaxDecision:
    """The tax treatment of an invoice to ``buyer_country`` (the bill-to party's address)."""
    vendor, buyer = vendor_country.upper(), buyer_country.upper()
    if vendor not in EU_COUNTRIES:
        raise ValueError(f"the vendor's country {vendor} is not an EU member state")
    if buyer not in EU_COUNTRIES:
        treatment = TaxTreatment.OUTSIDE_EU
    elif buyer != vendor and vat_id_check is not None and vat_id_check.valid and vat_id_check.country == buyer:
        treatment = TaxTreatment.REVERSE_CHARGE
    else:
        treatment = TaxTreatment.DOMESTIC
    rate = rates.standard(vendor) if treatment is TaxTreatment.DOMESTIC else 0
    return TaxDecision(treatment, rate, LEGAL_NOTES.get(treatment, {}), vat_id_check)
