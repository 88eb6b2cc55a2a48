"""Dates and timestamps as they must arrive in requests and messages: ISO 8601 text only.

pydantic parses a string of digits as a Unix time even in strict mode ("1806451200" became a date in
2027); in a billing API that is a typo or an attack, never a date. These types refuse anything but ISO
8601 text, with the field named in the error, and parse it themselves (so strict fields accept it).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _iso_date_text(value: Any) -> Any:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value  # built in code, not parsed
    if not isinstance(value, str) or not _ISO_DATE.match(value):
        raise ValueError("must be an ISO 8601 date, YYYY-MM-DD")
    return date.fromisoformat(value)  # out of range (month 13, day 32): a ValueError naming the field


def _iso_datetime_text(value: Any) -> Any:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATETIME.match(value):
        raise ValueError("must be an ISO 8601 timestamp with a time zone, e.g. 2026-11-22T14:03:00Z")
    return datetime.fromisoformat(value)  # out of range: a ValueError naming the field


IsoDate = Annotated[date, BeforeValidator(_iso_date_text)]
IsoAwareDatetime = Annotated[AwareDatetime, BeforeValidator(_iso_datetime_text)]
