"""Money as integer minor units plus an ISO-4217 code. Floats never enter."""

from __future__ import annotations

from dataclasses import dataclass

# Minor-unit exponent per supported currency (ISO 4217). Extend together with the price list.
CURRENCY_EXPONENTS: dict[str, int] = {"USD": 2, "EUR": 2}


class CurrencyMismatch(ValueError):
    pass


@dataclass(frozen=True, order=True)
class Money:
    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if type(self.amount_minor) is not int:
            raise TypeError("Money.amount_minor must be an int of minor units")
        if self.currency not in CURRENCY_EXPONENTS:
            raise ValueError(f"unsupported currency {self.currency!r}")

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    def __add__(self, other: Money) -> Money:
        self._require_same_currency(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def times(self, quantity: int) -> Money:
        if type(quantity) is not int:
            raise TypeError("quantity must be an int")
        return Money(self.amount_minor * quantity, self.currency)

    def _require_same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"{self.currency} vs {other.currency}")

    def format(self) -> str:
        """Human-readable, e.g. ``USD 10.00``; for display only, never parsed back."""
        exponent = CURRENCY_EXPONENTS[self.currency]
        sign = "-" if self.amount_minor < 0 else ""
        units, minor = divmod(abs(self.amount_minor), 10**exponent)
        return f"{self.currency} {sign}{units}.{minor:0{exponent}d}"

    def to_dict(self) -> dict[str, int | str]:
        return {"amount_minor": self.amount_minor, "currency": self.currency, "display": self.format()}
