"""Shared pieces of every partner-API blueprint.

Handlers stay thin: ``partner_identity`` (claims), ``parse_body`` (pydantic), one service call,
``json_response``. ``answers_errors`` turns domain errors into the documented statuses, so a view never
builds an error response by hand and bad input never becomes a 5xx.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from chalice.app import CognitoUserPoolAuthorizer, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pynamodb.exceptions import PynamoDBException, TransactWriteError

from billing_core.adapters.dynamodb.retryable import RETRYABLE_CODES
from billing_core.domain.errors import (
    BadRequest,
    BillingError,
    Conflict,
    FieldProblem,
    Forbidden,
    InvalidRequest,
    NotFound,
    PaymentDeclined,
    TransientFailure,
    Unauthenticated,
)
from billing_core.domain.identity import PartnerIdentity, Role
from billing_core.domain.payments import PaymentProviderUnavailable
from billing_core.observability import logger

ModelT = TypeVar("ModelT", bound=BaseModel)

# Claims the Cognito user pool puts into the ID token (custom attributes only an admin can write).
PARTNER_ID_CLAIM = "custom:partner_id"
ROLE_CLAIM = "custom:role"

# Used by API Gateway in AWS (declared in template.yaml); Chalice's local server decodes the token's
# claims the same way for the routes that name it.
partner_authorizer = CognitoUserPoolAuthorizer("PartnerUserPool", provider_arns=["local-development"])

STATUS_BY_ERROR: tuple[tuple[type[BillingError], int], ...] = (
    (BadRequest, 400),
    (Unauthenticated, 401),
    (PaymentDeclined, 402),
    (Forbidden, 403),
    (NotFound, 404),
    (Conflict, 409),
    (InvalidRequest, 422),
    (PaymentProviderUnavailable, 503),
    (TransientFailure, 503),
)


def status_for(error: BillingError) -> int:
    for error_type, status in STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return status
    return 400


class FieldErrorDetail(BaseModel):
    field: str = Field(description="The field, header or parameter, e.g. max_devices or Idempotency-Key")
    message: str


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. plan_not_active or card_declined")
    message: str
    fields: list[FieldErrorDetail] | None = Field(default=None, description="Each field's problem (422 only)")
    decline_code: str | None = Field(default=None, description="Why the payment was declined (402 only)")


class ErrorResponse(BaseModel):
    """The body of every error answer of the partner API (API Gateway's own answers too: template.yaml,
    GatewayResponses)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "invalid_request",
                        "message": "the request has invalid fields",
                        "fields": [{"field": "max_devices", "message": "Input should be less than or equal to 10000"}],
                    }
                },
                {
                    "error": {
                        "code": "payment_declined",
                        "message": "Your card was declined.",
                        "decline_code": "card_declined",
                    }
                },
                {
                    "error": {
                        "code": "unauthenticated",
                        "message": "a valid partner token is required (Authorization header)",
                    }
                },
            ]
        }
    )

    error: ErrorDetail


def error_response(error: BillingError) -> Response:
    detail = ErrorDetail(code=error.code, message=error.message)
    if isinstance(error, InvalidRequest):
        detail.fields = [FieldErrorDetail(field=p.field, message=p.message) for p in error.problems]
    if isinstance(error, PaymentDeclined):
        detail.decline_code = error.decline_code
    status = status_for(error)
    headers: dict[str, str | list[str]] = {"Content-Type": "application/json"}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    body = ErrorResponse(error=detail).model_dump(mode="json", exclude_none=True)
    return Response(body=body, status_code=status, headers=headers)


def json_response(payload: BaseModel | Sequence[BaseModel], status_code: int = 200) -> Response:
    if not isinstance(payload, BaseModel):
        body: Any = {"items": [item.model_dump(mode="json") for item in payload]}
    else:
        body = payload.model_dump(mode="json")
    return Response(body=body, status_code=status_code, headers={"Content-Type": "application/json"})


