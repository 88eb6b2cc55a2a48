"""The OpenAPI 3.1 document of the partner API, built from the routes and the pydantic models.

How to declare a route
----------------------
Every partner-API route carries an ``@operation(...)`` declaration, placed between Chalice's route
decorator and ``@answers_errors`` in its ``*_routes.py`` module::

    @cancel_api.route("/plan/cancellation", methods=["POST"], authorizer=partner_authorizer)
    @operation(
        "Cancel the monthly billing option at one of the offered end dates",
        request=CancelPlanRequest,                       # the body model (omit for no body)
        responses={201: CancellationView},               # success status -> response model
        errors={409: "the plan is not active, or already cancelled"},
        billing=True,                                    # owner / billing-admin only
        tags=["Cancellation"],                           # one of TAGS: the function that serves it
        description="What happens, step by step ...",    # optional, shown under the summary
    )
    @answers_errors
    def cancel_plan() -> Response: ...

- ``responses``: each success status and the model its body is (``None``: no body). A handler that
  answers ``json_response(list_of_models)`` declares ``items_of(Model)`` (``{"items": [...]}``).
- ``errors``: the route's own error statuses, each with when it happens. The generator adds what every
  route can answer: 401 (no or invalid token), 403 (a role that may not call it; with ``billing=True``
  also every role but owner / billing-admin), 415 (Content-Type not JSON, answered by Chalice), 503 (a
  dependency briefly unavailable: retry), and with a ``request`` model 400 (body not a JSON object) and
  422 (field errors). Errors have the body of ``http.error_response`` (``ErrorResponse``; Chalice's own
  answers such as 415 are rewritten into it by ``api.app``, API Gateway's own 401 / 403 / 4xx / 5xx by the
  ``GatewayResponses`` of template.yaml).
- ``tags``: the function the route belongs to, one of ``TAGS`` (each has a description in the document).
- Examples come from the models: ``json_schema_extra`` examples (``schemas.examples``), checked by the tests.
- ``path_params``: a ``Param`` for each ``{name}`` in the path (a path parameter without one, or one
  the path does not have, is an error). ``query`` and ``headers``: ``Param``s too (e.g. the required
  ``Idempotency-Key`` header of the activation).

``openapi_document(app)`` builds the document from a Chalice app's routes; a route without a
declaration raises ``UndeclaredRoute``. tests/unit/test_openapi.py checks the document against
template.yaml and the blueprints and that docs/openapi.json is current; regenerate that copy with::

    .venv/bin/python -m billing_core.api.openapi > docs/openapi.json

The local server serves the same document at ``GET /openapi.json``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal, TypeVar

from chalice.app import Chalice, RouteEntry
from pydantic import BaseModel, create_model
from pydantic.json_schema import models_json_schema

from billing_core.api.http import ErrorResponse

OPENAPI_VERSION = "3.1.0"
TITLE = "msp-billing partner API"
API_VERSION = "1"
REF_TEMPLATE = "#/components/schemas/{model}"
SECURITY_SCHEME = "partnerToken"
DECLARATION_ATTRIBUTE = "__openapi_operation__"
# Methods in the order the document lists them under one path.
METHOD_ORDER = ("GET", "POST", "PUT", "PATCH", "DELETE")

ViewT = TypeVar("ViewT", bound=Callable[..., Any])
JsonSchema = dict[str, Any]


class UndeclaredRoute(LookupError):
    """A route has no ``@operation`` declaration, so it cannot be documented."""


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter: ``schema`` is its JSON Schema (a string by default)."""

    description: str
    schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "string"})
    required: bool = False


@dataclass(frozen=True)
class Operation:
    summary: str
    responses: Mapping[int, type[BaseModel] | None]
    request: type[BaseModel] | None = None
    errors: Mapping[int, str] = field(default_factory=dict)
    path_params: Mapping[str, Param] = field(default_factory=dict)
    query: Mapping[str, Param] = field(default_factory=dict)
    headers: Mapping[str, Param] = field(default_factory=dict)
    billing: bool = False
    description: str | None = None
    tags: tuple[str, ...] = ()


# The operations' tags, one per Lambda function of the partner API, in document order, with their descriptions.
TAGS: dict[str, str] = {
    "Plan": "The monthly billing option: activate it (the activation fee, the payment method saved) and read its "
    "state, coverage and next charge date (ActivateFunction).",
    "Workspaces": "Workspaces (one per end customer) on or off the plan, their edition and device cap, and the "
    "licence document the protection software fetches (WorkspacesFunction).",
    "Cancellation": "Cancel the plan on an offered end date, or reactivate it before that date (CancelFunction).",
    "Billing history": "Invoices, newest first, and download links of their usage reports and reconciliation "
    "files (PortalFunction).",
    "Subscriptions": "Licence subscriptions bought as orders, and the changes of term and billing frequency an "
    "order may make (SubscriptionsFunction).",
}


