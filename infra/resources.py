"""Create the template's tables, queues and buckets on the local stack (idempotent: existing ones stay)."""

from __future__ import annotations

import json
from typing import Any

import boto3

from infra.template import LocalNames, resources_of_type

_QUEUE_ATTRIBUTES = ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds")
# Properties of AWS::DynamoDB::Table that CreateTable accepts under the same name.
_CREATE_TABLE_KEYS = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "LocalSecondaryIndexes")


def create_tables(template: dict[str, Any], names: LocalNames, dynamodb: Any) -> list[str]:
    existing = set(dynamodb.list_tables()["TableNames"])
    created = []
    for logical_id, resource in resources_of_type(template, "AWS::DynamoDB::Table").items():
        properties = resource["Properties"]
        table_name = names.physical(logical_id)
        if table_name not in existing:
            request = {key: properties[key] for key in _CREATE_TABLE_KEYS if key in properties}
            dynamodb.create_table(
                TableName=table_name, BillingMode=properties.get("BillingMode", "PAY_PER_REQUEST"), **request
            )
            dynamodb.get_waiter("table_exists").wait(TableName=table_name)
            ttl = properties.get("TimeToLiveSpecification")
            if ttl and ttl.get("Enabled"):
                dynamodb.update_time_to_live(
                    TableName=table_name,
                    TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
                )
            created.append(table_name)
    return created


def create_queues(template: dict[str, Any], names: LocalNames, sqs: Any) -> list[str]:
    """Queues in dependency order: a dead-letter queue before the queue whose RedrivePolicy names it."""
    queues = resources_of_type(template, "AWS::SQS::Queue")
    arns: dict[str, str] = {}
    created: list[str] = []

    def create(logical_id: str) -> str:
        if logical_id in arns:
            return arns[logical_id]
        properties = queues[logical_id].get("Properties", {})
        queue_name = names.physical(logical_id) + (".fifo" if properties.get("FifoQueue") else "")
        attributes = {key: str(properties[key]) for key in _QUEUE_ATTRIBUTES if key in properties}
        redrive = properties.get("RedrivePolicy")
        if redrive:
            target = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
            attributes["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": create(target), "maxReceiveCount": int(redrive["maxReceiveCount"])}
            )
        url = sqs.create_queue(QueueName=queue_name, Attributes=attributes)["QueueUrl"]
        arns[logical_id] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        created.append(queue_name)
        return arns[logical_id]

    for logical_id in queues:
        create(logical_id)
    return created


def create_buckets(template: dict[str, Any], names: LocalNames, s3: Any) -> list[str]:
    created = []
    for logical_id in resources_of_type(template, "AWS::S3::Bucket"):
        bucket = names.bucket(logical_id)
        s3.create_bucket(Bucket=bucket)
        created.append(bucket)
    return created


def create_resources(
    template: dict[str, Any], names: LocalNames, *, dynamodb_url: str, moto_url: str, region: str
) -> dict[str, list[str]]:
    session = boto3.session.Session(aws_access_key_id="local", aws_secret_access_key="local", region_name=region)  # noqa: S106
    return {
        "tables": create_tables(template, names, session.client("dynamodb", endpoint_url=dynamodb_url)),
        "queues": create_queues(template, names, session.client("sqs", endpoint_url=moto_url)),
        "buckets": create_buckets(template, names, session.client("s3", endpoint_url=moto_url)),
    }
