"""Audit events: every state change appends one, in the same write as the change."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class AuditEvent:
    partner_id: str
    event_type: str
    occurred_at: datetime
    actor: str
    details: dict[str, Any] = field(default_factory=dict)
