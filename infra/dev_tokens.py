"""Development tokens for the local partner API.

In AWS, API Gateway's Cognito authorizer verifies the user pool's ID token and hands its claims to the
function. Locally, Chalice's server decodes the claims of a Bearer JWT for the routes that name the
Cognito authorizer (it does not verify signatures), so a token shaped like a Cognito ID token is all a
developer needs. These tokens are HS256-signed with a local secret only so they look and parse like
real JWTs; they grant nothing outside the local server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

from billing_core.domain.identity import Role

LOCAL_SIGNING_SECRET = b"msp-billing-local-development-only"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def development_token(partner_id: str, role: Role | str, *, ttl_s: int = 12 * 3600, subject: str | None = None) -> str:
    """A token for ``partner_id`` in ``role`` (any string, so tests can present roles that do not exist)."""
    role_name = str(role.value if isinstance(role, Role) else role)
    now = int(time.time())
    claims = {
        "sub": subject or f"user-{uuid.uuid5(uuid.NAMESPACE_URL, f'{partner_id}/{role_name}')}",
        "cognito:username": f"{role_name}@{partner_id}.example",
        "email": f"{role_name}@{partner_id}.example",
        "custom:partner_id": partner_id,
        "custom:role": role_name,
        "token_use": "id",
        "iss": "msp-billing-local",
        "iat": now,
        "exp": now + ttl_s,
    }
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(LOCAL_SIGNING_SECRET, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url(signature)}"