ViewT = TypeVar("ViewT", bound=Callable[..., Response])


def answers_errors(view: ViewT) -> ViewT:
    """Map domain errors to their status. Anything else is a real server error and is logged."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        try:
            return view(*args, **kwargs)
        except BillingError as error:
            logger.info("request refused", extra={"error_code": error.code, "status": status_for(error)})
            return error_response(error)
        except PynamoDBException as error:
            if not is_throttled(error):
                raise
            logger.warning("request throttled", extra={"cause": error.cause_response_code})
            return error_response(TransientFailure("the database is busy; retry the request"))

    return wrapper  # type: ignore[return-value]


def is_throttled(error: PynamoDBException) -> bool:
    """DynamoDB refused for load, not for the request: the same request may succeed when retried."""
    if error.cause_response_code in RETRYABLE_CODES:
        return True
    reasons = error.cancellation_reasons if isinstance(error, TransactWriteError) else []
    return any(reason is not None and reason.code in ("ThrottlingError", "TransactionConflict") for reason in reasons)


def partner_identity(request: Request, *, billing: bool = False) -> PartnerIdentity:
    """The caller as the authorizer asserted it. ``billing=True`` also requires a billing role."""
    authorizer = (request.context or {}).get("authorizer") or {}
    claims = authorizer.get("claims") or {}
    partner_id = claims.get(PARTNER_ID_CLAIM)
    if not partner_id:
        raise Unauthenticated("a partner token is required (Authorization header)")
    # A claim no partner can have (too long to be a key, or not text) is refused before it reaches the store,
    # which would reject it with an error the caller could only see as a 500.
    if not isinstance(partner_id, str) or len(partner_id) > MAX_PATH_ID_LENGTH:
        raise Forbidden(f"the {PARTNER_ID_CLAIM} claim is not a partner id (at most {MAX_PATH_ID_LENGTH} characters)")
    try:
        role = Role(claims.get(ROLE_CLAIM, ""))
    except ValueError:
        raise Forbidden(f"unknown role {claims.get(ROLE_CLAIM)!r}") from None
    identity = PartnerIdentity(
        partner_id=str(partner_id),
        role=role,
        subject=str(claims.get("sub") or claims.get("cognito:username") or partner_id),
        email=str(claims["email"]) if claims.get("email") else None,
    )
    if billing:
        identity.require_billing_rights()
    return identity


def parse_body(request: Request, model: type[ModelT]) -> ModelT:
    raw = request.raw_body or b""
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as error:
        raise BadRequest(f"request body is not valid JSON: {error}") from None
    except RecursionError:
        raise BadRequest("request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    try:
        # JSON mode, so strict fields accept exactly their JSON form: a boolean is true/false (not "yes"), a date
        # is "YYYY-MM-DD" (not a number or a timestamp).
        return model.model_validate_json(raw if raw.strip() else b"{}")
    except ValidationError as error:
        raise InvalidRequest([_field_problem(detail) for detail in error.errors()]) from None


def _field_problem(detail: Any) -> FieldProblem:
    location = ".".join(str(part) for part in detail.get("loc", ())) or "body"
    return FieldProblem(location, str(detail.get("msg", "invalid value")))


# Longer than any id we issue (``ws_`` + 32 hex digits), far below DynamoDB's key size limits.
MAX_PATH_ID_LENGTH = 128


def path_id(value: str, what: str) -> str:
    """An id from the path. One no resource can have (empty, or too long to be a key) is not found, without
    asking the store (which refuses such keys with an error)."""
    if not value or len(value) > MAX_PATH_ID_LENGTH:
        raise NotFound(f"{what} not found")
    return value


def required_header(request: Request, name: str) -> str:
    value = str(request.headers.get(name) or "") if request.headers else ""  # case-insensitive mapping
    if not value or not value.strip():
        raise BadRequest(f"the {name} header is required")
    if len(value) > 255:
        raise InvalidRequest.for_field(name, "must be at most 255 characters")
    return value.strip()
