"""IdempotencyGuard on Powertools Idempotency with its DynamoDB persistence layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.serialization.pydantic import PydanticSerializer
from pydantic import BaseModel

from billing_core.domain.errors import IdempotencyKeyReused, RequestInProgress

CommandT = TypeVar("CommandT", bound=BaseModel)
OutcomeT = TypeVar("OutcomeT", bound=BaseModel)


class PowertoolsIdempotencyGuard:
    def __init__(self, table_name: str, expires_after_seconds: int) -> None:
        self._persistence = DynamoDBPersistenceLayer(table_name=table_name)
        # The key is the partner plus the client's Idempotency-Key; the stored hash of ``request``
        # detects a key reused with another body.
        self._config = IdempotencyConfig(
            event_key_jmespath="[partner_id, idempotency_key]",
            payload_validation_jmespath="request",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=expires_after_seconds,
        )

    def register_lambda_context(self, lambda_context: Any) -> None:
        """Lets an in-progress record expire with the invocation that wrote it, so a crashed run can
        be retried with the same key instead of answering 'in progress' until the record expires."""
        if lambda_context is not None and hasattr(lambda_context, "get_remaining_time_in_millis"):
            self._config.register_lambda_context(lambda_context)

    def run_once(
        self,
        operation: str,
        function: Callable[[CommandT], OutcomeT],
        command: CommandT,
        outcome_type: type[OutcomeT],
    ) -> OutcomeT:
        def call(*, command: CommandT) -> OutcomeT:
            return function(command)

        guarded = idempotent_function(
            call,
            data_keyword_argument="command",
            persistence_store=self._persistence,
            config=self._config,
            output_serializer=PydanticSerializer(outcome_type),
            key_prefix=operation,
        )
        try:
            outcome: OutcomeT = guarded(command=command)
        except IdempotencyValidationError:
            raise IdempotencyKeyReused() from None
        except IdempotencyAlreadyInProgressError:
            raise RequestInProgress(
                "a request with this Idempotency-Key is still being processed; retry shortly"
            ) from None
        return outcome
