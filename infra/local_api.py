"""The partner API on Chalice's local server, composed from every API function in template.yaml."""

from __future__ import annotations

import ast
import base64
import functools
import importlib.util
import itertools
import json
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlsplit

from chalice.app import Blueprint, Chalice
from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    LambdaEventConverter,
    LocalDevServer,
    LocalGateway,
    MatchResult,
    RouteMatcher,
)

from billing_core.api.app import partner_api_app
from billing_core.api.openapi import UndeclaredRoute, openapi_document, render
from infra.template import ApiFunction, api_functions

# Routes only the local server answers: served beside the app, never in template.yaml or app.routes.
OPENAPI_PATH = "/openapi.json"
DEVELOPMENT_ROUTES = frozenset({("GET", OPENAPI_PATH)})
_fresh_copies = itertools.count(1)


def _sibling_modules_imported_by(handler_file: Path) -> list[str]:
    """Modules of the function's own folder that its handler imports (``from activate_routes import ...``)."""
    siblings = {path.stem for path in handler_file.parent.glob("*.py")}
    tree = ast.parse(handler_file.read_text())
    return [
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module in siblings and node.level == 0
    ]


def _fresh_module(code_dir: Path, module_name: str) -> ModuleType:
    """A new copy of a module of the function's folder, executed from its file (not from sys.modules)."""
    spec = importlib.util.spec_from_file_location(
        f"{module_name}__local_{next(_fresh_copies)}", code_dir / f"{module_name}.py"
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {module_name} from {code_dir}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def function_blueprints(function: ApiFunction) -> list[Blueprint]:
    """The blueprints a function's handler registers, found without executing the handler module.

    The handler (``app.py``) registers its blueprints into its own Chalice app; Chalice cannot register
    one Blueprint into two apps (the second registration loses the route methods and takes the first
    app's ``current_request``), so locally we load only the blueprint modules the handler imports, from
    its CodeUri as Lambda would, as fresh copies: every composed app has blueprints of its own."""
    code_dir = str(function.code_dir)
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)  # what the blueprint modules import from their own folder
    handler_file = function.code_dir / f"{function.handler_module}.py"
    blueprints: list[Blueprint] = []
    for module_name in _sibling_modules_imported_by(handler_file):
        module = _fresh_module(function.code_dir, module_name)
        blueprints += [value for value in vars(module).values() if isinstance(value, Blueprint)]
    return blueprints


def composed_partner_api(template: dict[str, Any]) -> Chalice:
    """One Chalice app holding every API function's blueprints; fails if the template names a route
    that no blueprint serves, so local and deployed routes cannot drift."""
    functions = api_functions(template)
    blueprints = [blueprint for function in functions for blueprint in function_blueprints(function)]
    app = partner_api_app("msp-billing-local", *blueprints)
    served = {(method, path) for path, entries in app.routes.items() for method in entries}
    declared = {route for function in functions for route in function.routes}
    if declared - served:
        raise RuntimeError(f"routes in template.yaml without a handler: {sorted(declared - served)}")
    if served - declared:
        raise RuntimeError(f"routes served but not declared in template.yaml: {sorted(served - declared)}")
    return app


UNAUTHORIZED_BODY = json.dumps(
    {"error": {"code": "unauthenticated", "message": "a valid partner token is required (Authorization header)"}}
).encode()


def _readable_claims(token: str) -> bool:
    """Whether Chalice's local authorizer can read the token's claims (it decodes, never verifies)."""
    try:
        segment = token.split(".", 2)[1]
        claims = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (IndexError, ValueError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        return False
    return isinstance(claims, dict)


class ApiGatewayRouteMatcher(RouteMatcher):
    """Chalice's route matching, with path parameters URL-decoded as API Gateway passes them to Lambda
    (``/workspaces/ws%5F1`` reaches the view as ``ws_1``; an encoded ``%2F`` stays inside its segment)."""

    def match_route(self, url: str) -> MatchResult:
        matched = super().match_route(url)
        return matched._replace(captured={name: unquote(value) for name, value in matched.captured.items()})


class ApiGatewayLocalGateway(LocalGateway):
    """Chalice's local gateway with API Gateway's path-parameter decoding."""

    def __init__(self, app_object: Chalice, config: Config) -> None:
        super().__init__(app_object, config)
        self.event_converter = LambdaEventConverter(
            ApiGatewayRouteMatcher(list(app_object.routes)), app_object.api.binary_types
        )


class DevelopmentRequestHandler(ChaliceRequestHandler):
    """Chalice's request handler, closer to API Gateway, plus the development routes.

    - ``GET /openapi.json`` answers the OpenAPI document of the served app. It is answered here, beside
      the app, so the app's routes stay exactly the template's.
    - A token whose claims cannot be read is refused with 401, as API Gateway's Cognito authorizer
      does (Chalice's local authorizer would fail on it and drop the connection).
    - Methods no route has (TRACE, QUERY, anything) go to the app, which refuses them with 405, instead
      of http.server's "501 Unsupported method".
    - Path parameters are URL-decoded, as API Gateway does (Chalice's server passes them encoded)."""

    def __init__(
        self,
        request: Any,
        client_address: tuple[str, int],
        server: HTTPServer,
        app_object: Chalice,
        config: Config,
        *,
        openapi_json: Callable[[], bytes],
    ) -> None:
        self._openapi_json = openapi_json
        # ChaliceRequestHandler.__init__ builds its own gateway and then handles the request at once, so
        # the gateway is set here before the request is handled.
        self.local_gateway = ApiGatewayLocalGateway(app_object, config)
        BaseHTTPRequestHandler.__init__(self, request, client_address, server)

    def _handle(self) -> None:
        if self.command == "GET" and urlsplit(self.path).path == OPENAPI_PATH:
            self._send_openapi_json()
            return
        authorization = self.headers.get("Authorization")
        if authorization is not None and not _readable_claims(authorization):
            self._parse_payload()  # read the body, so the connection can carry the next request
            headers = {"Content-Type": "application/json", "WWW-Authenticate": "Bearer"}
            # The body of the template's UNAUTHORIZED gateway response: the documented error shape, no token.
            self._send_http_response(401, headers, UNAUTHORIZED_BODY)
            return
        self._generic_handle()

    def _send_openapi_json(self) -> None:
        try:
            document = self._openapi_json()
        except (UndeclaredRoute, ValueError) as error:  # a route the document cannot describe: say which
            body = json.dumps({"message": f"no OpenAPI document: {error}"}).encode()
            self._send_http_response(500, {"Content-Type": "application/json"}, body)
            return
        self._send_http_response(200, {"Content-Type": "application/json"}, document)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _handle  # noqa: N815 - http.server names

    def __getattr__(self, name: str) -> Any:
        # http.server dispatches a request to ``do_<METHOD>``; only the methods above exist.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)


class LocalApiServer:
    """Chalice's local server for the composed partner API, plus the development routes."""

    def __init__(self, app: Chalice, host: str, port: int) -> None:
        self.host = host
        self.port = port
        # Built on the first request for it (a route without a declaration fails that request, not the server).
        openapi_json = functools.cache(lambda: render(openapi_document(app)).encode())
        handler = functools.partial(DevelopmentRequestHandler, openapi_json=openapi_json)
        self._server = LocalDevServer(app, Config.create(app_name=app.app_name), host, port, handler_cls=handler)
        self._thread = threading.Thread(target=self._server.server.serve_forever, name="local-api", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
