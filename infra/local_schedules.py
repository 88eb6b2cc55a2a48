"""Schedules on the local stack: the ``Schedule`` events of template.yaml (EventBridge cron rules) and the
one-time EventBridge Scheduler schedules the system creates at run time (kept by the moto server), fired
by the local test clock in time order, with the real handlers.

Firing follows AWS: a rule's target is invoked asynchronously (Lambda retries a failing invocation
twice); a Scheduler target gets the function's ``EventInvokeConfig`` retries and then its failure
destination or the schedule's DLQ; ``ActionAfterCompletion: DELETE`` removes a fired one-time schedule.
"""

from __future__ import annotations

import calendar
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from billing_core.domain.calendar import to_iso
from infra.local_clock import LocalClock
from infra.template import MOTO_ACCOUNT_ID, MOTO_REGION, LocalNames, resources_of_type

log = logging.getLogger("msp-billing.local")
Invoke = Callable[[str, dict[str, Any]], Any]

_MONTHS = {name.upper(): index for index, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"SUN": 1, "MON": 2, "TUE": 3, "WED": 4, "THU": 5, "FRI": 6, "SAT": 7}  # AWS: 1 = Sunday
_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
DEFAULT_ASYNC_RETRIES = 2  # Lambda's default for asynchronous invocations


