"""Policy checks on template.yaml: protected tables, queues with dead-letter queues and alarms, and no
IAM statement granting ``Resource: "*"`` unless AWS offers nothing narrower for its actions.

Each check is a function returning its findings (empty: the template passes), so the same functions are
run against the real template and against a small hand-made bad template that they must flag.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from infra.template import load_template, resources_of_type

# Actions AWS authorises only with ``Resource: "*"`` (the Service Authorization Reference lists no resource
# type for them), so a statement granting them cannot be scoped by ARN. Every other action must name its
# resources. SES sending is not here: it can be scoped to identities (and template.yaml does so).
ACTIONS_REQUIRING_ANY_RESOURCE: dict[str, str] = {
    "cloudwatch:PutMetricData": "metric data has no resource type; scope with the cloudwatch:namespace condition",
    "xray:PutTraceSegments": "X-Ray traces have no resource type; needed to send segments (Tracing: Active)",
    "xray:PutTelemetryRecords": "X-Ray telemetry has no resource type; the X-Ray SDK/daemon reports it",
    "xray:GetSamplingRules": "sampling rules are read account-wide by the X-Ray SDK (no resource-level permission)",
    "xray:GetSamplingTargets": "sampling targets are read account-wide by the X-Ray SDK (no resource-level permission)",
}

# Keys under which a queue is named as the dead-letter target of something (SQS redrive, EventBridge
# and Scheduler targets, SAM event sources, a function's asynchronous invocations and their on-failure
# destination).
DEAD_LETTER_KEYS = frozenset({"deadLetterTargetArn", "DeadLetterConfig", "DeadLetterQueue", "OnFailure"})
# A function that creates schedules or messages at run time gets their DLQ through its environment.
DEAD_LETTER_VARIABLE = re.compile(r"DEAD_?LETTER|DLQ", re.IGNORECASE)
# The queue-depth metric a DLQ alarm must watch.
QUEUE_DEPTH_METRIC = "ApproximateNumberOfMessagesVisible"

_SUB_REFERENCE = re.compile(r"\$\{([A-Za-z0-9]+)(?:\.[A-Za-z0-9.]+)?\}")


# ---------------------------------------------------------------- helpers


def referenced_ids(value: Any) -> set[str]:
    """Logical ids (or parameters) that ``value`` refers to through Ref, GetAtt or Sub."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt" and isinstance(inner, list) and inner:
                found.add(str(inner[0]))
            elif key == "Fn::Sub":
                text = inner[0] if isinstance(inner, list) else inner
                if isinstance(text, str):
                    found.update(_SUB_REFERENCE.findall(text))
                if isinstance(inner, list) and len(inner) > 1:
                    found.update(referenced_ids(inner[1]))
            else:
                found.update(referenced_ids(inner))
    elif isinstance(value, list):
        for inner in value:
            found.update(referenced_ids(inner))
    return found


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of every mapping nested in ``value``."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield str(key), inner
            yield from _walk(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _walk(inner)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def dead_letter_queues(template: dict[str, Any]) -> set[str]:
    """Queues the template names as a dead-letter target anywhere."""
    queues = set(resources_of_type(template, "AWS::SQS::Queue"))
    targets: set[str] = set()
    properties = [resource.get("Properties", {}) for resource in template.get("Resources", {}).values()]
    for key, value in _walk(properties):
        if key in DEAD_LETTER_KEYS:
            targets.update(referenced_ids(value))
        elif key == "Variables" and isinstance(value, dict):
            for name, variable in value.items():
                if DEAD_LETTER_VARIABLE.search(str(name)):
                    targets.update(referenced_ids(variable))
    return targets & queues


def _alarm_metrics(alarm: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The metrics an alarm watches: its single metric, or each metric of a metric-math alarm."""
    properties = alarm.get("Properties", {})
    if "MetricName" in properties:
        yield properties
    for query in properties.get("Metrics", []) or []:
        metric = (query.get("MetricStat") or {}).get("Metric")
        if metric:
            yield metric


def _fires_on_first_message(alarm: dict[str, Any]) -> bool:
    properties = alarm.get("Properties", {})
    operator = properties.get("ComparisonOperator")
    threshold = float(properties.get("Threshold", 1))
    return (operator == "GreaterThanThreshold" and threshold < 1) or (
        operator == "GreaterThanOrEqualToThreshold" and threshold <= 1
    )


def iam_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, statement) for every identity-policy statement written out in the template: inline
    ``Policies`` of SAM functions and state machines (managed-policy names and SAM policy templates are
    not statements and are skipped), and the documents of IAM roles, policies and managed policies."""
    for logical_id, resource in template.get("Resources", {}).items():
        kind = resource.get("Type")
        properties = resource.get("Properties", {}) or {}
        documents: list[tuple[str, Any]] = []
        if kind in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            documents = [
                (f"{logical_id}.Policies[{index}]", policy)
                for index, policy in enumerate(_as_list(properties.get("Policies")))
                if isinstance(policy, dict) and "Statement" in policy
            ]
        elif kind == "AWS::IAM::Role":
            documents = [
                (f"{logical_id}.Policies[{policy.get('PolicyName', index)}]", policy.get("PolicyDocument", {}))
                for index, policy in enumerate(_as_list(properties.get("Policies")))
            ]
        elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents = [(logical_id, properties.get("PolicyDocument", {}))]
        for where, document in documents:
            for index, statement in enumerate(_as_list(document.get("Statement"))):
                yield f"{where}.{statement.get('Sid', index)}", statement


# ---------------------------------------------------------------- the checks


def unprotected_tables(template: dict[str, Any]) -> list[str]:
    problems = []
    for logical_id, table in sorted(resources_of_type(template, "AWS::DynamoDB::Table").items()):
        properties = table.get("Properties", {})
        pitr = properties.get("PointInTimeRecoverySpecification") or {}
        if pitr.get("PointInTimeRecoveryEnabled") is not True:
            problems.append(f"{logical_id}: point-in-time recovery is not enabled")
        if properties.get("DeletionProtectionEnabled") is not True:
            problems.append(f"{logical_id}: deletion protection is not enabled")
    return problems


def queues_without_dead_letter_queue(template: dict[str, Any]) -> list[str]:
    queues = resources_of_type(template, "AWS::SQS::Queue")
    dlqs = dead_letter_queues(template)
    problems = []
    for logical_id, queue in sorted(queues.items()):
        if logical_id in dlqs:
            continue
        redrive = (queue.get("Properties", {}) or {}).get("RedrivePolicy") or {}
        target = referenced_ids(redrive.get("deadLetterTargetArn"))
        if not target & set(queues):
            problems.append(f"{logical_id}: no RedrivePolicy to a dead-letter queue of this template")
    return problems


def dead_letter_queues_without_alarm(template: dict[str, Any]) -> list[str]:
    alarms = resources_of_type(template, "AWS::CloudWatch::Alarm")
    problems = []
    for queue in sorted(dead_letter_queues(template)):
        watched = any(
            metric.get("Namespace") == "AWS/SQS"
            and metric.get("MetricName") == QUEUE_DEPTH_METRIC
            and queue in referenced_ids(metric.get("Dimensions"))
            and _fires_on_first_message(alarm)
            for alarm in alarms.values()
            for metric in _alarm_metrics(alarm)
        )
        if not watched:
            problems.append(f"{queue}: no CloudWatch alarm on {QUEUE_DEPTH_METRIC} that fires on the first message")
    return problems


def statements_on_any_resource(template: dict[str, Any]) -> list[str]:
    allowed = {action.lower() for action in ACTIONS_REQUIRING_ANY_RESOURCE}
    problems = []
    for where, statement in iam_statements(template):
        if statement.get("Effect") != "Allow" or "*" not in _as_list(statement.get("Resource")):
            continue
        if "NotAction" in statement:
            problems.append(f"{where}: NotAction on Resource '*'")
            continue
        broad = sorted(str(a) for a in _as_list(statement.get("Action")) if str(a).lower() not in allowed)
        if broad:
            problems.append(f"{where}: Resource '*' for {', '.join(broad)}")
    return problems


def alarms_that_notify_nobody(template: dict[str, Any]) -> list[str]:
    return [
        f"{logical_id}: no AlarmActions"
        for logical_id, alarm in sorted(resources_of_type(template, "AWS::CloudWatch::Alarm").items())
        if not alarm.get("Properties", {}).get("AlarmActions")
    ]


# ---------------------------------------------------------------- against template.yaml


def test_every_table_has_point_in_time_recovery_and_deletion_protection() -> None:
    template = load_template()
    assert resources_of_type(template, "AWS::DynamoDB::Table")
    assert unprotected_tables(template) == []


def test_every_queue_has_a_dead_letter_queue() -> None:
    template = load_template()
    assert dead_letter_queues(template) >= {
        "MeteringDeadLetterQueue",
        "ChargeDeadLetterQueue",
        "PlanEndDeadLetterQueue",
        "MonthlyRunDeadLetterQueue",
    }
    assert queues_without_dead_letter_queue(template) == []


def test_every_dead_letter_queue_has_a_depth_alarm() -> None:
    assert dead_letter_queues_without_alarm(load_template()) == []


def test_every_alarm_notifies_someone() -> None:
    template = load_template()
    assert alarms_that_notify_nobody(template) == []
    assert alarms_that_notify_nobody({"Resources": {"Mute": {"Type": "AWS::CloudWatch::Alarm", "Properties": {}}}}) == [
        "Mute: no AlarmActions"
    ]


def test_no_statement_grants_any_resource_unless_aws_requires_it() -> None:
    template = load_template()
    assert len(list(iam_statements(template))) >= 10  # the walk finds the inline policies
    assert statements_on_any_resource(template) == []


# ---------------------------------------------------------------- the checks can fail

BAD_TEMPLATE: dict[str, Any] = {
    "Resources": {
        "GoodTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                "DeletionProtectionEnabled": True,
            },
        },
        "BareTable": {"Type": "AWS::DynamoDB::Table", "Properties": {"DeletionProtectionEnabled": True}},
        "PitrOffTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {"PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": False}},
        },
        "LonelyQueue": {"Type": "AWS::SQS::Queue", "Properties": {}},
        "WorkQueue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {"RedrivePolicy": {"deadLetterTargetArn": {"Fn::GetAtt": ["WorkDlq", "Arn"]}}},
        },
        "WorkDlq": {"Type": "AWS::SQS::Queue", "Properties": {}},
        # Named in a function's environment as the DLQ of schedules it creates; watched, but only from 5 on.
        "ScheduleDlq": {"Type": "AWS::SQS::Queue", "Properties": {}},
        "LateAlarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "Namespace": "AWS/SQS",
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Dimensions": [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["ScheduleDlq", "QueueName"]}}],
                "Threshold": 5,
                "ComparisonOperator": "GreaterThanThreshold",
            },
        },
        "Worker": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "Environment": {"Variables": {"SCHEDULE_DLQ_ARN": {"Fn::GetAtt": ["ScheduleDlq", "Arn"]}}},
                "Policies": [
                    "AWSLambdaBasicExecutionRole",
                    {"DynamoDBReadPolicy": {"TableName": "*"}},  # a SAM policy template: not checked
                    {
                        "Statement": [
                            {"Sid": "Everything", "Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "*"},
                            {
                                "Sid": "Metrics",
                                "Effect": "Allow",
                                "Action": "cloudwatch:PutMetricData",
                                "Resource": "*",
                            },
                            {"Sid": "DenyAll", "Effect": "Deny", "Action": "s3:*", "Resource": "*"},
                        ]
                    },
                ],
            },
        },
        # The on-failure destination of a function's asynchronous invocations.
        "FailedInvocations": {"Type": "AWS::SQS::Queue", "Properties": {}},
        "Finaliser": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "EventInvokeConfig": {
                    "DestinationConfig": {
                        "OnFailure": {"Type": "SQS", "Destination": {"Fn::GetAtt": ["FailedInvocations", "Arn"]}}
                    }
                }
            },
        },
        "SchedulerRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "Policies": [
                    {
                        "PolicyName": "Tracing",
                        "PolicyDocument": {
                            "Statement": [
                                {
                                    "Sid": "Segments",
                                    "Effect": "Allow",
                                    "Action": ["xray:PutTraceSegments"],
                                    "Resource": "*",
                                },
                                {"Sid": "AllOfXray", "Effect": "Allow", "Action": ["xray:*"], "Resource": ["*"]},
                            ]
                        },
                    }
                ]
            },
        },
        "LoosePolicy": {
            "Type": "AWS::IAM::Policy",
            "Properties": {
                "PolicyDocument": {"Statement": {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}},
            },
        },
    }
}


