"""Lambda entry points of the monthly charge run.

* ``app.dispatch`` (EventBridge schedule at 00:05 UTC on the 1st, 3rd, 5th and 7th; or an operator's
  event ``{"month": "YYYY-MM"}``): queue one charge message per live plan.
* ``app.charge`` (the charge queue): charge each partner in the batch for the month; a failure fails
  only that message (partial batch failure), which SQS retries and finally moves to the DLQ.
"""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from billing_core.domain.calendar import BillingMonth
from billing_core.observability import BusinessMetric, business_metrics, count_charge, logger, publishes_metrics
from billing_core.sqs_batch import QueueMessage, partial_batch_response
from billing_core.wiring import services

MONTH_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])$"


class MonthlyRunEvent(BaseModel):
    """A scheduled event (no month: the previous month) or an operator's run for a given month."""

    model_config = ConfigDict(extra="ignore")

    month: str | None = Field(default=None, pattern=MONTH_PATTERN)


class ChargeMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partner_id: str = Field(min_length=1, max_length=128)
    month: str = Field(pattern=MONTH_PATTERN)


@logger.inject_lambda_context
@publishes_metrics
def dispatch(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    run = MonthlyRunEvent.model_validate(event)
    month, dispatched = services().monthly_run.dispatch_monthly_run(
        BillingMonth.parse(run.month) if run.month else None
    )
    logger.info("monthly run dispatched", extra={"month": str(month), "partners": dispatched})
    # The missed-monthly-run alarm expects this on the 1st by 01:00 UTC.
    business_metrics.count(BusinessMetric.MONTHLY_RUN_DISPATCHED)
    business_metrics.count(BusinessMetric.PARTNERS_QUEUED, dispatched)
    return {"month": str(month), "partners": dispatched}


def charge_one(record: QueueMessage) -> None:
    message = ChargeMessage.model_validate_json(record.body)
    wired = services()
    started = wired.clock.now()
    invoice = wired.monthly_charge.charge_partner_for_month(message.partner_id, BillingMonth.parse(message.month))
    count_charge(invoice, since=started)
    logger.info(
        "partner charged",
        extra={
            "partner_id": message.partner_id,
            "month": message.month,
            "status": invoice.status.value if invoice else "not_billable",
            "total_minor": invoice.total.amount_minor if invoice else 0,
        },
    )


@logger.inject_lambda_context
@publishes_metrics
def charge(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return partial_batch_response(event, charge_one)
