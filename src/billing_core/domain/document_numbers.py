"""Gapless document numbers (invoices and credit notes, issue 15): German bookkeeping needs every number
of a sequence used exactly once, none skipped. A number is taken only together with the record of the
document it belongs to (one conditional write of both), so a retry of the same document gets the same
number and no number is ever lost to a crash or a race.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class DocumentKind(StrEnum):
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"

    @property
    def prefix(self) -> str:
        return {"invoice": "RE", "credit_note": "GS"}[self.value]  # Rechnung, Gutschrift


_SEQUENCE = re.compile(r"^[A-Z0-9_-]{1,40}$")


@dataclass(frozen=True)
class DocumentNumber:
    kind: DocumentKind
    year: int  # one sequence per kind and calendar year (numbers restart at 1 each year)
    sequence: int

    def __post_init__(self) -> None:
        if self.sequence < 1:
            raise ValueError("document numbers start at 1")

    def __str__(self) -> str:
        return f"{self.kind.prefix}-{self.year}-{self.sequence:06d}"

    @property
    def sequence_name(self) -> str:
        return f"{self.kind.value}-{self.year}"


def sequence_name(kind: DocumentKind, year: int) -> str:
    name = f"{kind.value}-{year}"
    if not _SEQUENCE.match(name.upper()):
        raise ValueError(f"not a sequence name: {name}")
    return name