def test_the_checks_flag_a_bad_template() -> None:
    assert unprotected_tables(BAD_TEMPLATE) == [
        "BareTable: point-in-time recovery is not enabled",
        "PitrOffTable: point-in-time recovery is not enabled",
        "PitrOffTable: deletion protection is not enabled",
    ]
    assert dead_letter_queues(BAD_TEMPLATE) == {"WorkDlq", "ScheduleDlq", "FailedInvocations"}
    assert queues_without_dead_letter_queue(BAD_TEMPLATE) == [
        "LonelyQueue: no RedrivePolicy to a dead-letter queue of this template"
    ]
    assert dead_letter_queues_without_alarm(BAD_TEMPLATE) == [
        f"FailedInvocations: no CloudWatch alarm on {QUEUE_DEPTH_METRIC} that fires on the first message",
        f"ScheduleDlq: no CloudWatch alarm on {QUEUE_DEPTH_METRIC} that fires on the first message",
        f"WorkDlq: no CloudWatch alarm on {QUEUE_DEPTH_METRIC} that fires on the first message",
    ]
    assert statements_on_any_resource(BAD_TEMPLATE) == [
        "Worker.Policies[2].Everything: Resource '*' for dynamodb:GetItem",
        "SchedulerRole.Policies[Tracing].AllOfXray: Resource '*' for xray:*",
        "LoosePolicy.0: NotAction on Resource '*'",
    ]


def test_a_redrive_to_a_queue_outside_the_template_is_not_a_dead_letter_queue() -> None:
    template = {
        "Resources": {
            "Queue": {
                "Type": "AWS::SQS::Queue",
                "Properties": {"RedrivePolicy": {"deadLetterTargetArn": "arn:aws:sqs:us-east-1:1:elsewhere"}},
            }
        }
    }
    assert queues_without_dead_letter_queue(template) == [
        "Queue: no RedrivePolicy to a dead-letter queue of this template"
    ]
