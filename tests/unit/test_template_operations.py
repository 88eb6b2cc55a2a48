"""What running template.yaml in AWS needs (issue 18, items 4 and 5): every function's logs kept for a set time,
the Stripe key out of the environment and readable by the charging functions only, alarms on errors, 5xx,
failed payments and a missed monthly run (all to the operations topic), API Gateway's own errors in the
documented shape without echoing a token, partner users created by administrators only, and samconfig.toml.

Each check returns its findings (empty: the template passes), so it also runs against a hand-made bad template.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest

from bench.provider_limit import DYNAMODB_CALL_S, DYNAMODB_CALLS_PER_PARTNER, PROVIDER_REQUEST_S
from billing_core.api.http import ErrorResponse
from billing_core.observability import METRIC_SERVICE, METRICS_DIMENSION, METRICS_NAMESPACE, BusinessMetric
from infra import PROJECT_ROOT
from infra.template import load_template, resources_of_type
from tests.unit.test_template_policies import iam_statements, referenced_ids

TOPIC = "OperationsAlarmTopic"
KEY_PARAMETER = "StripeSecretKeyParameter"
KEY_VARIABLE = "STRIPE_SECRET_KEY_PARAMETER"
REQUIRED_GATEWAY_RESPONSES = ("DEFAULT_4XX", "DEFAULT_5XX", "UNAUTHORIZED", "ACCESS_DENIED")
# Anything a response template could fill in from the request (API Gateway's own message may contain the
# Authorization header): a gateway response body must be a fixed text.
TEMPLATE_VARIABLE = re.compile(r"\$")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def _functions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resources_of_type(template, "AWS::Serverless::Function")


def _properties(resource: dict[str, Any]) -> dict[str, Any]:
    return resource.get("Properties", {}) or {}


def _statements_of(template: dict[str, Any], logical_id: str) -> Iterator[dict[str, Any]]:
    for where, statement in iam_statements(template):
        if where.split(".", 1)[0] == logical_id:
            yield statement


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement.get("Action", [])
    return [str(a) for a in (actions if isinstance(actions, list) else [actions])]


# ---------------------------------------------------------------- the checks


def functions_without_retained_logs(template: dict[str, Any]) -> list[str]:
    """Each function logs into a log group of this template that keeps its logs LogRetentionInDays."""
    groups = resources_of_type(template, "AWS::Logs::LogGroup")
    problems = []
    for logical_id, function in sorted(_functions(template).items()):
        group_ids = referenced_ids((_properties(function).get("LoggingConfig") or {}).get("LogGroup"))
        group = next((groups[g] for g in group_ids if g in groups), None)
        if group is None:
            problems.append(f"{logical_id}: no LoggingConfig.LogGroup of this template")
        elif _properties(group).get("RetentionInDays") != {"Ref": "LogRetentionInDays"}:
            problems.append(f"{logical_id}: its log group's RetentionInDays is not the LogRetentionInDays parameter")
    return problems


def secrets_in_the_environment(template: dict[str, Any]) -> list[str]:
    """No function gets a secret's value through its environment: no variable is a NoEcho parameter, none is
    named like a key (only the key's *parameter name* may be passed)."""
    parameters = template.get("Parameters", {})
    secret_parameters = {name for name, parameter in parameters.items() if parameter.get("NoEcho")}
    environments = [("Globals", template.get("Globals", {}).get("Function", {}))] + [
        (logical_id, _properties(function)) for logical_id, function in _functions(template).items()
    ]
    problems = []
    for where, properties in environments:
        for name, value in ((properties.get("Environment") or {}).get("Variables") or {}).items():
            if referenced_ids(value) & secret_parameters:
                problems.append(f"{where}: {name} is the NoEcho parameter {sorted(referenced_ids(value))}")
            if re.search(r"SECRET|PASSWORD|TOKEN|API_KEY", name) and not name.endswith("_PARAMETER"):
                problems.append(f"{where}: {name} looks like a secret in the environment")
    return problems


def loose_secret_permissions(template: dict[str, Any]) -> list[str]:
    """Reading secrets: only the functions given the key's parameter name, each with ssm:GetParameter on exactly
    that one parameter; no other function reads SSM parameters or Secrets Manager secrets."""
    expected_arn = f"arn:${{AWS::Partition}}:ssm:${{AWS::Region}}:${{AWS::AccountId}}:parameter${{{KEY_PARAMETER}}}"
    problems = []
    for logical_id, function in sorted(_functions(template).items()):
        variables = (_properties(function).get("Environment") or {}).get("Variables") or {}
        gets_key = variables.get(KEY_VARIABLE) == {"Ref": KEY_PARAMETER}
        reads = [
            statement
            for statement in _statements_of(template, logical_id)
            if any(a.lower().startswith(("ssm:", "secretsmanager:", "kms:")) for a in _actions(statement))
        ]
        if not gets_key:
            problems += [f"{logical_id}: reads secrets ({_actions(s)}) without needing the key" for s in reads]
            continue
        scoped = [
            s
            for s in reads
            if s.get("Effect") == "Allow"
            and _actions(s) == ["ssm:GetParameter"]
            and s.get("Resource") == {"Fn::Sub": expected_arn}
            and "Condition" not in s
        ]
        if len(reads) != 1 or len(scoped) != 1:
            problems.append(f"{logical_id}: needs exactly one statement, ssm:GetParameter on {expected_arn}")
    return problems


def alarms_notifying_the_topic(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: alarm
        for logical_id, alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").items()
        if {"Ref": TOPIC} in (_properties(alarm).get("AlarmActions") or [])
    }


def _metrics_of(alarm: dict[str, Any]) -> Iterator[dict[str, Any]]:
    properties = _properties(alarm)
    if "MetricName" in properties:
        yield properties
    for query in properties.get("Metrics") or []:
        metric = (query.get("MetricStat") or {}).get("Metric")
        if metric:
            yield metric


def _dimensions(metric: dict[str, Any]) -> dict[str, Any]:
    return {dimension["Name"]: dimension["Value"] for dimension in metric.get("Dimensions") or []}


def functions_without_error_alarm(template: dict[str, Any]) -> list[str]:
    alarms = alarms_notifying_the_topic(template)
    return [
        f"{logical_id}: no alarm on its AWS/Lambda Errors that notifies {TOPIC}"
        for logical_id in sorted(_functions(template))
        if not any(
            metric.get("Namespace") == "AWS/Lambda"
            and metric.get("MetricName") == "Errors"
            and _dimensions(metric).get("FunctionName") == {"Ref": logical_id}
            for alarm in alarms.values()
            for metric in _metrics_of(alarm)
        )
    ]


def business_metrics_the_code_does_not_emit(template: dict[str, Any]) -> list[str]:
    """Alarms on the MspBilling namespace watch metrics observability.py emits, with their service dimension."""
    problems = []
    for logical_id, alarm in sorted(resources_of_type(template, "AWS::CloudWatch::Alarm").items()):
        for metric in _metrics_of(alarm):
            if metric.get("Namespace") != METRICS_NAMESPACE:
                continue
            name = metric.get("MetricName")
            emitted = {m.value: METRIC_SERVICE[m].value for m in BusinessMetric}
            if name not in emitted:
                problems.append(f"{logical_id}: {name} is not a BusinessMetric")
            elif _dimensions(metric) != {METRICS_DIMENSION: emitted[name]}:
                problems.append(f"{logical_id}: {name} is emitted with {METRICS_DIMENSION}={emitted[name]} only")
    return problems


def gateway_responses_not_in_the_error_shape(template: dict[str, Any]) -> list[str]:
    problems = []
    for logical_id, api in sorted(resources_of_type(template, "AWS::Serverless::Api").items()):
        responses = _properties(api).get("GatewayResponses") or {}
        problems += [
            f"{logical_id}: no {kind} gateway response" for kind in REQUIRED_GATEWAY_RESPONSES if kind not in responses
        ]
        for kind, response in sorted(responses.items()):
            body = (response.get("ResponseTemplates") or {}).get("application/json")
            if not isinstance(body, str):
                problems.append(f"{logical_id}.{kind}: no application/json template")
                continue
            if TEMPLATE_VARIABLE.search(body):
                problems.append(f"{logical_id}.{kind}: the body fills in request data ({body})")
                continue
            try:
                parsed = json.loads(body)
                ErrorResponse.model_validate(parsed)
            except ValueError as error:
                problems.append(f"{logical_id}.{kind}: not the documented error shape: {error}")
                continue
            if set(parsed) != {"error"} or not set(parsed["error"]) <= {"code", "message", "fields"}:
                problems.append(f"{logical_id}.{kind}: other fields than error.code/message/fields")
    return problems


# ---------------------------------------------------------------- against template.yaml


def test_every_function_logs_into_a_group_with_retention(template: dict[str, Any]) -> None:
    assert len(_functions(template)) >= 9
    assert functions_without_retained_logs(template) == []
    retention = template["Parameters"]["LogRetentionInDays"]
    assert retention["Type"] == "Number" and retention["Default"] in retention["AllowedValues"]


def test_the_stripe_key_is_no_environment_variable_and_only_the_charging_functions_read_it(
    template: dict[str, Any],
) -> None:
    assert secrets_in_the_environment(template) == []
    assert loose_secret_permissions(template) == []
    readers = {
        logical_id
        for logical_id, function in _functions(template).items()
        if KEY_VARIABLE in ((_properties(function).get("Environment") or {}).get("Variables") or {})
    }
    assert readers == {"ActivateFunction", "ChargeWorkerFunction"}
    parameter = template["Parameters"][KEY_PARAMETER]
    assert not parameter.get("NoEcho") and re.fullmatch(parameter["AllowedPattern"], parameter["Default"])
    assert not re.fullmatch(parameter["AllowedPattern"], "no-leading-slash")  # the ARN is ...:parameter/<name>


def test_every_function_has_an_error_alarm(template: dict[str, Any]) -> None:
    assert functions_without_error_alarm(template) == []


@pytest.mark.parametrize("alarm", ["PartnerApi5xxAlarm", "PaymentFailureRateAlarm", "MissedMonthlyRunAlarm"])
def test_the_service_alarms_exist_and_notify_the_operations_topic(template: dict[str, Any], alarm: str) -> None:
    assert alarm in alarms_notifying_the_topic(template)


def test_every_alarm_notifies_the_operations_topic(template: dict[str, Any]) -> None:
    assert set(alarms_notifying_the_topic(template)) == set(resources_of_type(template, "AWS::CloudWatch::Alarm"))


def test_the_api_5xx_alarm_watches_the_partner_api_stage(template: dict[str, Any]) -> None:
    api = _properties(template["Resources"]["PartnerApi"])
    (metric,) = _metrics_of(template["Resources"]["PartnerApi5xxAlarm"])
    assert (metric["Namespace"], metric["MetricName"]) == ("AWS/ApiGateway", "5XXError")
    assert _dimensions(metric) == {"ApiName": api["Name"], "Stage": api["StageName"]}


def test_alarms_watch_the_business_metrics_the_code_emits(template: dict[str, Any]) -> None:
    assert business_metrics_the_code_does_not_emit(template) == []
    rate = _properties(template["Resources"]["PaymentFailureRateAlarm"])
    assert {m["MetricName"] for m in _metrics_of(template["Resources"]["PaymentFailureRateAlarm"])} == {
        BusinessMetric.PAYMENTS_FAILED,
        BusinessMetric.PAYMENTS_SUCCEEDED,
    }
    assert rate["Threshold"] == {"Ref": "PaymentFailureRateThreshold"}


def test_a_missed_monthly_run_breaches_on_the_first_after_one_oclock(template: dict[str, Any]) -> None:
    missed = _properties(template["Resources"]["MissedMonthlyRunAlarm"])
    (metric,) = _metrics_of(template["Resources"]["MissedMonthlyRunAlarm"])
    assert metric["MetricName"] == BusinessMetric.MONTHLY_RUN_DISPATCHED
    assert missed["TreatMissingData"] == "breaching"
    # Calendar hours (not a sliding hour, which would lose a 00:05 run at 01:06), the first hour of the 1st.
    assert missed["EvaluationWindow"] == {"WallClockWindow": {"Timezone": "UTC"}}
    (stat,) = [query["MetricStat"] for query in missed["Metrics"] if "MetricStat" in query]
    assert stat["Period"] == 3600
    (watched,) = [query["Expression"] for query in missed["Metrics"] if query.get("ReturnData")]
    assert "DATE(" in watched and "HOUR(" in watched and "== 1" in watched and "== 0" in watched
    # ... and the schedule it guards runs in that hour.
    dispatcher = _properties(template["Resources"]["MonthlyRunDispatcherFunction"])
    (schedule,) = [event["Properties"]["Schedule"] for event in dispatcher["Events"].values()]
    minute, hour, days = schedule.removeprefix("cron(").split()[:3]
    assert hour == "0" and int(minute) < 30 and "1" in days.split(",")


def test_api_gateway_answers_in_the_documented_error_shape_without_echoing_a_token(template: dict[str, Any]) -> None:
    assert gateway_responses_not_in_the_error_shape(template) == []
    responses = _properties(template["Resources"]["PartnerApi"])["GatewayResponses"]
    unauthorized = responses["UNAUTHORIZED"]
    assert unauthorized["StatusCode"] == "401"
    assert unauthorized["ResponseParameters"]["Headers"]["WWW-Authenticate"] == "'Bearer'"
    assert json.loads(unauthorized["ResponseTemplates"]["application/json"])["error"]["code"] == "unauthenticated"
    assert responses["ACCESS_DENIED"]["StatusCode"] == "403"
    # API Gateway's incomplete-signature message quotes the Authorization header: it has a fixed body too.
    assert "INCOMPLETE_SIGNATURE" in responses


def test_no_xray_tracing_is_switched_on_without_a_tracer(template: dict[str, Any]) -> None:
    # Decision (README, Deploying): logs with correlation ids, metrics and alarms instead of X-Ray.
    assert "Tracing" not in template["Globals"]["Function"]
    assert all("Tracing" not in _properties(f) for f in _functions(template).values())
    assert "TracingEnabled" not in _properties(template["Resources"]["PartnerApi"])


def test_partner_ids_and_roles_are_written_by_administrators_only(template: dict[str, Any]) -> None:
    pool = _properties(template["Resources"]["PartnerUserPool"])
    client = _properties(template["Resources"]["PartnerPortalClient"])
    declared = {attribute["Name"]: attribute for attribute in pool["Schema"]}
    assert declared["partner_id"]["AttributeDataType"] == "String" and declared["partner_id"]["Mutable"] is False
    assert declared["role"]["AttributeDataType"] == "String"
    assert {"custom:partner_id", "custom:role"} <= set(client["ReadAttributes"])
    assert not any(attribute.startswith("custom:") for attribute in client["WriteAttributes"])
    assert pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True  # no self sign-up


def test_samconfig_deploys_the_template_with_its_parameters(template: dict[str, Any]) -> None:
    config = tomllib.loads((PROJECT_ROOT / "samconfig.toml").read_text())["default"]
    assert config["global"]["parameters"]["stack_name"] and config["global"]["parameters"]["region"]
    deploy = config["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM" and deploy["confirm_changeset"] is True
    overridden = {override.split("=", 1)[0] for override in deploy["parameter_overrides"]}
    assert overridden <= set(template["Parameters"])
    assert {KEY_PARAMETER, "PaymentProvider", "AlarmEmail", "BillingEmailSender", "LogRetentionInDays"} <= overridden


# ---------------------------------------------------------------- the checks can fail

BAD_TEMPLATE: dict[str, Any] = {
    "Parameters": {"StripeSecretKey": {"Type": "String", "NoEcho": True}, KEY_PARAMETER: {"Type": "String"}},
    "Globals": {"Function": {"Environment": {"Variables": {"STRIPE_SECRET_KEY": {"Ref": "StripeSecretKey"}}}}},
    "Resources": {
        "Logs": {"Type": "AWS::Logs::LogGroup", "Properties": {"RetentionInDays": 3653}},
        "Charger": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "LoggingConfig": {"LogGroup": {"Ref": "Logs"}},
                "Environment": {"Variables": {KEY_VARIABLE: {"Ref": KEY_PARAMETER}}},
                "Policies": [
                    {"Statement": [{"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*"}]},
                ],
            },
        },
        "Reader": {
            "Type": "AWS::Serverless::Function",
            "Properties": {
                "Policies": [
                    {"Statement": [{"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue"], "Resource": "x"}]}
                ]
            },
        },
        "Api": {
            "Type": "AWS::Serverless::Api",
            "Properties": {
                "GatewayResponses": {
                    "DEFAULT_4XX": {
                        "ResponseTemplates": {"application/json": '{"message": $context.error.messageString}'}
                    },
                    "DEFAULT_5XX": {"ResponseTemplates": {"application/json": '{"message": "oops"}'}},
                    "UNAUTHORIZED": {
                        "ResponseTemplates": {"application/json": '{"error": {"code": "x", "message": "y"}}'}
                    },
                }
            },
        },
        "MuteAlarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "Namespace": METRICS_NAMESPACE,
                "MetricName": "PaymentsFailed",
                "Dimensions": [{"Name": "service", "Value": "charges"}],
            },
        },
    },
}


