"""Classifying AWS client errors: which are worth retrying (the same request may succeed later)."""

from __future__ import annotations

from botocore.exceptions import ClientError

# Throttling and server-side error codes of the services we call (S3, SES, SQS).
RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
    }
)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_retryable(error: ClientError) -> bool:
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return error_code(error) in RETRYABLE_CODES or status >= 500 or status == 429
