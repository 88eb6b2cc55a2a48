"""Billing calendar: calendar months in UTC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


def require_utc(moment: datetime) -> datetime:
    """Every timestamp is an aware instant, normalised to UTC; naive datetimes are refused because
    their month would depend on the machine's time zone."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"timestamp must be timezone-aware, got {moment!r}")
    return moment.astimezone(UTC)


def to_iso(moment: datetime) -> str:
    return require_utc(moment).isoformat().replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return require_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


@dataclass(frozen=True, order=True)
class BillingMonth:
    year: int
    month: int

    def __post_init__(self) -> None:
        if not 1 <= self.month <= 12:
            raise ValueError(f"month out of range: {self.month}")

    @classmethod
    def containing(cls, moment: datetime) -> BillingMonth:
        moment = require_utc(moment)
        return cls(moment.year, moment.month)

    @classmethod
    def containing_date(cls, day: date) -> BillingMonth:
        return cls(day.year, day.month)

    @classmethod
    def parse(cls, text: str) -> BillingMonth:
        """``YYYY-MM``."""
        year_text, _, month_text = text.partition("-")
        if len(year_text) != 4 or len(month_text) != 2:
            raise ValueError(f"expected YYYY-MM, got {text!r}")
        return cls(int(year_text), int(month_text))

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def next(self) -> BillingMonth:
        return BillingMonth(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> BillingMonth:
        return BillingMonth(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    @property
    def first_day(self) -> date:
        return date(self.year, self.month, 1)

    @property
    def last_day(self) -> date:
        return self.next().first_day - timedelta(days=1)

    @property
    def starts_at(self) -> datetime:
        return datetime(self.year, self.month, 1, tzinfo=UTC)
