"""Small helpers shared by integration and e2e tests."""

from __future__ import annotations

import json
import uuid
from typing import Any

from billing_core.domain.identity import Role
from infra.dev_tokens import development_token


def new_partner_id() -> str:
    return f"p-{uuid.uuid4().hex[:12]}"


def auth_headers(partner_id: str, role: Role | str = Role.OWNER, **extra: str) -> dict[str, str]:
    return {"Authorization": development_token(partner_id, role), "Content-Type": "application/json", **extra}


def body(data: Any) -> str:
    return json.dumps(data)
