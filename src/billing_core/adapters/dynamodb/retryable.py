"""DynamoDB error codes after which the same request may succeed (throttling, server errors, conflicts).

A module of its own so the API's error mapping (api.http) can tell a busy table from a bad request without
importing the usage store and its models.
"""

from __future__ import annotations

RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
    }
)
