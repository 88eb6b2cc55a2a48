"""The OpenAPI document cannot drift from the routes: it documents exactly the routes of template.yaml and
of the blueprints, each declared, it is valid OpenAPI 3.1, and docs/openapi.json is its current copy."""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from chalice.app import Chalice, Response
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator
from pydantic import BaseModel
from schemathesis.core.result import Err, Ok

from billing_core.api.http import ErrorResponse, error_response
from billing_core.api.openapi import Param, UndeclaredRoute, openapi_document, operation, render
from billing_core.domain.errors import FieldProblem, InvalidRequest, NotFound, PaymentDeclined
from infra import PROJECT_ROOT
from infra.local_api import DEVELOPMENT_ROUTES, composed_partner_api
from infra.template import api_functions, load_template

COMMITTED_COPY = PROJECT_ROOT / "docs" / "openapi.json"
METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def app(template: dict[str, Any]) -> Chalice:
    return composed_partner_api(template)


@pytest.fixture(scope="module")
def document(app: Chalice) -> dict[str, Any]:
    return openapi_document(app)


def documented(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item if method in METHODS}


def test_document_has_exactly_the_template_and_blueprint_routes(
    template: dict[str, Any], app: Chalice, document: dict[str, Any]
) -> None:
    in_template = {route for function in api_functions(template) for route in function.routes}
    on_blueprints = {(method, path) for path, entries in app.routes.items() for method in entries}
    assert documented(document) == in_template == on_blueprints
    assert ("POST", "/plan/activation") in in_template


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)
    # schemathesis validates the schema again when loading it, and must understand every operation.
    operations = list(schemathesis.openapi.from_dict(document).get_all_operations())
    assert len(operations) == len(documented(document))
    assert all(isinstance(result, Ok) for result in operations), [
        result.err() for result in operations if isinstance(result, Err)
    ]


def test_committed_copy_is_current(document: dict[str, Any]) -> None:
    assert COMMITTED_COPY.exists(), "generate it: .venv/bin/python -m billing_core.api.openapi > docs/openapi.json"
    assert COMMITTED_COPY.read_text() == render(document), (
        "docs/openapi.json is stale; regenerate it: .venv/bin/python -m billing_core.api.openapi > docs/openapi.json"
    )


def test_every_operation_is_authenticated_and_documents_its_errors(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["partnerToken"]["scheme"] == "bearer"
    for path, item in document["paths"].items():
        for method, operation_object in item.items():
            label = f"{method.upper()} {path}"
            assert operation_object["security"] == [{"partnerToken": []}], label
            statuses = set(operation_object["responses"])
            assert {"401", "403", "503"} <= statuses, label
            if "requestBody" in operation_object:
                assert {"400", "422"} <= statuses, label
            for name in ("{workspace_id}", "{month}"):
                if name in path:
                    assert "404" in statuses, label
    activation = document["paths"]["/plan/activation"]["post"]
    assert {key: value for key, value in activation["parameters"][0].items() if key in ("name", "in", "required")} == {
        "name": "Idempotency-Key",
        "in": "header",
        "required": True,
    }
    assert {"201", "400", "402", "409", "422"} <= set(activation["responses"])


def test_components_hold_every_referenced_model(document: dict[str, Any]) -> None:
    text = json.dumps(document)
    referenced = {part.split('"')[0] for part in text.split('"$ref": "#/components/schemas/')[1:]}
    assert referenced <= set(document["components"]["schemas"])
    assert "$defs" not in text
    assert {"ActivatePlanRequest", "ActivationOutcome", "WorkspaceViewList", "ErrorResponse"} <= referenced


@pytest.mark.parametrize(
    "error",
    [
        NotFound("no such workspace"),
        InvalidRequest([FieldProblem("max_devices", "too big"), FieldProblem("edition", "unknown")]),
        PaymentDeclined("declined", decline_code="card_declined"),
    ],
)
def test_error_bodies_match_the_documented_model(error: Exception) -> None:
    assert isinstance(error, NotFound | InvalidRequest | PaymentDeclined)
    body = error_response(error).body
    assert ErrorResponse.model_validate(body).model_dump(mode="json", exclude_none=True) == body


def test_a_route_without_a_declaration_fails() -> None:
    app = Chalice(app_name="undeclared")

    @app.route("/things", methods=["GET"])
    def things() -> Response:
        return Response(body={})

    with pytest.raises(UndeclaredRoute, match="GET /things"):
        openapi_document(app)


def test_path_parameters_must_match_the_declaration() -> None:
    class Thing(BaseModel):
        name: str

    app = Chalice(app_name="path-params")

    @app.route("/things/{thing_id}", methods=["GET"])
    @operation("one thing", responses={200: Thing}, path_params={"other": Param("not in the path")})
    def thing(thing_id: str) -> Response:
        return Response(body={"name": thing_id})

    with pytest.raises(ValueError, match="thing_id"):
        openapi_document(app)


def test_development_routes_stay_out_of_the_app_and_the_template(template: dict[str, Any]) -> None:
    # GET /openapi.json is answered by the local server's request handler, beside the app: a second
    # composition (as the local server makes) still serves exactly the template's routes.
    again = composed_partner_api(template)
    served = {(method, path) for path, entries in again.routes.items() for method in entries}
    in_template = {route for function in api_functions(template) for route in function.routes}
    assert served == in_template
    assert not DEVELOPMENT_ROUTES & (served | in_template)
    assert render(openapi_document(again)) == render(openapi_document(composed_partner_api(template)))


def _operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{method.upper()} {path}", operation_object)
        for path, item in document["paths"].items()
        for method, operation_object in item.items()
        if method in METHODS
    ]