def operation(
    summary: str,
    *,
    responses: Mapping[int, type[BaseModel] | None],
    request: type[BaseModel] | None = None,
    errors: Mapping[int, str] | None = None,
    path_params: Mapping[str, Param] | None = None,
    query: Mapping[str, Param] | None = None,
    headers: Mapping[str, Param] | None = None,
    billing: bool = False,
    description: str | None = None,
    tags: Sequence[str] = (),
) -> Callable[[ViewT], ViewT]:
    """Declare what a route takes and answers (see the module docstring)."""
    if not responses or any(not 200 <= status < 300 for status in responses):
        raise ValueError(f"{summary!r}: responses are the success statuses (2xx) and their models")
    if errors and any(not 400 <= status < 600 for status in errors):
        raise ValueError(f"{summary!r}: errors are 4xx / 5xx statuses")
    if unknown := [tag for tag in tags if tag not in TAGS]:
        raise ValueError(f"{summary!r}: unknown tags {unknown}; the tags are {list(TAGS)}")
    declared = Operation(
        summary=summary,
        responses=dict(responses),
        request=request,
        errors=dict(errors or {}),
        path_params=dict(path_params or {}),
        query=dict(query or {}),
        headers=dict(headers or {}),
        billing=billing,
        description=description,
        tags=tuple(tags),
    )

    def declare(view: ViewT) -> ViewT:
        setattr(view, DECLARATION_ATTRIBUTE, declared)
        return view

    return declare


def declaration_of(view: Callable[..., Any]) -> Operation | None:
    found = getattr(view, DECLARATION_ATTRIBUTE, None)
    return found if isinstance(found, Operation) else None


@functools.cache
def items_of(model: type[BaseModel]) -> type[BaseModel]:
    """The model of ``json_response(list_of_models)``: ``{"items": [...]}``."""
    return create_model(f"{model.__name__}List", __base__=BaseModel, items=(list[model], ...))  # type: ignore[valid-type]


# What every route can answer, beyond its own declared errors.
UNAUTHENTICATED = "No partner token, or one the authorizer refuses (the answer never repeats the token)"
TRANSIENT = "A dependency is briefly unavailable (throttling, a timeout): retry later (an activation with the same key)"
BAD_BODY = "The body is not a JSON object"
FIELD_ERRORS = "A field breaks a rule; `error.fields` names each"
FORBIDDEN_ANY = "The token's role is not one of the partner roles"
FORBIDDEN_BILLING = "Only the owner and billing-admin roles may call this"

SECURITY_DESCRIPTION = (
    "The Cognito user pool's ID token in the Authorization header (with or without the `Bearer` prefix). "
    "API Gateway's Cognito authorizer verifies it; the claims `custom:partner_id` and `custom:role` say "
    "who calls. Locally: `msp-billing dev-token --partner ID --role owner`."
)
UNSUPPORTED_MEDIA_TYPE = "The request's Content-Type is not application/json (code `unsupported_media_type`)"


def _error_statuses(declared: Operation) -> dict[int, str]:
    statuses = {
        401: UNAUTHENTICATED,
        403: FORBIDDEN_BILLING if declared.billing else FORBIDDEN_ANY,
        415: UNSUPPORTED_MEDIA_TYPE,
        503: TRANSIENT,
    }
    if declared.request is not None:
        statuses[400] = BAD_BODY
        statuses[422] = FIELD_ERRORS
    for status, when in declared.errors.items():
        statuses[status] = f"{statuses[status]}; or: {when}" if status in statuses else when[:1].upper() + when[1:]
    return dict(sorted(statuses.items()))


def _parameter(name: str, location: Literal["path", "query", "header"], param: Param) -> dict[str, Any]:
    return {
        "name": name,
        "in": location,
        "required": True if location == "path" else param.required,
        "description": param.description,
        "schema": dict(param.schema),
    }


PATH_PARAMETER = re.compile(r"{([^}]+)}")


def _path_parameters(path: str, declared: Operation) -> list[dict[str, Any]]:
    in_path = PATH_PARAMETER.findall(path)
    if set(in_path) != set(declared.path_params):
        raise ValueError(
            f"{path}: path parameters {sorted(in_path)} but declared {sorted(declared.path_params)}; "
            "declare a Param for each {name} in the path"
        )
    return [_parameter(name, "path", declared.path_params[name]) for name in in_path]


def _json_content(schema: JsonSchema) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