def test_the_checks_flag_a_bad_template() -> None:
    assert functions_without_retained_logs(BAD_TEMPLATE) == [
        "Charger: its log group's RetentionInDays is not the LogRetentionInDays parameter",
        "Reader: no LoggingConfig.LogGroup of this template",
    ]
    assert secrets_in_the_environment(BAD_TEMPLATE) == [
        "Globals: STRIPE_SECRET_KEY is the NoEcho parameter ['StripeSecretKey']",
        "Globals: STRIPE_SECRET_KEY looks like a secret in the environment",
    ]
    assert loose_secret_permissions(BAD_TEMPLATE) == [
        "Charger: needs exactly one statement, ssm:GetParameter on "
        "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${StripeSecretKeyParameter}",
        "Reader: reads secrets (['secretsmanager:GetSecretValue']) without needing the key",
    ]
    assert functions_without_error_alarm(BAD_TEMPLATE) == [
        f"Charger: no alarm on its AWS/Lambda Errors that notifies {TOPIC}",
        f"Reader: no alarm on its AWS/Lambda Errors that notifies {TOPIC}",
    ]
    assert business_metrics_the_code_does_not_emit(BAD_TEMPLATE) == [
        "MuteAlarm: PaymentsFailed is emitted with service=payments only"
    ]
    problems = gateway_responses_not_in_the_error_shape(BAD_TEMPLATE)
    assert problems[0] == "Api: no ACCESS_DENIED gateway response"
    assert problems[1].startswith("Api.DEFAULT_4XX: the body fills in request data")
    assert problems[2].startswith("Api.DEFAULT_5XX: not the documented error shape")
    assert len(problems) == 3  # UNAUTHORIZED is in the shape


def test_the_charge_workers_are_capped_below_the_payment_providers_rate_limit(template: dict[str, Any]) -> None:
    """A run of 100,000 partners must not meet Stripe's rate limit with the account's whole Lambda concurrency:
    the charge queue's event source is capped by a parameter whose default fits Stripe's test mode (25/s)."""
    event = template["Resources"]["ChargeWorkerFunction"]["Properties"]["Events"]["ChargeMessages"]["Properties"]
    assert event["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "ChargeWorkerMaxConcurrency"}
    default = template["Parameters"]["ChargeWorkerMaxConcurrency"]["Default"]
    # One provider request per partner; a partner takes the measured DynamoDB calls and the provider's answer.
    seconds_per_partner = DYNAMODB_CALLS_PER_PARTNER * DYNAMODB_CALL_S + PROVIDER_REQUEST_S
    assert default >= 2 and default / seconds_per_partner <= 0.8 * 25  # a margin for jitter: peaks stay under 25