def test_each_function_is_a_tag_with_a_description(template: dict[str, Any], document: dict[str, Any]) -> None:
    tag_of = {}
    for label, operation_object in _operations(document):
        assert len(operation_object.get("tags", [])) == 1, label
        tag_of[label] = operation_object["tags"][0]
    tags_by_function = {
        function.logical_id: {tag_of[f"{method} {path}"] for method, path in function.routes}
        for function in api_functions(template)
    }
    assert all(len(tags) == 1 for tags in tags_by_function.values()), tags_by_function
    assert len({next(iter(tags)) for tags in tags_by_function.values()}) == len(tags_by_function)  # one per function
    described = {tag["name"]: tag["description"] for tag in document["tags"]}
    assert set(described) == set(tag_of.values()) and all(described.values())


def test_every_operation_has_a_description(document: dict[str, Any]) -> None:
    for label, operation_object in _operations(document):
        assert len(operation_object.get("description", "")) > len(operation_object["summary"]) // 2, label


def _schema_name(schema: dict[str, Any]) -> str:
    return str(schema["$ref"]).rsplit("/", 1)[-1]


def test_every_request_body_and_success_answer_has_examples(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]

    def has_examples(schema: dict[str, Any]) -> bool:
        component = schemas[_schema_name(schema)]
        if "examples" in component:
            return True
        items = component.get("properties", {}).get("items", {}).get("items")  # items_of(Model): {"items": [...]}
        return items is not None and "examples" in schemas[_schema_name(items)]

    for label, operation_object in _operations(document):
        if "requestBody" in operation_object:
            assert has_examples(operation_object["requestBody"]["content"]["application/json"]["schema"]), label
        for status, answer in operation_object["responses"].items():
            if status.startswith("2") and "content" in answer:
                assert has_examples(answer["content"]["application/json"]["schema"]), f"{label} {status}"
    assert "examples" in schemas["ErrorResponse"]


def test_every_example_is_valid_for_its_model(document: dict[str, Any]) -> None:
    from billing_core import schemas, subscription_schemas
    from billing_core.api import http

    models = {
        name: model
        for module in (schemas, subscription_schemas, http)
        for name, model in vars(module).items()
        if isinstance(model, type) and issubclass(model, BaseModel)
    }
    checked = 0
    for name, component in document["components"]["schemas"].items():
        for example in component.get("examples", []):
            # JSON mode, as the API reads bodies: dates are strings, strict fields take their JSON form.
            models[name].model_validate_json(json.dumps(example))
            checked += 1
    assert checked >= 20


def test_errors_are_documented_in_one_shape_api_gateway_included(document: dict[str, Any]) -> None:
    assert "ApiGatewayMessage" not in document["components"]["schemas"]
    for label, operation_object in _operations(document):
        for status, answer in operation_object["responses"].items():
            if status.startswith(("4", "5")):
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, f"{label} {status}"
