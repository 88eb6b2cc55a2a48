"""Reading template.yaml: the one description of resources and wiring, for AWS and for local runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra import PROJECT_ROOT

TEMPLATE_PATH = PROJECT_ROOT / "template.yaml"


class _CloudFormationLoader(yaml.SafeLoader):
    """YAML loader that understands CloudFormation short-form intrinsics (!Ref, !GetAtt, !Sub, ...)."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


_CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with path.open() as handle:
        document = yaml.load(handle, Loader=_CloudFormationLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a CloudFormation template")
    return document


def resources_of_type(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") == resource_type
    }


MOTO_ACCOUNT_ID = "123456789012"
MOTO_REGION = "us-east-1"


@dataclass(frozen=True)
class LocalNames:
    """Physical names of template resources on the local stack: ``<stack>-<LogicalId>`` (lower case for
    buckets), and what ``!Ref`` returns for each, as CloudFormation would (a queue's URL)."""

    stack_name: str
    moto_url: str = ""

    def physical(self, logical_id: str) -> str:
        return f"{self.stack_name}-{logical_id}"

    def bucket(self, logical_id: str) -> str:
        return self.physical(logical_id).lower()

    def ref(self, logical_id: str, resource_type: str) -> str:
        if resource_type == "AWS::SQS::Queue":
            return f"{self.moto_url}/{MOTO_ACCOUNT_ID}/{self.physical(logical_id)}"
        if resource_type == "AWS::S3::Bucket":
            return self.bucket(logical_id)
        return self.physical(logical_id)

    def arn(self, logical_id: str, resource_type: str) -> str:
        """What ``!GetAtt X.Arn`` gives locally (moto's account and region)."""
        name = self.physical(logical_id)
        if resource_type == "AWS::Serverless::Function":
            return f"arn:aws:lambda:{MOTO_REGION}:{MOTO_ACCOUNT_ID}:function:{name}"
        if resource_type == "AWS::SQS::Queue":
            return f"arn:aws:sqs:{MOTO_REGION}:{MOTO_ACCOUNT_ID}:{name}"
        if resource_type == "AWS::IAM::Role":
            return f"arn:aws:iam::{MOTO_ACCOUNT_ID}:role/{name}"
        raise ValueError(f"local wiring has no ARN for {resource_type} {logical_id}")


def resolve(value: Any, template: dict[str, Any], names: LocalNames, overrides: dict[str, str]) -> Any:
    """Resolve the intrinsics local wiring needs: Ref to a resource (its local name) or a parameter
    (override, else its default), GetAtt of an ARN. Anything else is an error: local wiring must not guess."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        target = value["Ref"]
        parameters = template.get("Parameters", {})
        if target in parameters:
            return overrides.get(target, str(parameters[target].get("Default", "")))
        if target in template.get("Resources", {}):
            return names.ref(target, template["Resources"][target]["Type"])
        raise KeyError(f"!Ref {target} names neither a parameter nor a resource")
    if isinstance(value, dict) and set(value) == {"Fn::GetAtt"} and list(value["Fn::GetAtt"])[1:] == ["Arn"]:
        target = value["Fn::GetAtt"][0]
        return names.arn(target, template["Resources"][target]["Type"])
    if isinstance(value, dict):
        raise ValueError(f"local wiring cannot resolve {value!r}")
    return value


def function_environment(
    template: dict[str, Any], logical_id: str, names: LocalNames, overrides: dict[str, str]
) -> dict[str, str]:
    """The environment a function gets: Globals merged with its own variables, intrinsics resolved."""
    global_vars = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    function = template["Resources"][logical_id]
    own_vars = function.get("Properties", {}).get("Environment", {}).get("Variables", {})
    merged = {**global_vars, **own_vars}
    return {key: str(resolve(value, template, names, overrides)) for key, value in merged.items()}


@dataclass(frozen=True)
class ApiFunction:
    logical_id: str
    code_dir: Path
    handler_module: str
    routes: list[tuple[str, str]]  # (METHOD, path)


def api_functions(template: dict[str, Any]) -> list[ApiFunction]:
    """Functions with API Gateway events, with their code folder and routes, as the template says."""
    found = []
    for logical_id, function in resources_of_type(template, "AWS::Serverless::Function").items():
        properties = function.get("Properties", {})
        routes = [
            (str(event["Properties"]["Method"]).upper(), str(event["Properties"]["Path"]))
            for event in properties.get("Events", {}).values()
            if event.get("Type") == "Api"
        ]
        if routes:
            handler_module = str(properties["Handler"]).rsplit(".", 1)[0]
            found.append(ApiFunction(logical_id, PROJECT_ROOT / properties["CodeUri"], handler_module, routes))
    return found
