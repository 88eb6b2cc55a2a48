"""Domain errors. Each carries a stable machine-readable ``code``; the API layer maps the class to a status."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldProblem:
    field: str
    message: str


class BillingError(Exception):
    code = "billing_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidRequest(BillingError):
    """The request is well-formed JSON but breaks a rule about one or more fields (HTTP 422)."""

    code = "invalid_request"

    def __init__(self, problems: list[FieldProblem]) -> None:
        names = ", ".join(p.field for p in problems)
        super().__init__(f"invalid field(s): {names}")
        self.problems = problems

    @classmethod
    def for_field(cls, field_name: str, message: str) -> InvalidRequest:
        return cls([FieldProblem(field_name, message)])


class NotFound(BillingError):
    code = "not_found"


class Conflict(BillingError):
    code = "conflict"


class PlanAlreadyActive(Conflict):
    code = "plan_already_active"


class PlanNotActive(Conflict):
    code = "plan_not_active"


class PlanPastDue(PlanNotActive):
    """The plan has a past-due invoice: no workspace joins it until the partner settles it."""

    code = "plan_past_due"


class UnpaidInvoice(Conflict):
    """An invoice of the partner is unpaid: it must be settled before the plan is active again."""

    code = "unpaid_invoice"


class ActivationInProgress(Conflict):
    code = "activation_in_progress"


class AuthenticationPending(Conflict):
    """An activation's payment awaits the customer's authentication (3-D Secure); another activation must wait."""

    code = "authentication_pending"


class PaymentDeclined(BillingError):
    """The provider refused the payment (HTTP 402). ``decline_code`` is the provider-neutral reason."""

    code = "payment_declined"

    def __init__(self, message: str, *, decline_code: str) -> None:
        super().__init__(message)
        self.decline_code = decline_code


class Unauthenticated(BillingError):
    code = "unauthenticated"


class Forbidden(BillingError):
    code = "forbidden"


class ConcurrentModification(Conflict):
    code = "concurrent_modification"


class IdempotencyKeyReused(InvalidRequest):
    """The Idempotency-Key was used before with a different request body (HTTP 422)."""

    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__([FieldProblem("Idempotency-Key", "this key was already used with a different request body")])


class RequestInProgress(Conflict):
    code = "request_in_progress"


class BadRequest(BillingError):
    """The request cannot be read at all: not JSON, or a required header missing (HTTP 400)."""

    code = "bad_request"


class TransientFailure(BillingError):
    """A dependency failed in a way worth retrying (throttling, timeouts): the work is retried, not rejected."""

    code = "transient_failure"


class PaymentAttemptInProgress(TransientFailure):
    """Another worker holds the lease on this payment attempt: this one backs off (retried later) and never
    calls the payment provider."""

    code = "payment_attempt_in_progress"
