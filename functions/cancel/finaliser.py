"""Lambda entry point of the cancellation finaliser (Handler: finaliser.end_plan).

Invoked by the one-time EventBridge Scheduler schedule a cancellation creates, at 00:00 UTC after the
plan's last day. A stale or repeated firing changes nothing; an error makes the scheduler retry (with
backoff, for up to a day) and then park the event in the schedule DLQ, so no end date is lost.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from billing_core.messages import PlanEndEvent
from billing_core.observability import logger
from billing_core.wiring import services


@logger.inject_lambda_context
def end_plan(event: dict[str, Any], context: LambdaContext) -> dict[str, str]:
    request = PlanEndEvent.model_validate(event)
    outcome = services().cancellation.end_plan_as_scheduled(request.partner_id, request.ends_on)
    logger.info(
        "plan-end schedule fired",
        extra={"partner_id": request.partner_id, "ends_on": request.ends_on.isoformat(), "outcome": outcome.value},
    )
    return {"partner_id": request.partner_id, "ends_on": request.ends_on.isoformat(), "outcome": outcome.value}
