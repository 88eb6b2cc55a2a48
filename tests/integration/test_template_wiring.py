"""template.yaml is valid SAM, and the code serves exactly the routes it declares, in Lambda too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from chalice.app import Chalice

from billing_core.domain.identity import Role
from infra import PROJECT_ROOT
from infra.stack import LocalStack
from infra.template import api_functions, load_template, resources_of_type
from tests.helpers import new_partner_id

pytestmark = pytest.mark.integration


def test_template_passes_cfn_lint() -> None:
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(PROJECT_ROOT / "template.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_table_is_protected_and_on_demand() -> None:
    tables = resources_of_type(load_template(), "AWS::DynamoDB::Table")
    assert set(tables) == {"BillingTable", "UsageTable", "IdempotencyTable"}
    for logical_id, table in tables.items():
        properties = table["Properties"]
        assert properties["BillingMode"] == "PAY_PER_REQUEST", logical_id
        assert properties["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, logical_id
        assert properties["DeletionProtectionEnabled"] is True, logical_id
        assert table["DeletionPolicy"] == "Retain", logical_id


def test_functions_run_on_arm64_python_312_or_newer() -> None:
    function_globals = load_template()["Globals"]["Function"]
    assert function_globals["Architectures"] == ["arm64"]
    runtime = function_globals["Runtime"]
    assert runtime.startswith("python3.") and int(runtime.split(".")[1]) >= 12


def test_local_server_serves_exactly_the_template_routes(local_stack: LocalStack, partner_api: Chalice) -> None:
    served = {(method, path) for path, entries in partner_api.routes.items() for method in entries}
    declared = {route for function in api_functions(local_stack.template) for route in function.routes}
    assert served == declared
    assert ("POST", "/plan/activation") in served


def api_gateway_event(method: str, path: str, partner_id: str, body: dict[str, object] | None) -> dict[str, object]:
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json", "Idempotency-Key": "lambda-1"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": path,
            "httpMethod": method,
            "path": f"/v1{path}",
            "requestId": "req-1",
            "stage": "v1",
            "authorizer": {"claims": {"sub": "u1", "custom:partner_id": partner_id, "custom:role": Role.OWNER.value}},
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


LAMBDA_INVOKE = """
import json, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import app
event = json.loads(sys.stdin.read())
print(json.dumps(app.app(event, None)))
"""


@pytest.mark.parametrize(
    ("function_dir", "method", "path", "body", "status"),
    [
        ("activate", "POST", "/plan/activation", {"payment_method": "pm_card_visa"}, 201),
        ("activate", "GET", "/plan", None, 200),
        ("workspaces", "POST", "/workspaces", {"name": "Lambda", "on_plan": False}, 201),
    ],
)
def test_lambda_entry_point_handles_api_gateway_events(
    local_stack: LocalStack, function_dir: str, method: str, path: str, body: dict[str, object] | None, status: int
) -> None:
    """Runs `Handler: app.app` in a fresh interpreter, the way the Lambda runtime imports it."""
    event = api_gateway_event(method, path, new_partner_id(), body)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LAMBDA_INVOKE,
            str(PROJECT_ROOT / "functions" / function_dir),
            str(PROJECT_ROOT / "src"),
        ],
        input=json.dumps(event),
        capture_output=True,
        text=True,
        env={**os.environ, **local_stack.environment()},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout.strip().splitlines()[-1])
    assert response["statusCode"] == status, response


def test_metering_queue_wiring() -> None:
    template = load_template()
    resources = template["Resources"]
    queue = resources["MeteringQueue"]["Properties"]
    meter = resources["MeterFunction"]["Properties"]
    (event,) = meter["Events"].values()
    assert event["Type"] == "SQS" and event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert event["Properties"]["BatchSize"] >= 100 and event["Properties"]["MaximumBatchingWindowInSeconds"] > 0
    assert queue["VisibilityTimeout"] == 6 * meter["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["MeteringDeadLetterQueue", "Arn"]}
    assert queue["RedrivePolicy"]["maxReceiveCount"] >= 2
    alarm = resources["MeteringDeadLetterAlarm"]["Properties"]
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["MeteringDeadLetterQueue", "QueueName"]}


def test_local_queues_have_the_template_redrive_policy(local_stack: LocalStack) -> None:
    import boto3

    sqs = boto3.client("sqs", endpoint_url=local_stack.moto_url, region_name="us-east-1")
    url = sqs.get_queue_url(QueueName=local_stack.names.physical("MeteringQueue"))["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(local_stack.names.physical("MeteringDeadLetterQueue"))
    assert int(redrive["maxReceiveCount"]) == 5
    assert attributes["VisibilityTimeout"] == "360"
