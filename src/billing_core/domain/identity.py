"""Who is calling: a partner user with a role, as asserted by the authorizer's claims."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from billing_core.domain.errors import Forbidden


class Role(StrEnum):
    OWNER = "owner"
    BILLING_ADMIN = "billing-admin"
    TECHNICIAN = "technician"


# Activating, cancelling and seeing billing (plan status, invoices) is reserved to these roles.
BILLING_ROLES = frozenset({Role.OWNER, Role.BILLING_ADMIN})


@dataclass(frozen=True)
class PartnerIdentity:
    partner_id: str
    role: Role
    subject: str
    email: str | None = None

    def require_billing_rights(self) -> None:
        if self.role not in BILLING_ROLES:
            allowed = ", ".join(sorted(BILLING_ROLES))
            raise Forbidden(f"role {self.role.value!r} may not manage billing; allowed roles: {allowed}")