def _field(text: str, low: int, high: int, names: dict[str, int] | None = None) -> frozenset[int] | None:
    """One field of an AWS cron expression: ``*``, ``?`` (None: no constraint), lists, ranges, steps."""
    if text == "?":
        return None
    values: set[int] = set()
    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            first, last = low, high
        elif "-" in base:
            start, end = base.split("-", 1)
            first, last = _value(start, names), _value(end, names)
        else:
            first = _value(base, names)
            last = high if step_text else first
        if not low <= first <= last <= high:
            raise ValueError(f"cron field {text!r} is out of range {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _value(text: str, names: dict[str, int] | None) -> int:
    if names and text.upper()[:3] in names:
        return names[text.upper()[:3]]
    if not text.isdigit():
        raise ValueError(f"unsupported cron value {text!r} (L, W and # are not supported locally)")
    return int(text)


@dataclass(frozen=True)
class AwsCron:
    """``cron(minutes hours day-of-month month day-of-week year)``, UTC, as EventBridge reads it."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int] | None
    months: frozenset[int]
    days_of_week: frozenset[int] | None
    years: frozenset[int] | None

    @classmethod
    def parse(cls, expression: str) -> AwsCron:
        match = re.fullmatch(r"cron\((.+)\)", expression.strip())
        fields = match.group(1).split() if match else []
        if len(fields) != 6:
            raise ValueError(f"not an AWS cron expression: {expression!r}")
        minutes, hours, dom, month, dow, year = fields
        return cls(
            expression,
            _field(minutes, 0, 59) or frozenset(range(60)),
            _field(hours, 0, 23) or frozenset(range(24)),
            _field(dom, 1, 31),
            _field(month, 1, 12, _MONTHS) or frozenset(range(1, 13)),
            _field(dow, 1, 7, _DAYS),
            None if year == "*" else _field(year, 1970, 2199),
        )

    def _matches_day(self, day: date) -> bool:
        aws_weekday = (day.isoweekday() % 7) + 1  # Sunday -> 1 ... Saturday -> 7
        return (
            day.month in self.months
            and (self.years is None or day.year in self.years)
            and (self.days_of_month is None or day.day in self.days_of_month)
            and (self.days_of_week is None or aws_weekday in self.days_of_week)
        )

    def next_after(self, moment: datetime) -> datetime | None:
        """The first firing strictly after ``moment`` (None within the next ten years)."""
        start = moment.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = start.date()
        for _ in range(366 * 10):
            if self._matches_day(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)
                        if candidate >= start:
                            return candidate
            day += timedelta(days=1)
        return None


@dataclass(frozen=True)
class CronRule:
    function_logical_id: str
    event_name: str
    cron: AwsCron


def template_cron_rules(template: dict[str, Any]) -> list[CronRule]:
    """Every ``Schedule`` event of every function in template.yaml."""
    rules = []
    for logical_id, function in resources_of_type(template, "AWS::Serverless::Function").items():
        for event_name, event in function.get("Properties", {}).get("Events", {}).items():
            if event.get("Type") == "Schedule" and event["Properties"].get("Enabled", True):
                rules.append(CronRule(logical_id, event_name, AwsCron.parse(event["Properties"]["Schedule"])))
    return rules


@dataclass(frozen=True)
class DueEvent:
    at: datetime
    description: str
    fire: Callable[[], None]


class LocalScheduleRuntime:
    """Fires what is due on the local clock, oldest first. ``drain`` waits until the queue-triggered
    functions have consumed what a firing queued, so a later firing sees its effects (as the real
    system's hours between the 1st 00:05 and the next schedule would)."""

    def __init__(
        self,
        template: dict[str, Any],
        names: LocalNames,
        clock: LocalClock,
        scheduler: Any,
        sqs: Any,
        invoke: Invoke,
        drain: Callable[[], object],
    ) -> None:
        self.template = template
        self.names = names
        self.clock = clock
        self._scheduler = scheduler
        self._sqs = sqs
        self._invoke = invoke
        self._drain = drain
        self.rules = template_cron_rules(template)
        functions = resources_of_type(template, "AWS::Serverless::Function")
        self._function_by_arn = {
            names.arn(logical_id, "AWS::Serverless::Function"): logical_id for logical_id in functions
        }
        self.fired: list[str] = []

    # -- what is due -----------------------------------------------------------------------------
    def due_events(self, until: datetime) -> list[DueEvent]:
        since = self.clock.fired_through()
        due: list[DueEvent] = []
        for rule in self.rules:
            moment = rule.cron.next_after(since)
            while moment is not None and moment <= until:
                due.append(
                    DueEvent(
                        moment, f"{rule.cron.expression} -> {rule.function_logical_id}", self._rule_firing(rule, moment)
                    )
                )
                moment = rule.cron.next_after(moment)
        for schedule in self._one_time_schedules():
            at = schedule["at"]
            if at <= until:
                due.append(DueEvent(at, f"schedule {schedule['Name']}", self._schedule_firing(schedule)))
        return sorted(due, key=lambda event: event.at)

    def _one_time_schedules(self) -> list[dict[str, Any]]:
        found = []
        for page in self._scheduler.get_paginator("list_schedules").paginate():
            for summary in page.get("Schedules", []):
                schedule = self._scheduler.get_schedule(
                    Name=summary["Name"], GroupName=summary.get("GroupName", "default")
                )
                match = _AT.match(schedule.get("ScheduleExpression", ""))
                if match is None or schedule.get("State", "ENABLED") != "ENABLED":
                    continue
                if schedule.get("ScheduleExpressionTimezone", "UTC") != "UTC":
                    raise ValueError(f"schedule {schedule['Name']}: only UTC schedules are supported locally")
                found.append({**schedule, "at": datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC)})
        return found

    # -- firing ----------------------------------------------------------------------------------
    def fire_due(self, until: datetime | None = None, *, advance_clock: bool = False) -> list[str]:
        """Fire everything due up to ``until`` (default: now) in time order, one at a time. With
        ``advance_clock`` the clock is moved to each event's time first (``advance_to``)."""
        fired: list[str] = []
        with self.clock.exclusive(wait=advance_clock) as holding:
            if not holding:
                return fired  # another process is firing
            while True:
                limit = until or self.clock.now()
                due = self.due_events(limit)
                if not due:
                    break
                event = due[0]
                if advance_clock and event.at > self.clock.now():
                    self.clock.set(event.at)
                log.info("firing %s due %s", event.description, to_iso(event.at))
                event.fire()
                self._drain()
                self.clock.mark_fired_through(max(event.at, self.clock.fired_through()))
                fired.append(f"{to_iso(event.at)} {event.description}")
        self.fired += fired
        return fired

    def advance_to(self, target: datetime) -> list[str]:
        """Move the clock to ``target``, firing everything due on the way, in order. A target already
        passed moves nothing (time only moves forward) but still fires what is due by now."""
        fired = self.fire_due(target, advance_clock=True)
        if target > self.clock.now():
            self.clock.set(target)
        return fired

    def _rule_firing(self, rule: CronRule, at: datetime) -> Callable[[], None]:
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": MOTO_ACCOUNT_ID,
            "time": to_iso(at),
            "region": MOTO_REGION,
            "resources": [
                f"arn:aws:events:{MOTO_REGION}:{MOTO_ACCOUNT_ID}:rule/{self.names.physical(rule.event_name)}"
            ],
            "detail": {},
        }

        def fire() -> None:
            self._invoke_async(rule.function_logical_id, event, dead_letter_arn=None)

        return fire

    def _schedule_firing(self, schedule: dict[str, Any]) -> Callable[[], None]:
        target = schedule["Target"]

        def fire() -> None:
            function = self._function_by_arn.get(target["Arn"])
            if function is None:
                raise ValueError(f"schedule {schedule['Name']} targets {target['Arn']}, not a function of the template")
            event = json.loads(target.get("Input") or "{}")
            self._invoke_async(function, event, dead_letter_arn=(target.get("DeadLetterConfig") or {}).get("Arn"))
            if schedule.get("ActionAfterCompletion") == "DELETE":
                self._scheduler.delete_schedule(Name=schedule["Name"], GroupName=schedule.get("GroupName", "default"))

        return fire

    def _invoke_async(self, function: str, event: dict[str, Any], *, dead_letter_arn: str | None) -> None:
        """Lambda's asynchronous invocation: retries, then the function's on-failure destination (or the
        schedule's DLQ) gets the event and the error."""
        config = self.template["Resources"][function]["Properties"].get("EventInvokeConfig", {})
        attempts = 1 + int(config.get("MaximumRetryAttempts", DEFAULT_ASYNC_RETRIES))
        error: Exception | None = None
        for _ in range(attempts):
            try:
                self._invoke(function, event)
                return
            except Exception as failure:  # what a handler raises is the function's error
                log.warning("%s failed: %s", function, failure)
                error = failure
        destination = config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        queue_arn = self._resolve_arn(destination) if destination else dead_letter_arn
        if queue_arn is None:
            log.error("%s failed %d times; no failure destination, the event is dropped", function, attempts)
            return
        self._sqs.send_message(
            QueueUrl=self._queue_url(queue_arn),
            MessageBody=json.dumps(
                {
                    "requestContext": {
                        "functionArn": self.names.arn(function, "AWS::Serverless::Function"),
                        "condition": "RetriesExhausted",
                        "approximateInvokeCount": attempts,
                    },
                    "requestPayload": event,
                    "responsePayload": {"errorType": type(error).__name__, "errorMessage": str(error)},
                }
            ),
        )
        log.error("%s failed %d times; the event is in %s", function, attempts, queue_arn)

    def _resolve_arn(self, value: Any) -> str:
        if isinstance(value, dict) and "Fn::GetAtt" in value:
            logical_id = value["Fn::GetAtt"][0]
            return self.names.arn(logical_id, self.template["Resources"][logical_id]["Type"])
        return str(value)

    def _queue_url(self, queue_arn: str) -> str:
        return str(self._sqs.get_queue_url(QueueName=queue_arn.rsplit(":", 1)[1])["QueueUrl"])