class _Schemas:
    """Collects the pydantic models the operations use and emits one set of components."""

    def __init__(self) -> None:
        self._models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = []

    def use(self, model: type[BaseModel], mode: Literal["validation", "serialization"]) -> JsonSchema:
        """A placeholder for the model's ``$ref``, filled in by ``_fill`` once every model is known."""
        if (model, mode) not in self._models:
            self._models.append((model, mode))
        return {"$model": (model, mode)}

    def resolve(self) -> tuple[dict[tuple[Any, str], JsonSchema], dict[str, JsonSchema]]:
        """Each model's ``$ref`` and every schema, with pydantic's ``$defs`` as the components."""
        refs, definitions = models_json_schema(self._models, ref_template=REF_TEMPLATE)
        components: dict[str, JsonSchema] = definitions.get("$defs", {})
        resolved: dict[tuple[Any, str], JsonSchema] = {(model, mode): schema for (model, mode), schema in refs.items()}
        return resolved, components


def _fill(value: Any, refs: Mapping[tuple[Any, str], JsonSchema]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$model"}:
            return refs[value["$model"]]
        return {key: _fill(item, refs) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, refs) for item in value]
    return value


def _operation_object(route: RouteEntry, declared: Operation, schemas: _Schemas) -> dict[str, Any]:
    parameters = _path_parameters(route.uri_pattern, declared)
    parameters += [_parameter(name, "query", param) for name, param in declared.query.items()]
    parameters += [_parameter(name, "header", param) for name, param in declared.headers.items()]
    result: dict[str, Any] = {"operationId": route.view_name, "summary": declared.summary}
    if declared.tags:
        result["tags"] = list(declared.tags)
    if declared.description:
        result["description"] = declared.description
    if parameters:
        result["parameters"] = parameters
    if declared.request is not None:
        result["requestBody"] = {
            "required": True,
            "content": _json_content(schemas.use(declared.request, "validation")),
        }
    responses: dict[str, Any] = {}
    for status, model in sorted(declared.responses.items()):
        answer: dict[str, Any] = {"description": HTTPStatus(status).phrase}
        if model is not None:
            answer["content"] = _json_content(schemas.use(model, "serialization"))
        responses[str(status)] = answer
    error_schema = schemas.use(ErrorResponse, "serialization")
    for status, when in _error_statuses(declared).items():
        schema: JsonSchema = error_schema
        answer = {"description": when}
        if status == 401:
            answer["headers"] = {
                "WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}, "required": False}
            }
        answer["content"] = _json_content(schema)
        responses[str(status)] = answer
    result["responses"] = responses
    if route.authorizer is not None:
        result["security"] = [{SECURITY_SCHEME: []}]
    return result


def _method_rank(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def documented_routes(app: Chalice) -> Iterable[tuple[RouteEntry, Operation]]:
    """Every route of ``app`` with its declaration, in document order; ``UndeclaredRoute`` if one has none."""
    undeclared = []
    for path in sorted(app.routes):
        for method in sorted(app.routes[path], key=_method_rank):
            route = app.routes[path][method]
            declared = declaration_of(route.view_function)
            if declared is None:
                undeclared.append(f"{method} {path}")
                continue
            yield route, declared
    if undeclared:
        raise UndeclaredRoute(
            f"routes without an @operation declaration (billing_core.api.openapi): {', '.join(undeclared)}"
        )


def openapi_document(app: Chalice) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of ``app`` (pure: reads the routes and models only)."""
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route, declared in list(documented_routes(app)):
        paths.setdefault(route.uri_pattern, {})[route.method.lower()] = _operation_object(route, declared, schemas)
    refs, definitions = schemas.resolve()
    used_tags = {
        tag for item in paths.values() for operation_object in item.values() for tag in operation_object.get("tags", [])
    }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": TITLE,
            "version": API_VERSION,
            "description": (
                "The partner API of msp-billing: activate or cancel the monthly billing option, put workspaces on the "
                "plan, read licence documents and the billing history, buy licence subscriptions and change them. "
                "Money is integer minor units plus an ISO-4217 code; timestamps are ISO-8601 UTC. Every error "
                "answer, API Gateway's own included, is `ErrorResponse`: "
                '`{"error": {"code", "message", "fields"}}`. Generated from the routes and the pydantic '
                "models (billing_core.api.openapi)."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [{"name": tag, "description": description} for tag, description in TAGS.items() if tag in used_tags],
        "paths": _fill(paths, refs),
        "components": {
            "schemas": dict(sorted(definitions.items())),
            "securitySchemes": {
                SECURITY_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": SECURITY_DESCRIPTION,
                }
            },
        },
    }


def render(document: Mapping[str, Any]) -> str:
    """The document as the committed docs/openapi.json spells it."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main() -> None:  # pragma: no cover - tests/unit/test_openapi.py checks its output (docs/openapi.json)
    # Development only (never runs in Lambda): the routes come from template.yaml through the local
    # composition, which lives in the repository's infra package. The routes declare themselves with
    # billing_core.api.openapi, not with this file run as __main__, so use that module's functions.
    from billing_core.api import openapi
    from infra.local_api import composed_partner_api
    from infra.template import load_template

    print(openapi.render(openapi.openapi_document(composed_partner_api(load_template()))), end="")


if __name__ == "__main__":
    main()
